"""The spark-submit application: ``spark-submit .../engine/spark/submit.py realtime SRC DEST [options]``.

The arguments are the command line's (``capture-engine realtime|batch|merge ...``) with ``--executor spark``
implied; the session is the one spark-submit started (its master, archives and settings). SageMaker's
``PySparkProcessor(...).run(submit_app=<this file>, arguments=[...])`` runs it as is; its path is
``python -c "import engine.spark.submit as m; print(m.__file__)"``.
"""

from __future__ import annotations

import sys

from engine.spark.cli import submit_main

__all__: list[str] = []

if __name__ == "__main__":
    sys.exit(submit_main())
