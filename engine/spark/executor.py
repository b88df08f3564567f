"""What runs on the executors: one task's kernels, its part files under the run's `_temporary/`, its counts.

`task_function` returns the function given to `DataFrame.mapInArrow`. For every task row it reads the
task's inputs through the engine's storage seam (fsspec: local paths, ``s3://``, every storage option),
runs the same fetch and decode kernels as the local executor, one decode thread per Spark core, and
writes Parquet with the same `DatasetWriter` into a folder of its own attempt:
``DEST/_temporary/<run>/tasks/<task>-<attempt>/``. Nothing there is data to a reader (`_` folders are
skipped) and only the driver commits, so a failed, retried or speculative attempt leaves files nobody
adopts, removed with the run's temporary folder.

The output is one fixed schema, a tagged union: a ``file`` row per part file written (partition, path,
rows, Arrow schema) and one ``task`` row with the task's counts. Rows and rejects stay on the executors'
storage; only these few rows travel to the driver. An `EngineError` (a source that cannot be read, a bad
storage option) is returned in the task row, not raised: it would fail the same way on every retry, and
the driver raises it as the local executor would, with its one-line message and exit code. Anything else
is raised, so that Spark retries the task.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

import orjson
import pyarrow as pa

from engine.errors import EngineError
from engine.jobs.plan import decode_objects, decode_transform_files
from engine.spark._kernels import (
    TEMPORARY,
    BatchOptions,
    DatasetWriter,
    JobOptions,
    Location,
    PartitionKey,
    RealtimeOptions,
    RunReport,
    Sink,
    TableSpec,
    capture_units,
    deliver,
    open_location,
    transform_units,
    written_files,
)

__all__ = [
    "FAIL_ONCE_ENV",
    "PAUSE_ENV",
    "RESULT_SCHEMA",
    "TASK_SCHEMA",
    "JobContext",
    "SideFile",
    "TaskBody",
    "batch_task",
    "realtime_task",
    "run_attempt",
    "task_function",
    "task_rows",
]

logger = logging.getLogger(__name__)

# Fault injection for tests: "DIR[:TASK[:JOB]]" makes task TASK (default 0, "*": the first to get there; of job
# JOB only, say merge-join) fail once after writing its files; the marker DIR/task-<n> (DIR/<job>-task-<n>)
# records that it did. Read on the driver, so it reaches executors of any cluster manager.
FAIL_ONCE_ENV = "CAPTURE_ENGINE_SPARK_FAIL_ONCE"
# For tests: seconds a task waits after its files are written, so that a test can kill the job mid-write.
PAUSE_ENV = "CAPTURE_ENGINE_SPARK_PAUSE"

TASK_SCHEMA = pa.schema(
    [("task", pa.int64()), ("file_id", pa.string()), ("bytes", pa.int64()), ("inputs", pa.string())]
)
_COUNTS = ("records", "blank_lines", "out_of_window", "bytes_read", "rejected", "events_written", "fallback_units")
RESULT_SCHEMA = pa.schema(
    [
        ("kind", pa.string()),  # "task" or "file"
        ("task", pa.int64()),
        ("attempt", pa.int64()),
        # file rows: which writer ("data" or "rejects"), partition key, temporary path, rows, schema (Arrow IPC)
        ("table", pa.string()),
        ("endpoint", pa.string()),
        ("variant", pa.string()),
        ("hour", pa.int64()),
        ("path", pa.string()),
        ("rows", pa.int64()),
        ("schema", pa.binary()),
        # task rows: the counts of the run report, the rest of it as JSON, or the error that stopped the task
        *((name, pa.int64()) for name in _COUNTS),
        ("extra", pa.string()),
        ("error_class", pa.string()),
        ("error_message", pa.string()),
        ("error_uri", pa.string()),
    ]
)


@dataclass(frozen=True, kw_only=True)
class JobContext:
    """Everything a task needs besides its row; pickled once into the mapInArrow function."""

    job: str  # "realtime", "batch", or a stage of the merge ("merge-labels", "merge-captures", ...)
    source: str
    dest: str
    run_id: str
    options: JobOptions
    data_spec: TableSpec
    rejects_spec: TableSpec
    fail_once: str | None = None
    pause: float = 0.0
    dynamic: bool | None = None  # the data writer's schema per partition (None: as options.decode)


def task_function(ctx: JobContext) -> Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]]:
    """The mapInArrow function of a job: task rows in, result rows (`RESULT_SCHEMA`) out."""

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            for row in batch.to_pylist():
                yield _run_task(ctx, row)

    return run


def _attempt() -> int:
    try:
        from pyspark import TaskContext
    except ImportError:  # called outside Spark (unit use)
        return 0
    tc = TaskContext.get()
    return int(tc.taskAttemptId()) if tc is not None else 0


def _run_task(ctx: JobContext, row: dict[str, Any]) -> pa.RecordBatch:
    task, options = int(row["task"]), ctx.options
    if ctx.job.startswith("merge-"):
        from engine.spark.merge_tasks import merge_body

        return run_attempt(ctx, task, row["file_id"], merge_body(ctx, task, row["inputs"]))
    decode = _realtime if ctx.job == "realtime" else _batch

    def body(report: RunReport, data: DatasetWriter, rejects: DatasetWriter, folder: Location) -> list[SideFile]:
        decode(options, ctx.source, row["inputs"], report, data.write, rejects.write)
        return []

    return run_attempt(ctx, task, row["file_id"], body)


# A file a task wrote besides its data and rejects: (table, partition key, path, rows, schema). Either for a
# later stage of its job (key (None, None, None)) or for a writer of the driver's ("sagemaker": JSON Lines).
SideFile = tuple[str, PartitionKey, str, int, pa.Schema]
TaskBody = Callable[[RunReport, DatasetWriter, DatasetWriter, Location], list[SideFile]]


def run_attempt(ctx: JobContext, task: int, file_id: str, body: TaskBody) -> pa.RecordBatch:
    """Run one task's `body` in a folder of this attempt's own and return its result rows (`RESULT_SCHEMA`).

    `body` gets the task's report, its data and rejects writers and its folder; it returns the side files it
    wrote there. An `EngineError` becomes the task row's error; anything else is raised (Spark retries).
    """
    t0 = time.perf_counter()
    attempt, options = _attempt(), ctx.options
    out = open_location(
        ctx.dest, options.storage_options, kms_key_id=options.kms_key_id, connections=options.fetch_concurrency
    )
    folder = Location(out.fs, out.join(TEMPORARY, ctx.run_id, "tasks", f"{ctx.job}-{task:06d}-{attempt}"), out.url)

    def writer(spec: TableSpec, time_column: str, prefix: str, dynamic: bool) -> DatasetWriter:
        return DatasetWriter(
            folder,
            spec=spec,
            time_column=time_column,
            dynamic=dynamic,
            run_id=file_id,
            prefix=prefix,
            compression=options.compression,
            row_group_bytes=options.row_group_bytes,
        )

    dynamic = options.decode if ctx.dynamic is None else ctx.dynamic
    data = writer(ctx.data_spec, "inference_time", "", dynamic)
    rejects = writer(ctx.rejects_spec, "source_hour", "_rejects", False)
    report = RunReport(command=ctx.job, source=ctx.source, dest=None, options={})
    try:
        sides = body(report, data, rejects, folder)
        t1 = time.perf_counter()
        data.close()
        rejects.close()
        report.add_time("write", time.perf_counter() - t1)
    except EngineError as exc:
        data.abort()
        rejects.abort()
        return _rows([_task_row(task, attempt, report, error=exc)])
    except BaseException:
        data.abort()
        rejects.abort()
        raise
    _maybe_fail(ctx, task)
    if ctx.pause:
        time.sleep(ctx.pause)
    report.add_time("task", time.perf_counter() - t0)
    files = [_file_row(task, attempt, "data", f) for f in written_files(data)]
    files += [_file_row(task, attempt, "rejects", f) for f in written_files(rejects)]
    files += [_file_row(task, attempt, table, (key, path, n, schema)) for table, key, path, n, schema in sides]
    return _rows([*files, _task_row(task, attempt, report)])


def _realtime(options: JobOptions, source: str, inputs: str, report: RunReport, write: Sink, rejects: Sink) -> None:
    assert isinstance(options, RealtimeOptions)
    src = open_location(source, options.storage_options, connections=options.fetch_concurrency)
    # One decode thread: Spark runs one task per core, so its cores are the parallelism.
    for d in capture_units(src, decode_objects(inputs), replace(options, workers=1), report):
        deliver(report, d, write, rejects)


def _batch(options: JobOptions, source: str, inputs: str, report: RunReport, write: Sink, rejects: Sink) -> None:
    assert isinstance(options, BatchOptions)
    src = open_location(source, options.storage_options, connections=options.fetch_concurrency)
    for d in transform_units(src, decode_transform_files(inputs), replace(options, workers=1), report):
        deliver(report, d, write, rejects)


def _maybe_fail(ctx: JobContext, task: int) -> None:
    """The injected fault (`FAIL_ONCE_ENV`): fail once, after this attempt's files are complete."""
    if not ctx.fail_once:
        return
    folder, _, rest = ctx.fail_once.partition(":")
    which, _, job = rest.partition(":")
    if (which != "*" and task != int(which or 0)) or (job and job != ctx.job):
        return
    name = f"task-{'any' if which == '*' else task}"
    marker = os.path.join(folder, f"{job}-{name}" if job else name)
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return
    os.close(fd)
    raise RuntimeError(f"injected failure of task {task} ({FAIL_ONCE_ENV})")


