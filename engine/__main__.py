"""`python -m engine`: the processing-container entrypoint."""

import sys

from engine.cli import main

sys.exit(main())
