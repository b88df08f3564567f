"""`python -m engine`: the processing-container entrypoint."""

import signal
import sys

from engine.cli import main

code = main()
# The work is done (and reported): a signal during the interpreter's shutdown, when Python puts the
# default handlers back, must not turn a finished run's exit code into "killed by SIGTERM". Ignoring
# (not blocking: any thread may receive it) keeps the code.
signal.signal(signal.SIGTERM, signal.SIG_IGN)
signal.signal(signal.SIGINT, signal.SIG_IGN)
sys.exit(code)
