"""``--executor spark`` for the realtime, batch and merge commands, and the spark-submit entry (`submit_main`).

`engine.cli` declares the two options through `add_arguments` and hands a parsed command to `run` when
``--executor spark`` is given; everything else (options, errors, exit codes, the summary) stays the CLI's.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Sequence
from typing import Any

from engine.spark._kernels import RunReport, parse_size

__all__ = ["add_arguments", "run", "submit_main"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--executor",
        choices=("local", "spark"),
        default="local",
        help="local: threads of this process (default); spark: tasks on a Spark cluster (pip install .[spark])",
    )
    p.add_argument(
        "--spark-master",
        metavar="URL",
        help="with --executor spark: the master when no session exists (default local[*]; under spark-submit, its)",
    )
    p.add_argument(
        "--task-size",
        type=_size,
        default=None,
        metavar="SIZE",
        help="with --executor spark: input bytes per Spark task (default 128MiB)",
    )


def _size(text: str) -> int:
    return parse_size(text)


def run(args: argparse.Namespace, options: Any) -> RunReport:
    """Run the parsed `realtime`, `batch` or `merge` command on Spark."""
    from engine.errors import OptionsError
    from engine.spark import SparkOptions, get_session, run_batch, run_merge, run_realtime

    spark = get_session(args.spark_master)
    spark_options = SparkOptions(task_bytes=args.task_size) if args.task_size else SparkOptions()
    if args.command == "realtime":
        return run_realtime(spark, args.source, args.dest, options=options, spark_options=spark_options)
    if args.command == "batch":
        return run_batch(spark, args.source, args.dest, options=options, spark_options=spark_options)
    if args.command == "merge":
        return run_merge(
            spark,
            captures=args.captures,
            batch=args.batch,
            predictions=args.predictions,
            ground_truth=args.ground_truth,
            dest=args.dest,
            options=options,
            spark_options=spark_options,
        )
    raise OptionsError(f"--executor spark does not run {args.command}")


def submit_main(argv: Sequence[str] | None = None) -> int:
    """``spark-submit engine/spark/submit.py realtime SRC DEST ...``: the CLI with ``--executor spark``.

    On AWS Glue the command line is the value of ``--job-args`` (Glue passes only ``--key value`` pairs).
    """
    from engine.cli import main

    argv = list(sys.argv[1:] if argv is None else argv)
    if "--job-args" in argv:
        # AWS Glue passes a script only --key value pairs (and its own, such as --JOB_NAME): the command is one.
        argv = shlex.split(argv[argv.index("--job-args") + 1])
    if argv and argv[0] in ("realtime", "batch", "merge") and "--executor" not in argv:
        argv[1:1] = ["--executor", "spark"]
    return main(argv)
