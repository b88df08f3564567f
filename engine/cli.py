"""The command line (also `python -m engine`, the processing-container entrypoint).

Only this module configures logging. Expected failures print one line and exit non-zero;
`--debug` shows the traceback.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Callable, Sequence
from types import FrameType
from typing import Any, NoReturn

from engine import arguments, interrupts
from engine._runtime import tune_memory
from engine._version import __version__
from engine.container.command import add_command as add_container_command
from engine.container.command import container_argv
from engine.emulate.command import add_commands as add_emulate_commands
from engine.environment import environment_values
from engine.errors import EngineError, OptionsError
from engine.html.command import add_commands as add_report_commands
from engine.io.storage import redact, register_secrets, translate_errors
from engine.jobs.realtime import run_realtime
from engine.kernels.payload import load_column_spec
from engine.monitor.command import add_commands as add_monitor_commands
from engine.options import JobOptions, MergeOptions, RealtimeOptions, check_location
from engine.progress import Progress, configure_logging
from engine.report import RunReport
from engine.spark.cli import add_arguments as add_spark_arguments
from engine.spark.cli import run as run_on_spark

__all__ = ["main"]

logger = logging.getLogger("engine.cli")

# Handlers of the monitoring commands, registered with their parsers (engine.monitor.command).
_MONITOR: dict[str, Callable[[argparse.Namespace], int]] = {}


class _Parser(argparse.ArgumentParser):
    """Usage errors in one line, as every other expected failure; the usage itself only with --help."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--log-level",
        type=str.upper,
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
        default=None,
        help="DEBUG, INFO, WARNING (default) or ERROR",
    )
    p.add_argument("--log-format", choices=("text", "json"), default="text", help="log lines as text or JSON")
    p.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress and no summary")


