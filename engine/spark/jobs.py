"""The jobs on a SparkSession: list and plan on the driver, kernels in mapInArrow, commit on the driver.

Each job is the local job itself (`engine.jobs.realtime.run_realtime`, `engine.jobs.batch.run_batch`:
the same listing, messages for an empty or a wrong source, rejects replaced per source hour, and
`JobRun.commit`: reject limit, `require_data`, partitions replaced, manifest, `_SUCCESS` last) given a
`SparkExecutor`, which packs the plan into tasks and runs the kernels there instead of on local threads.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from engine.jobs.plan import Task, file_ids, pack_capture_objects, pack_transform_files
from engine.spark._kernels import (
    BatchOptions,
    CaptureObject,
    DatasetWriter,
    JobRun,
    Location,
    RealtimeOptions,
    RunReport,
    TransformFile,
    committed_names,
    run_batch_job,
    run_realtime_job,
)
from engine.spark.driver import SparkOptions, absorb, run_tasks
from engine.spark.executor import JobContext

__all__ = ["SparkExecutor", "run_batch", "run_realtime"]

logger = logging.getLogger(__name__)


def _executor_info(spark: Any, tasks: int, seconds: float) -> dict[str, Any]:
    """What the report says of the executor; `job_seconds` is the Spark job's wall time (the rest is fixed cost)."""
    sc = spark.sparkContext
    return {
        "name": "spark",
        "spark_version": spark.version,
        "master": sc.master,
        "tasks": tasks,
        "job_seconds": round(seconds, 3),
    }


def _tasks(run: JobRun, groups: list[tuple[int, str]]) -> list[Task]:
    ids = file_ids(run.run_id, len(groups), committed_names(run.out))
    return [Task(index=i, file_id=ids[i], bytes=size, inputs=text) for i, (size, text) in enumerate(groups)]


def _execute(
    spark: Any, run: JobRun, data: Any, tasks: list[Task], job: str, source: str, dest: str, options: Any
) -> None:
    """Run the tasks on Spark and take the files and counts of the attempts it kept into the run."""
    assert run.rejects.spec is not None  # a table's writer
    ctx = JobContext(
        job=job,
        source=source,
        dest=dest,
        run_id=run.run_id,
        options=options,
        data_spec=data.spec,
        rejects_spec=run.rejects.spec,
    )
    t1 = time.perf_counter()
    results = run_tasks(spark, ctx, tasks)
    run.report.options["executor"] = _executor_info(spark, len(tasks), time.perf_counter() - t1)
    absorb(results, tasks, run.report, {"data": data, "rejects": run.rejects})


@dataclass(frozen=True)
class SparkExecutor:
    """An executor (`engine.jobs.executor.Executor`) that runs a plan's kernels as Spark tasks of `task_bytes`."""

    spark: Any
    options: SparkOptions

    def run_capture(
        self, run: JobRun, data: DatasetWriter, src: Location, objects: list[CaptureObject], options: RealtimeOptions
    ) -> None:
        tasks = _tasks(run, pack_capture_objects(objects, self.options.task_bytes))
        _execute(self.spark, run, data, tasks, "realtime", run.source, run.dest, options)

    def run_transform(
        self, run: JobRun, data: DatasetWriter, src: Location, files: list[TransformFile], options: BatchOptions
    ) -> None:
        groups = pack_transform_files(src, files, options.fetch_concurrency, self.options.task_bytes)
        _execute(self.spark, run, data, _tasks(run, groups), "batch", run.source, run.dest, options)


def run_realtime(
    spark: Any,
    source: str,
    dest: str,
    *,
    options: RealtimeOptions | None = None,
    spark_options: SparkOptions | None = None,
    command: str = "realtime",
) -> RunReport:
    """`engine.run_realtime` on Spark: the same dataset, rejects and `_SUCCESS` report, decoded on the executors.

    Raises: as `engine.run_realtime` (SourceError, SinkError, RejectLimitError, NoDataError, OptionsError).
    """
    executor = SparkExecutor(spark, spark_options or SparkOptions())
    return run_realtime_job(source, dest, options=options, command=command, executor=executor)


def run_batch(
    spark: Any,
    source: str,
    dest: str,
    *,
    options: BatchOptions | None = None,
    spark_options: SparkOptions | None = None,
) -> RunReport:
    """`engine.run_batch` on Spark: manifests listed and paired on the driver, transform files decoded on executors.

    Raises: as `engine.run_batch`.
    """
    return run_batch_job(source, dest, options=options, executor=SparkExecutor(spark, spark_options or SparkOptions()))
