"""The real-time capture job: list (the plan) -> an executor's fetch and decode -> partition -> write -> commit.

Each stage is a function over iterators; only bounded work is in flight at any time
(`fetch_concurrency` objects, `workers` decode units), so memory follows the batch size.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator

import pyarrow as pa

from engine.errors import NoDataError, OptionsError
from engine.io.listing import CaptureObject, list_capture_objects, looks_like, looks_like_object
from engine.io.storage import Location, open_location
from engine.jobs.executor import Executor, LocalExecutor, ProgressCallback
from engine.jobs.pipelines import account, capture_units
from engine.jobs.run import JobRun
from engine.options import RealtimeOptions, check_location
from engine.report import RunReport
from engine.tables import capture_schema

__all__ = [
    "ProgressCallback",
    "iter_capture",
    "plan_capture",
    "read_capture",
    "refuse_if_not_capture",
    "replace_read_hours",
    "run_realtime",
]

logger = logging.getLogger(__name__)


def _stream(
    loc: Location,
    objects: list[CaptureObject],
    options: RealtimeOptions,
    report: RunReport,
    on_rejects: Callable[[pa.RecordBatch], None] | None,
) -> Iterator[pa.RecordBatch]:
    """The rows (or payload records) of `objects`, every unit's counts added to `report`, rejects handed on."""
    report.objects += len(objects)
    report.bytes_total += sum(o.size for o in objects)
    for d in capture_units(loc, objects, options, report):
        account(report, d)
        if d.rejects.num_rows:
            if on_rejects is not None:
                for rejected in d.reject_batches():
                    on_rejects(rejected)
            else:
                logger.warning("%d records rejected in %s", d.rejects.num_rows, loc.uri(loc.root))
        yield from (b for b in d.outputs() if b.num_rows)


def _listed(source: str, options: RealtimeOptions) -> tuple[Location, list[CaptureObject]]:
    loc = open_location(source, options.storage_options, connections=options.fetch_concurrency)
    return loc, list_capture_objects(loc, hours=options.window_hours(), concurrency=options.fetch_concurrency)


def iter_capture(
    source: str,
    *,
    options: RealtimeOptions | None = None,
    report: RunReport | None = None,
    on_rejects: Callable[[pa.RecordBatch], None] | None = None,
) -> Iterator[pa.RecordBatch]:
    """Stream the capture under `source` as record batches: capture rows, or with `options.decode` payload records.

    Decoded records carry the columns of their (endpoint, variant), so batches may differ in schema; that is
    why this is an iterator and not a `pyarrow.RecordBatchReader` like `read_capture`. Counts (objects,
    records, rejects...) go to `report` when one is given; rejects to `on_rejects` (else the log).

    Raises:
        SourceError: the source does not exist or cannot be read (when iteration starts).
    """
    options = options or RealtimeOptions()
    loc, objects = _listed(source, options)
    report = report or RunReport(command="read", source=source, dest=None, options={})
    yield from _stream(loc, objects, options, report, on_rejects)


def read_capture(
    source: str,
    *,
    options: RealtimeOptions | None = None,
    report: RunReport | None = None,
    on_rejects: Callable[[pa.RecordBatch], None] | None = None,
) -> pa.RecordBatchReader:
    """Stream the capture records under `source` as a `pyarrow.RecordBatchReader` (one row per event).

    Args:
        source: capture root (any level of ``{root}/{endpoint}/{variant}/yyyy/mm/dd/hh``) or one object,
            as a local path or fsspec URL.
        options: window, concurrency and limits; see `RealtimeOptions`.
        report: receives the counts (objects, records, rows, rejects by reason, outside the window) as the
            reader is consumed, so ``records = events_written + rejected + out_of_window`` can be checked.
        on_rejects: called with each batch of rejected records (``_rejects`` columns); by default rejects
            are counted in the log only.

    Raises:
        SourceError: the source does not exist or cannot be read.
        OptionsError: `options.decode` is set: decoded columns vary by endpoint and variant, so they cannot
            share one reader schema; use `iter_capture`.
    """
    options = options or RealtimeOptions()
    if options.decode:
        raise OptionsError("read_capture streams one schema; decoded payload columns vary: use iter_capture")
    loc, objects = _listed(source, options)
    report = report or RunReport(command="read", source=source, dest=None, options={})
    return pa.RecordBatchReader.from_batches(capture_schema(), _stream(loc, objects, options, report, on_rejects))