def _file_row(task: int, attempt: int, table: str, f: tuple[Any, str, int, pa.Schema]) -> dict[str, Any]:
    (endpoint, variant, hour), path, rows, schema = f
    return {
        "kind": "file",
        "task": task,
        "attempt": attempt,
        "table": table,
        "endpoint": endpoint,
        "variant": variant,
        "hour": hour,
        "path": path,
        "rows": rows,
        "schema": schema.serialize().to_pybytes(),
    }


def _task_row(task: int, attempt: int, report: RunReport, *, error: EngineError | None = None) -> dict[str, Any]:
    row: dict[str, Any] = {"kind": "task", "task": task, "attempt": attempt}
    row.update({name: getattr(report, name) for name in _COUNTS})
    row["extra"] = orjson.dumps(
        {
            "rejects_by_reason": dict(report.rejects_by_reason),
            "counts": report.counts,
            "notes": report.notes,
            "stage_seconds": report.stage_seconds,
        }
    ).decode()
    if error is not None:
        row.update(error_class=type(error).__name__, error_message=str(error), error_uri=getattr(error, "uri", None))
    return row


def _rows(rows: list[dict[str, Any]]) -> pa.RecordBatch:
    return pa.RecordBatch.from_pylist(rows, schema=RESULT_SCHEMA)


realtime_task = _realtime
batch_task = _batch


def task_rows(rows: list[dict[str, Any]]) -> pa.RecordBatch:
    """Result rows (`RESULT_SCHEMA`) as one batch."""
    return _rows(rows)
