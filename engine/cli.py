"""The command line (also `python -m engine`, the processing-container entrypoint).

Only this module configures logging. Expected failures print one line and exit non-zero;
`--debug` shows the traceback.
"""

from __future__ import annotations

import argparse
import ctypes
import logging
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from engine import interrupts
from engine._version import __version__
from engine.errors import EngineError, OptionsError
from engine.options import MergeOptions, RealtimeOptions, parse_duration, parse_size, parse_time
from engine.payload import load_column_spec
from engine.realtime import run_realtime
from engine.report import RunReport
from engine.storage import RedactingFilter, redact, register_secrets, translate_errors

__all__ = ["main"]

logger = logging.getLogger("engine.cli")

_M_MMAP_THRESHOLD = -3  # mallopt parameter number in glibc's malloc.h
_JEMALLOC_DECAY_MS = 500  # merge: how long jemalloc keeps freed pages for reuse before returning them


def _storage_options(pairs: Sequence[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise OptionsError(f"--storage-option takes KEY=VALUE, got {pair!r}")
        # Nested keys (client_kwargs.region_name=...) become nested dicts, as fsspec expects.
        node = out
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        low = value.lower()
        node[leaf] = True if low == "true" else False if low == "false" else value
    return out


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected at least 1, got {value}")
    return value


def _ratio(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number within 0..1, got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number within 0..1, got {text!r}")
    return value


def _time(text: str) -> Any:
    try:
        return parse_time(text)
    except OptionsError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _size(text: str) -> int:
    try:
        return parse_size(text)
    except OptionsError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _duration(text: str) -> Any:
    try:
        return parse_duration(text)
    except OptionsError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--log-level", default=None, help="DEBUG, INFO, WARNING (default) or ERROR")
    p.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress and no summary")


def _add_job(p: argparse.ArgumentParser) -> None:
    """The options every job shares (`JobOptions`)."""
    p.add_argument("--start", type=_time, help="window start, ISO-8601 UTC (inclusive), e.g. 2026-11-01T13")
    p.add_argument("--end", type=_time, help="window end, ISO-8601 UTC (exclusive)")
    p.add_argument("--max-reject-ratio", type=_ratio, default=0.01, help="fail above this share (default 0.01)")
    p.add_argument("--require-data", action="store_true", help="an empty window is an error")
    p.add_argument("--workers", type=_positive_int, help="decode threads (default: number of cores)")
    p.add_argument("--fetch-concurrency", type=_positive_int, default=32, help="objects fetched at once")
    p.add_argument("--unit-size", type=_size, default=8 * 2**20, help="bytes decoded per unit (default 8MiB)")
    p.add_argument("--max-line-bytes", type=_size, default=32 * 2**20, help="longer lines are rejected")
    p.add_argument("--compression", default="zstd", help="Parquet codec: zstd (default), snappy, lz4, none")
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
    _add_common(p)


def _job_options(args: argparse.Namespace) -> dict[str, Any]:
    """`JobOptions` keyword arguments from the options `_add_job` declared."""
    opts: dict[str, Any] = {
        "start": args.start,
        "end": args.end,
        "max_reject_ratio": args.max_reject_ratio,
        "require_data": args.require_data,
        "fetch_concurrency": args.fetch_concurrency,
        "unit_bytes": args.unit_size,
        "max_line_bytes": args.max_line_bytes,
        "compression": args.compression,
        "storage_options": _storage_options(args.storage_option),
        "kms_key_id": args.kms_key_id,
    }
    if args.workers:
        opts["workers"] = args.workers
    if args.columns:
        opts["columns"] = load_column_spec(args.columns, opts["storage_options"])
    opts["decode"] = args.decode or bool(args.columns)
    return opts


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="capture-engine",
        description="Decode Amazon SageMaker data capture into hour-partitioned Parquet.",
    )
    parser.add_argument("--version", action="version", version=f"capture-engine {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    rt = sub.add_parser("realtime", help="real-time endpoint capture -> hive-partitioned Parquet")
    rt.add_argument("source", help="capture root, any level of it, or one object (path or URL: s3://, file://)")
    rt.add_argument("dest", help="output dataset root (path or URL)")
    _add_job(rt)

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

    me = sub.add_parser("merge", help="predictions + ground-truth labels -> hour-partitioned Parquet")
    src = me.add_mutually_exclusive_group(required=True)
    src.add_argument("--captures", metavar="SRC", help="real-time capture (as for realtime; with --decode per record)")
    src.add_argument("--batch", metavar="SRC", help="batch transform data capture (as for batch)")
    src.add_argument("--predictions", metavar="DATASET", help="a dataset written by realtime or batch")
    me.add_argument("--ground-truth", required=True, metavar="SRC", help="ground-truth root (holding yyyy/mm/dd/hh)")
    me.add_argument("dest", help="output dataset root (path or URL)")
    me.add_argument(
        "--label-delay",
        type=_duration,
        default="24h",
        metavar="DURATION",
        help="labels are looked for until this long after --end (default 24h; e.g. 90m, 2d)",
    )
    me.add_argument("--how", choices=("inner", "left"), default="inner", help="left keeps unlabelled predictions")
    me.add_argument(
        "--format",
        choices=("parquet", "sagemaker"),
        default="parquet",
        help="sagemaker also writes SageMaker's merged JSON Lines under DEST/merge/ (raw predictions only)",
    )
    me.add_argument(
        "--schedule-name", metavar="NAME", help="batch: folder between merge/ and the hour, as SageMaker's schedule"
    )
    me.add_argument(
        "--join-memory",
        type=_size,
        default=256 * 2**20,
        metavar="SIZE",
        help="labels beyond this (as JSON Lines) are joined in buckets spilled to local disk (default 256MiB)",
    )
    _add_job(me)

    sy = sub.add_parser("synth", help="write a seeded sample capture tree with ground-truth labels")
    sy.add_argument("dest", help="where to write (capture/ and ground-truth/ go below it)")
    sy.add_argument("--records", type=_positive_int, default=20_000, help="capture events (default 20000)")
    sy.add_argument("--size", type=_size, help="instead of --records: about this many bytes of capture (1GB)")
    sy.add_argument("--hours", type=_positive_int, default=3)
    sy.add_argument("--endpoints", type=_positive_int, default=2)
    sy.add_argument("--variants", type=_positive_int, default=2)
    sy.add_argument("--seed", type=int, default=0)
    sy.add_argument("--start", type=_time, help="first hour (default 2026-11-01T00)")
    sy.add_argument("--storage-option", action="append", default=[], metavar="KEY=VALUE")
    _add_common(sy)

    de = sub.add_parser("demo", help="synth -> realtime -> realtime --decode -> merge on local disk, with summaries")
    de.add_argument("dir", nargs="?", default="demo-output", help="working directory (default demo-output)")
    _add_common(de)
    return parser


def _configure_logging(args: argparse.Namespace) -> None:
    level = "DEBUG" if args.debug else (args.log_level or "WARNING")
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for handler in logging.getLogger().handlers:
        handler.addFilter(RedactingFilter())  # credentials never reach a log line, --debug or not


class _Progress:
    """One self-rewriting status line on a terminal; silent otherwise (logs carry the story)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.last = 0.0
        self.t0 = time.perf_counter()

    def __call__(self, report: RunReport, total: int) -> None:
        now = time.perf_counter()
        if not self.enabled or now - self.last < 0.2:
            return
        self.last = now
        mb = report.bytes_read / 1e6
        rate = mb / (now - self.t0) if now > self.t0 else 0.0
        sys.stderr.write(
            f"\r{total:,} objects | {mb:,.1f} MB read ({rate:,.0f} MB/s) | "
            f"{report.records:,} records | {report.rejected:,} rejected   "
        )
        sys.stderr.flush()

    def done(self) -> None:
        if self.enabled and self.last:
            sys.stderr.write("\n")


def _cmd_realtime(args: argparse.Namespace) -> int:
    options = RealtimeOptions(**_job_options(args))
    progress = _Progress(sys.stderr.isatty() and not args.quiet)
    try:
        report = run_realtime(args.source, args.dest, options=options, progress=progress)
    finally:
        progress.done()
    if not args.quiet:
        print(report.summary())
    return 0


def _prefix_map(pairs: Sequence[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in pairs:
        src, sep, dst = pair.partition("=")
        if not sep or not src or not dst:
            raise OptionsError(f"--prefix-map takes FROM=TO, got {pair!r}")
        out[src] = dst
    return out


def _cmd_batch(args: argparse.Namespace) -> int:
    from engine.batch import BatchOptions, run_batch

    options = BatchOptions(**_job_options(args), prefix_map=_prefix_map(args.prefix_map))
    progress = _Progress(sys.stderr.isatty() and not args.quiet)
    try:
        report = run_batch(args.source, args.dest, options=options, progress=progress)
    finally:
        progress.done()
    if not args.quiet:
        print(report.summary())
    return 0


def _cmd_merge(args: argparse.Namespace) -> int:
    import pyarrow as pa

    from engine.merge import run_merge

    # The merge frees large Arrow buffers on other threads than allocated them (decode, join, write), which
    # mimalloc (pyarrow's default) keeps resident: about 200 MB more peak RSS at 2M rows. jemalloc returning
    # pages unused for half a second keeps mimalloc's speed at ~70% of its memory; where pyarrow has no
    # jemalloc, glibc's malloc (mmap threshold pinned by _tune_malloc) returns them at once, for ~10% more CPU.
    try:
        pa.set_memory_pool(pa.jemalloc_memory_pool())
        pa.jemalloc_set_decay_ms(_JEMALLOC_DECAY_MS)
    except NotImplementedError:
        pa.set_memory_pool(pa.system_memory_pool())
    options = MergeOptions(
        **_job_options(args),
        label_delay=args.label_delay,
        how=args.how,
        sagemaker_format=args.format == "sagemaker",
        schedule_name=args.schedule_name,
        join_memory=args.join_memory,
    )
    report = run_merge(
        captures=args.captures,
        batch=args.batch,
        predictions=args.predictions,
        ground_truth=args.ground_truth,
        dest=args.dest,
        options=options,
    )
    if not args.quiet:
        print(report.summary())
    return 0


def _cmd_synth(args: argparse.Namespace) -> int:
    from engine.synth import SynthOptions, synth

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
    with translate_errors(args.dest, sink=True):  # access denied, bad storage options: one line
        summary = synth(args.dest, SynthOptions(**kwargs), storage_options=_storage_options(args.storage_option))
    if not args.quiet:
        print(
            f"wrote {summary.events:,} capture events ({summary.capture_bytes / 1e6:,.1f} MB) in "
            f"{summary.files:,} objects under {summary.capture_root}\n"
            f"wrote {summary.labels:,} ground-truth labels in {summary.label_files:,} objects under "
            f"{summary.ground_truth_root}"
        )
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from engine.batch import run_batch
    from engine.merge import run_merge
    from engine.options import MergeOptions
    from engine.synth import BatchSynthOptions, SynthOptions, synth, synth_batch

    root = Path(args.dir).resolve()
    sample, output, decoded = root / "sample", root / "realtime", root / "decoded"
    merged = root / "merged"
    print(f"1/6 synthesizing a sample capture tree under {sample}")
    summary = synth(str(sample), SynthOptions(records=20_000, hours=3))
    print(
        f"    {summary.events:,} events in {summary.files:,} objects, {summary.labels:,} labels "
        f"({summary.capture_bytes / 1e6:.1f} MB)"
    )
    print(f"2/6 capture-engine realtime {summary.capture_root} {output}")
    report = run_realtime(summary.capture_root, str(output), options=RealtimeOptions())
    print(report.summary())
    print(f"3/6 capture-engine realtime {summary.capture_root} {decoded} --decode")
    report = run_realtime(summary.capture_root, str(decoded), options=RealtimeOptions(decode=True))
    print(report.summary())
    print(f"4/6 capture-engine merge --predictions {output} --ground-truth {summary.ground_truth_root} {merged}")
    report = run_merge(predictions=str(output), ground_truth=summary.ground_truth_root, dest=str(merged))
    print(report.summary())
    batch_sample, batch_out, batch_merged = root / "batch-sample", root / "batch", root / "batch-merged"
    print(f"5/6 synthesizing batch transform capture under {batch_sample}, then capture-engine batch")
    tree = synth_batch(str(batch_sample), BatchSynthOptions())
    report = run_batch(tree.capture_root, str(batch_out))
    print(report.summary())
    print(f"6/6 capture-engine merge --predictions {batch_out} --ground-truth {tree.ground_truth_root} {batch_merged}")
    options = MergeOptions(sagemaker_format=True)
    report = run_merge(
        predictions=str(batch_out), ground_truth=tree.ground_truth_root, dest=str(batch_merged), options=options
    )
    print(report.summary())
    print(
        "\nRead it back with, for example:\n"
        f"  python -c \"import pyarrow.dataset as ds; print(ds.dataset('{output}', partitioning='hive')"
        '.to_table().num_rows)"\n'
        f"  duckdb -c \"select endpoint, variant, hour, count(*) from read_parquet('{decoded}/endpoint=*/**/*.parquet',"
        ' hive_partitioning=true, union_by_name=true) group by all order by all"\n'
        f'  duckdb -c "select label, count(*), avg(try_cast(output_data as double)) from read_parquet('
        f"'{merged}/endpoint=*/**/*.parquet') where output_encoding = 'CSV' group by all order by all\""
    )
    return 0


def _on_signal(signum: int, frame: FrameType | None) -> None:
    # Only a flag: an exception raised here would land inside whatever library call the main thread is
    # in, where a bare `except:` may swallow it mid-commit. The job stops at its next safe point.
    interrupts.request(signum)


def _tune_malloc() -> None:
    """Give large buffers back to the OS when freed (glibc only; a process-wide choice, so the CLI's).

    glibc raises its mmap threshold each time a large block is freed, after which units of a few MB
    come from the heap arenas (one per thread) and stay resident after use: peak RSS then grows with
    the number of threads that ever held a unit rather than with the units in flight.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(_M_MMAP_THRESHOLD, 2**20)
    except (OSError, AttributeError):  # not glibc (musl...): nothing to tune
        logger.debug("mallopt unavailable")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `capture-engine` and `python -m engine`; returns the exit code."""
    _tune_malloc()
    parser = _parser()
    args = parser.parse_args(argv)
    register_secrets()  # the AWS environment's credentials, before anything can log them
    _configure_logging(args)
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    handlers = {
        "realtime": _cmd_realtime,
        "batch": _cmd_batch,
        "merge": _cmd_merge,
        "synth": _cmd_synth,
        "demo": _cmd_demo,
    }
    try:
        interrupts.check()  # a signal that came while the program was starting
        code = handlers[args.command](args)
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
