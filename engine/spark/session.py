"""A SparkSession for the command line and the spark-submit module: the settings mapInArrow needs, quiet logs.

Under ``spark-submit`` (SageMaker's ``smspark-submit``, EMR steps, Glue) the session already exists with
the cluster's settings and is taken as it is. Started here (``--executor spark`` from a shell), it gets
`master`, this interpreter for the Python workers (so they import the same engine) and, for ``local[N]``,
Spark's cluster default of 4 attempts per task (plain ``local[N]`` never retries a failed task).
"""

from __future__ import annotations

import logging
import os
import re
import sys
from typing import Any

__all__ = ["get_session", "local_master"]

logger = logging.getLogger(__name__)

_LOCAL = re.compile(r"local\[(\d+|\*)\]")
TASK_ATTEMPTS = 4  # spark.task.maxFailures' default on a cluster


def local_master(master: str) -> str:
    """``local[N]`` as ``local[N,4]``: local mode with the retries a cluster has; any other master unchanged."""
    m = _LOCAL.fullmatch(master.strip())
    return f"local[{m.group(1)},{TASK_ATTEMPTS}]" if m else master


def get_session(
    master: str | None = None, *, app_name: str = "capture-engine", conf: dict[str, str] | None = None
) -> Any:
    """The active SparkSession, or a new one on `master` (default: ``local[*]`` unless spark-submit set one).

    Raises:
        OptionsError: pyspark is not installed (``pip install 'capture-engine[spark]'``).
    """
    from engine.errors import OptionsError

    try:
        from pyspark.sql import SparkSession
    except ImportError:
        raise OptionsError(
            "--executor spark needs pyspark: pip install 'capture-engine[spark]' (and Java 17)"
        ) from None
    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    # Python workers run this interpreter, where the engine is installed (a cluster ships it as an archive).
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = SparkSession.builder.appName(app_name)
    # Under spark-submit the JVM is up already (it passed its gateway's port) with the master it was given.
    if master or "PYSPARK_GATEWAY_PORT" not in os.environ:
        builder = builder.master(local_master(master or "local[*]"))
    settings = {
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        # The result rows are tiny, and tasks rarely share an executor's Python worker: reuse it anyway.
        "spark.python.worker.reuse": "true",
        **(conf or {}),
    }
    for key, value in settings.items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("ERROR")
    return session
