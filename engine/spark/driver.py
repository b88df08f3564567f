"""The driver's side of a Spark run: tasks as a DataFrame, mapInArrow, and the results adopted for the commit.

The plan becomes a DataFrame with one task per Spark partition (so that Spark schedules, balances and
retries tasks one by one); `mapInArrow` runs `engine.spark.executor` on it; the few result rows (part
files and counts, `RESULT_SCHEMA`) are collected. Their counts are added into the run report and their
files adopted by the run's writers, so `JobRun.commit` commits them exactly like a local run's files.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
import pyarrow as pa

from engine import errors
from engine.errors import EngineError, SinkError
from engine.jobs.plan import Task
from engine.spark._kernels import DatasetWriter, RunReport, adopt_files, interrupts
from engine.spark.executor import FAIL_ONCE_ENV, PAUSE_ENV, RESULT_SCHEMA, TASK_SCHEMA, JobContext, task_function

__all__ = [
    "SparkOptions",
    "absorb",
    "collect_results",
    "map_in_arrow",
    "run_tasks",
    "spark_schema",
    "task_frame",
    "with_hooks",
]

logger = logging.getLogger(__name__)

_NOTES_KEPT = 20  # as the local batch job: URIs listed per note; the counts are complete
_REPORT_COUNTS = ("records", "blank_lines", "out_of_window", "bytes_read", "rejected", "events_written")


@dataclass(frozen=True, kw_only=True)
class SparkOptions:
    """How a job is cut into Spark tasks.

    Attributes:
        task_bytes: input bytes per task (objects are packed in listing order up to this; a larger object is
            a task of its own). Each task holds about one decode unit in memory at a time, whatever its size;
            smaller tasks balance better and retry cheaper, larger ones write fewer part files.
        shuffle_partitions: the partitions of the merge's shuffles (labels by key, keys by segment); None:
            one per decode task and at least the cluster's default parallelism (Spark's own default, 200,
            is far too many for a small window and set for every query of the session).
    """

    task_bytes: int = 128 * 2**20
    shuffle_partitions: int | None = None

    def __post_init__(self) -> None:
        if self.task_bytes < 1:
            raise errors.OptionsError(f"task_bytes must be at least 1, got {self.task_bytes}")
        if self.shuffle_partitions is not None and self.shuffle_partitions < 1:
            raise errors.OptionsError(f"shuffle_partitions must be at least 1, got {self.shuffle_partitions}")


def spark_schema(schema: pa.Schema) -> Any:
    """The Spark StructType of an Arrow schema of flat columns (strings, binaries, 64-bit integers)."""
    from pyspark.sql import types as T

    kinds = {pa.string(): T.StringType(), pa.binary(): T.BinaryType(), pa.int64(): T.LongType()}
    return T.StructType([T.StructField(f.name, kinds[f.type], nullable=True) for f in schema])


def map_in_arrow(
    frame: Any, fn: Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]], schema: Any | None
) -> Any:
    """`frame.mapInArrow(fn, schema)` (None: `RESULT_SCHEMA`), without pyspark 3.5's own deprecation warning."""
    schema = spark_schema(RESULT_SCHEMA) if schema is None else schema
    with warnings.catch_warnings():
        # pyspark 3.5 checks the pandas version with distutils' LooseVersion, deprecated: not the user's concern.
        warnings.filterwarnings("ignore", message="distutils Version classes", category=DeprecationWarning)
        return frame.mapInArrow(fn, schema)


def with_hooks(ctx: JobContext) -> JobContext:
    """`ctx` with the test hooks of this driver's environment (`FAIL_ONCE_ENV`, `PAUSE_ENV`)."""
    hooks = {"fail_once": os.environ.get(FAIL_ONCE_ENV) or None, "pause": float(os.environ.get(PAUSE_ENV) or 0)}
    return JobContext(**{**ctx.__dict__, **hooks})


def task_frame(spark: Any, tasks: list[Task]) -> Any:
    """The tasks as a DataFrame of `TASK_SCHEMA` rows, one per partition (Spark schedules and retries each)."""
    rows = [tuple(t.row()[f.name] for f in TASK_SCHEMA) for t in tasks]
    # parallelize slices a list evenly, so n slices of n rows hold one row each.
    return spark.createDataFrame(spark.sparkContext.parallelize(rows, len(rows)), spark_schema(TASK_SCHEMA))