def _add_job(p: argparse.ArgumentParser) -> None:
    """The options every job shares (`JobOptions`)."""
    p.add_argument("--start", type=arguments.time, help="window start, ISO-8601 UTC (inclusive), e.g. 2026-11-01T13")
    p.add_argument("--end", type=arguments.time, help="window end, ISO-8601 UTC (exclusive)")
    p.add_argument("--max-reject-ratio", type=arguments.ratio, help="fail above this share (default 0.01)")
    p.add_argument("--require-data", action="store_true", help="an empty window is an error")
    p.add_argument("--workers", type=arguments.positive_int, help="decode threads (default: number of cores)")
    p.add_argument("--fetch-concurrency", type=arguments.positive_int, help="objects fetched at once (default 32)")
    p.add_argument("--unit-size", type=arguments.size, help="bytes decoded per unit (default 8MiB)")
    p.add_argument("--max-line-bytes", type=arguments.size, help="longer lines are rejected (default 32MiB)")
    p.add_argument("--compression", help="Parquet codec: zstd (default), snappy, lz4, none")
    p.add_argument(
        "--decode", action="store_true", help="decode payloads into typed columns, one row per payload record"
    )
    p.add_argument("--columns", metavar="SPEC", help="column spec file (names and types; implies --decode)")
    p.add_argument(
        "--storage-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="fsspec storage option, repeatable (e.g. endpoint_url=http://..., anon=true)",
    )
    p.add_argument("--kms-key-id", help="encrypt written S3 objects with this KMS key (SSE-KMS)")
    p.add_argument(
        "--progress-interval",
        type=arguments.interval,
        default=30.0,
        metavar="SECONDS",
        help="without a terminal, a progress log line at most this often (default 30)",
    )
    _add_common(p)


def _job_options(args: argparse.Namespace) -> dict[str, Any]:
    """`JobOptions` keyword arguments of the flags given (`_add_job`); the rest come from the environment
    (``CAPTURE_ENGINE_<FIELD>``, see `engine.environment`) or the defaults, by `JobOptions.from_env`."""
    flags: dict[str, Any] = {
        "start": args.start,
        "end": args.end,
        "max_reject_ratio": args.max_reject_ratio,
        "fetch_concurrency": args.fetch_concurrency,
        "unit_bytes": args.unit_size,
        "max_line_bytes": args.max_line_bytes,
        "compression": args.compression,
        "kms_key_id": args.kms_key_id,
        "workers": args.workers,
    }
    opts = {k: v for k, v in flags.items() if v is not None}
    if args.require_data:
        opts["require_data"] = True
    if args.storage_option or args.columns:  # flags win key by key over CAPTURE_ENGINE_STORAGE_OPTIONS
        storage = {
            **environment_values(JobOptions).get("storage_options", {}),
            **arguments.storage_options(args.storage_option),
        }
        if args.storage_option:
            opts["storage_options"] = storage
        if args.columns:
            opts["columns"] = load_column_spec(args.columns, storage)
    if args.decode or args.columns:
        opts["decode"] = True
    return opts


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="capture-engine",
        description="Decode Amazon SageMaker data capture into hour-partitioned Parquet.",
    )
    parser.add_argument("--version", action="version", version=f"capture-engine {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    rt = sub.add_parser("realtime", help="real-time endpoint capture -> hive-partitioned Parquet")
    rt.add_argument("source", help="capture root, any level of it, or one object (path or URL: s3://, file://)")
    rt.add_argument("dest", help="output dataset root (path or URL)")
    _add_job(rt)
    add_spark_arguments(rt)

    bt = sub.add_parser("batch", help="batch transform capture (manifests + .out files) -> hour-partitioned Parquet")
    bt.add_argument("source", help="batch data-capture destination (input/ and output/ manifests) or one manifest")
    bt.add_argument("dest", help="output dataset root (path or URL)")
    bt.add_argument(
        "--prefix-map",
        action="append",
        default=[],
        metavar="FROM=TO",
        help="rewrite manifest prefixes before reading, repeatable (e.g. s3://bucket/out/=/opt/ml/processing/out/)",
    )
    _add_job(bt)
    add_spark_arguments(bt)

    me = sub.add_parser("merge", help="predictions + ground-truth labels -> hour-partitioned Parquet")
    src = me.add_mutually_exclusive_group(required=True)
    src.add_argument("--captures", metavar="SRC", help="real-time capture (as for realtime; with --decode per record)")
    src.add_argument("--batch", metavar="SRC", help="batch transform data capture (as for batch)")
    src.add_argument("--predictions", metavar="DATASET", help="a dataset written by realtime or batch")
    me.add_argument("--ground-truth", required=True, metavar="SRC", help="ground-truth root (holding yyyy/mm/dd/hh)")
    me.add_argument("dest", help="output dataset root (path or URL)")
    me.add_argument(
        "--label-delay",
        type=arguments.duration,
        default="24h",
        metavar="DURATION",
        help="labels are looked for until this long after --end (default 24h; e.g. 90m, 2d)",
    )
    me.add_argument(
        "--label-lead",
        type=arguments.duration,
        default="1h",
        metavar="DURATION",
        help="labels are looked for from this long before --start (default 1h: uploads land in hour H-1 too)",
    )
    me.add_argument("--how", choices=("inner", "left"), default="inner", help="left keeps unlabelled predictions")
    me.add_argument(
        "--prefix-map",
        action="append",
        default=[],
        metavar="FROM=TO",
        help="--batch: rewrite manifest prefixes before reading, repeatable (as for batch)",
    )
    me.add_argument(
        "--format",
        choices=("parquet", "sagemaker"),
        default="parquet",
        help="sagemaker also writes SageMaker's merged JSON Lines under DEST/_sagemaker/merge/ (raw predictions only)",
    )
    me.add_argument(
        "--schedule-name", metavar="NAME", help="batch: folder between merge/ and the hour, as SageMaker's schedule"
    )
    me.add_argument(
        "--join-memory",
        type=arguments.size,
        default=256 * 2**20,
        metavar="SIZE",
        help="labels beyond this (as JSON Lines) are joined in buckets spilled to local disk (default 256MiB)",
    )
    _add_job(me)
    add_spark_arguments(me)

    sy = sub.add_parser("synth", help="write a seeded sample capture tree with ground-truth labels")
    sy.add_argument("dest", help="where to write (capture/ and ground-truth/ go below it)")
    sy.add_argument("--records", type=arguments.positive_int, default=20_000, help="capture events (default 20000)")
    sy.add_argument("--size", type=arguments.size, help="instead of --records: about this many bytes of capture (1GB)")
    sy.add_argument("--hours", type=arguments.positive_int, default=3)
    sy.add_argument("--endpoints", type=arguments.positive_int, default=2)
    sy.add_argument("--variants", type=arguments.positive_int, default=2)
    sy.add_argument("--seed", type=int, default=0)
    sy.add_argument("--start", type=arguments.time, help="first hour (default 2026-11-01T00)")
    sy.add_argument("--storage-option", action="append", default=[], metavar="KEY=VALUE")
    sy.add_argument("--overwrite", action="store_true", help="write into DEST even if it is not empty")
    _add_common(sy)

    de = sub.add_parser("demo", help="synth -> realtime -> realtime --decode -> merge on local disk, with summaries")
    de.add_argument("dir", nargs="?", default="demo-output", help="working directory (default demo-output)")
    _add_common(de)
    _MONITOR.update(add_monitor_commands(sub, _add_common))
    _MONITOR.update(add_emulate_commands(sub, _add_common))
    _MONITOR.update(add_report_commands(sub, _add_common))
    _MONITOR.update(add_container_command(sub, _add_common))
    return parser


def _progress(args: argparse.Namespace) -> Progress:
    return Progress(tty=sys.stderr.isatty(), interval=args.progress_interval, enabled=not args.quiet)


def _print_report(args: argparse.Namespace, report: RunReport) -> None:
    if args.quiet:
        return
    # Machines get the run report itself, one JSON line; people the summary table.
    print(report.to_json_line() if args.log_format == "json" else report.summary())


def _run_job(args: argparse.Namespace, options: Any, local: Callable[..., RunReport]) -> int:
    """Run a dataset job on the chosen executor (this process, or Spark) and print its report."""
    progress = _progress(args)
    try:
        if args.executor == "spark":
            report = run_on_spark(args, options)
        else:
            report = local(args.source, args.dest, options=options, progress=progress)
    finally:
        progress.done()
    _print_report(args, report)
    return 0


def _cmd_realtime(args: argparse.Namespace) -> int:
    return _run_job(args, RealtimeOptions.from_env(**_job_options(args)), run_realtime)


def _prefix_map(pairs: Sequence[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in pairs:
        src, sep, dst = pair.partition("=")
        if not sep or not src or not dst:
            raise OptionsError(f"--prefix-map takes FROM=TO, got {pair!r}")
        out[src] = dst
    return out


def _cmd_batch(args: argparse.Namespace) -> int:
    from engine.jobs.batch import BatchOptions, run_batch

    options = BatchOptions.from_env(**_job_options(args), prefix_map=_prefix_map(args.prefix_map))
    return _run_job(args, options, run_batch)


def _cmd_merge(args: argparse.Namespace) -> int:
    from engine.jobs.merge import run_merge

    tune_memory("merge")
    options = MergeOptions.from_env(
        **_job_options(args),
        label_delay=args.label_delay,
        label_lead=args.label_lead,
        how=args.how,
        sagemaker_format=args.format == "sagemaker",
        schedule_name=args.schedule_name,
        join_memory=args.join_memory,
        prefix_map=_prefix_map(args.prefix_map),
    )
    if args.executor == "spark":
        _print_report(args, run_on_spark(args, options))
        return 0
    progress = _progress(args)
    try:
        report = run_merge(
            captures=args.captures,
            batch=args.batch,
            predictions=args.predictions,
            ground_truth=args.ground_truth,
            dest=args.dest,
            options=options,
            progress=progress,
        )
    finally:
        progress.done()
    _print_report(args, report)
    return 0


def _cmd_synth(args: argparse.Namespace) -> int:
    from engine.synth import SynthOptions, refuse_non_empty, synth

    kwargs: dict[str, Any] = {
        "records": args.records,
        "target_bytes": args.size,
        "hours": args.hours,
        "endpoints": args.endpoints,
        "variants": args.variants,
        "seed": args.seed,
    }
    if args.start is not None:
        kwargs["start"] = args.start.replace(minute=0, second=0, microsecond=0)
    storage_options = arguments.storage_options(args.storage_option)
    if not args.overwrite:
        refuse_non_empty(args.dest, storage_options)
    with translate_errors(args.dest, sink=True):  # access denied, bad storage options: one line
        summary = synth(args.dest, SynthOptions(**kwargs), storage_options=storage_options)
    if not args.quiet:
        print(
            f"wrote {summary.events:,} capture events ({summary.capture_bytes / 1e6:,.1f} MB) in "
            f"{summary.files:,} objects under {summary.capture_root}\n"
            f"wrote {summary.labels:,} ground-truth labels in {summary.label_files:,} objects under "
            f"{summary.ground_truth_root}"
        )
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from engine.demo import run_demo

    return run_demo(args.dir, quiet=args.quiet)


def _on_signal(signum: int, frame: FrameType | None) -> None:
    # Only a flag: an exception raised here would land inside whatever library call the main thread is
    # in, where a bare `except:` may swallow it mid-commit. The job stops at its next safe point.
    interrupts.request(signum)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `capture-engine` and `python -m engine`; returns the exit code."""
    tune_memory()
    parser = _parser()
    # No arguments inside a Model Monitor job (its environment is set): the container job (engine.container).
    argv = container_argv(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    register_secrets()  # the AWS environment's credentials, before anything can log them
    # The demo's sample data holds failures on purpose (its summaries count them): no warnings by default.
    default_level = "ERROR" if args.command == "demo" else "WARNING"
    configure_logging("DEBUG" if args.debug else (args.log_level or default_level), args.log_format)
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    handlers = {
        "realtime": _cmd_realtime,
        "batch": _cmd_batch,
        "merge": _cmd_merge,
        "synth": _cmd_synth,
        "demo": _cmd_demo,
        **_MONITOR,
    }
    try:
        for name in ("source", "dest", "captures", "batch", "predictions", "ground_truth"):
            if name in args and (name in ("source", "dest") or getattr(args, name) is not None):
                check_location(name.replace("_", "-"), getattr(args, name))
        interrupts.check()  # a signal that came while the program was starting
        code: int = handlers[args.command](args)
        if interrupts.pending() is not None:
            # The signal came during the commit's last steps, which were completed rather than left half-done.
            print(
                f"capture-engine: interrupted after the run committed: {getattr(args, 'dest', '')} holds this run's "
                "data (its _SUCCESS and _manifest.json describe it)",
                file=sys.stderr,
            )
            return 130
        return code
    except EngineError as exc:
        if args.debug:
            logger.exception("failed")
        print(f"capture-engine: error: {redact(str(exc))}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(
            "capture-engine: interrupted; nothing was committed (the destination keeps its previous commit)",
            file=sys.stderr,
        )
        return 130
    except Exception as exc:  # a bug, not an expected failure: still one line unless --debug
        if args.debug:
            logger.exception("internal error")  # the traceback, through the redacting handler
            return 70
        print(
            f"capture-engine: internal error: {type(exc).__name__}: {redact(str(exc))} (rerun with --debug)",
            file=sys.stderr,
        )
        return 70


if __name__ == "__main__":
    sys.exit(main())