def plan_capture(
    src: Location, source: str, options: RealtimeOptions, report: RunReport
) -> tuple[list[CaptureObject], str]:
    """The window's capture objects (counted into `report`), and the message an empty run commits with.

    The plan every executor runs: the local one decodes the objects on threads, the Spark one packs them into
    tasks. Raises NoDataError where the source holds no capture but something else, with `require_data`.
    """
    t0 = time.perf_counter()
    objects = list_capture_objects(src, hours=options.window_hours(), concurrency=options.fetch_concurrency)
    report.add_time("list", time.perf_counter() - t0)
    report.objects = len(objects)
    report.bytes_total = sum(o.size for o in objects)
    logger.info("found %d capture objects (%d bytes) under %s", len(objects), report.bytes_total, source)
    empty_message = "the window held no capture records (nothing to write)"
    if not objects and (what := looks_like(src)) is not None:
        # Pointed at the wrong data: say so, rather than commit an empty dataset without a word.
        empty_message = f"no capture objects under {src.uri(src.root)}: it looks like {what}"
        if options.require_data:
            raise NoDataError(empty_message)
        logger.warning("%s", empty_message)
    return objects, empty_message


def replace_read_hours(run: JobRun, objects: list[CaptureObject]) -> None:
    """Rejects of every source hour read are replaced, so a fixed input clears old rejects."""
    for o in objects:
        hour = None if o.hour is None else int(o.hour.timestamp()) // 3600
        run.rejects.touch((o.endpoint, o.variant, hour))


def refuse_if_not_capture(src: Location, objects: list[CaptureObject], report: RunReport) -> None:
    """Nothing but rejects: if the objects are not capture at all, that is the one line to give (NoDataError)."""
    if objects and report.records and not report.events_written:
        what = looks_like_object(src, objects[0].path)
        if what is not None:
            raise NoDataError(f"no capture objects under {src.uri(src.root)}: it looks like {what}")


def run_realtime(
    source: str,
    dest: str,
    *,
    options: RealtimeOptions | None = None,
    command: str = "realtime",
    progress: ProgressCallback | None = None,
    executor: Executor | None = None,
) -> RunReport:
    """Decode real-time capture under `source` into hive-partitioned Parquet under `dest`.

    Returns the run report (also written as ``DEST/_SUCCESS``). The listing and the commit happen here;
    `executor` runs the kernels over the listed objects (default: `LocalExecutor`, threads in this process;
    `engine.spark.run_realtime` passes one that runs them as Spark tasks).

    Raises:
        SourceError: the source does not exist or cannot be read.
        SinkError: the destination cannot be written.
        RejectLimitError: rejects exceed `options.max_reject_ratio` (rejects are kept, nothing else).
        NoDataError: the window is empty and `options.require_data` is set.
    """
    options = options or RealtimeOptions()
    check_location("source", source)
    check_location("dest", dest)
    run = JobRun(dest, command=command, source=source, options=options)
    report = run.report
    src = open_location(source, options.storage_options, connections=options.fetch_concurrency)

    objects, empty_message = plan_capture(src, source, options, report)

    with run:
        data = run.writer("capture", time_column="inference_time", dynamic=options.decode)
        replace_read_hours(run, objects)
        (executor or LocalExecutor(progress=progress)).run_capture(run, data, src, objects, options)
        refuse_if_not_capture(src, objects, report)
        return run.commit(
            data,
            empty_message=empty_message,
            no_data_error=f"no capture records in the window under {source}",
        )