def run_tasks(spark: Any, ctx: JobContext, tasks: list[Task]) -> list[dict[str, Any]]:
    """Run `tasks` on the cluster and return their result rows (one ``task`` row per task, and ``file`` rows)."""
    if not tasks:
        return []
    ctx = with_hooks(ctx)
    return collect_results(spark, ctx, map_in_arrow(task_frame(spark, tasks), task_function(ctx), None), len(tasks))


def collect_results(spark: Any, ctx: JobContext, frame: Any, tasks: int) -> list[dict[str, Any]]:
    """Compute `frame` (a mapInArrow whose schema is `RESULT_SCHEMA`) as one cancellable job; its rows."""
    sc = spark.sparkContext
    t0 = time.perf_counter()
    group = f"capture-engine-{ctx.run_id}"
    sc.setJobGroup(group, f"capture-engine {ctx.job} {ctx.run_id}: {tasks} tasks", interruptOnCancel=True)
    stop = threading.Event()

    def cancel_on_interrupt() -> None:
        # SIGTERM/SIGINT only set a flag (engine.interrupts); a Spark job would run to its end unless cancelled.
        while not stop.wait(0.5):
            if interrupts.pending() is not None:
                sc.cancelJobGroup(group)
                return

    watcher = threading.Thread(target=cancel_on_interrupt, name="engine-spark-cancel", daemon=True)
    watcher.start()
    try:
        result = frame.collect()
    except Exception:
        interrupts.check()  # cancelled because of an interrupt: say that, not Spark's "job cancelled"
        raise
    finally:
        stop.set()
        watcher.join()
        sc.setLocalProperty("spark.jobGroup.id", None)
        sc.setLocalProperty("spark.job.description", None)
    out = [r.asDict() for r in result]
    logger.info("spark: %s, %d tasks ran in %.1fs", ctx.job, tasks, time.perf_counter() - t0)
    return out


def _remote_error(row: dict[str, Any]) -> EngineError:
    """The engine error a task returned, as the same class with the same one-line message."""
    cls = getattr(errors, str(row["error_class"]), EngineError)
    if not (isinstance(cls, type) and issubclass(cls, EngineError)):
        cls = EngineError
    exc = cls.__new__(cls)
    # The message is already complete (it names the URI): set it as is, not through the class's formatting.
    Exception.__init__(exc, row["error_message"])
    if row.get("error_uri"):
        exc.uri = row["error_uri"]  # type: ignore[attr-defined]
    return exc


def absorb(
    results: list[dict[str, Any]],
    tasks: list[Task],
    report: RunReport,
    writers: Mapping[str, DatasetWriter],
) -> None:
    """Add the tasks' counts to `report` and hand their files to `writers` ("data", "rejects", "sagemaker").

    Raises:
        EngineError: the first task (in plan order) that stopped on one, as it was raised there.
        SinkError: a task's result is missing (never expected: Spark returns each task's rows once).
    """
    by_task: dict[int, dict[str, Any]] = {}
    files: dict[int, list[dict[str, Any]]] = {}
    for row in results:
        if row["kind"] == "task":
            by_task[row["task"]] = row
        else:
            files.setdefault(row["task"], []).append(row)
    missing = [t.index for t in tasks if t.index not in by_task]
    if missing:
        raise SinkError(
            f"spark returned no result for {len(missing)} tasks (first: {missing[0]})", uri=report.dest or ""
        )
    for t in tasks:
        if by_task[t.index].get("error_class"):
            raise _remote_error(by_task[t.index])
    reasons: Counter[str] = Counter()
    for t in tasks:  # plan order: notes keep the local executor's order
        row = by_task[t.index]
        for name in _REPORT_COUNTS:
            setattr(report, name, getattr(report, name) + int(row[name]))
        report.fallback_units += int(row["fallback_units"])
        extra = orjson.loads(row["extra"])
        reasons.update(extra["rejects_by_reason"])
        for name, n in extra["counts"].items():
            report.counts[name] = report.counts.get(name, 0) + n
        for name, uris in extra["notes"].items():
            kept = report.notes.setdefault(name, [])
            kept.extend(uris[: max(0, _NOTES_KEPT - len(kept))])
        for stage, seconds in extra["stage_seconds"].items():
            report.add_time(stage, seconds)
        for f in sorted(files.get(t.index, []), key=lambda f: f["path"]):
            schema = pa.ipc.read_schema(pa.py_buffer(f["schema"]))
            adopt_files(writers[f["table"]], (f["endpoint"], f["variant"], f["hour"]), f["path"], f["rows"], schema)
    report.rejects_by_reason.update(reasons)
