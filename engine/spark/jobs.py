"""The jobs on a SparkSession: list and plan on the driver, kernels in mapInArrow, commit on the driver.

Each job keeps the local job's contract step for step (same listing, same messages for an empty or a
wrong source, same rejects replaced per source hour, same `JobRun.commit`: reject limit, `require_data`,
partitions replaced, manifest, `_SUCCESS` last), and differs only in where the kernels run.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from engine.errors import NoDataError
from engine.spark._kernels import (
    BatchOptions,
    JobRun,
    RealtimeOptions,
    RunReport,
    TransformFile,
    check_location,
    committed_names,
    looks_like,
    manifest_problem_rejects,
    open_location,
    plan_capture,
    plan_transform_files,
    refuse_if_not_capture,
    replace_read_hours,
)
from engine.spark.driver import SparkOptions, absorb, run_tasks
from engine.spark.executor import JobContext
from engine.spark.plan import Task, encode_objects, encode_transform_files, file_ids, pack

__all__ = ["run_batch", "run_realtime", "transform_file_sizes"]

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
    options = options or RealtimeOptions()
    spark_options = spark_options or SparkOptions()
    check_location("source", source)
    check_location("dest", dest)
    run = JobRun(dest, command=command, source=source, options=options)
    report = run.report
    src = open_location(source, options.storage_options, connections=options.fetch_concurrency)

    objects, empty_message = plan_capture(src, source, options, report)

    with run:
        data = run.writer("capture", time_column="inference_time", dynamic=options.decode)
        replace_read_hours(run, objects)
        groups = pack(objects, lambda o: o.size, spark_options.task_bytes)
        tasks = _tasks(run, [(sum(o.size for o in g), encode_objects(g)) for g in groups])
        _execute(spark, run, data, tasks, "realtime", source, dest, options)
        refuse_if_not_capture(src, objects, report)
        return run.commit(
            data,
            empty_message=empty_message,
            no_data_error=f"no capture records in the window under {source}",
        )


def transform_file_sizes(loc: Any, files: list[TransformFile], concurrency: int) -> list[int]:
    """Bytes of each file's output and input object (0 for a missing one: its task reports it), concurrently."""

    def size(uri: str | None) -> int:
        if uri is None:
            return 0
        try:
            return int(loc.fs.info(loc.fs._strip_protocol(uri)).get("size") or 0)
        except (OSError, ValueError):
            return 0

    uris = [u for f in files for u in (f.output, f.input)]
    with ThreadPoolExecutor(max_workers=max(1, min(concurrency, len(uris) or 1))) as pool:
        sizes = list(pool.map(size, uris))
    return [sizes[2 * i] + sizes[2 * i + 1] for i in range(len(files))]


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
    options = options or BatchOptions()
    spark_options = spark_options or SparkOptions()
    run = JobRun(dest, command="batch", source=source, options=options, endpoint_rejects=False)
    report = run.report
    loc = open_location(source, options.storage_options, connections=options.fetch_concurrency)
    files, problems = plan_transform_files(loc, options, report)
    problem_rows = manifest_problem_rejects(problems)
    report.objects = report.counts.get("transform_files", 0)
    empty_message = "the window held no batch transform records (nothing to write)"
    if not report.counts.get("manifests") and (what := looks_like(loc, job="batch")) is not None:
        empty_message = f"no batch capture manifests under {source}: it looks like {what}"
        if options.require_data:
            raise NoDataError(empty_message)
        logger.warning("%s", empty_message)
    report.records += problem_rows.num_rows
    report.rejected += problem_rows.num_rows
    report.rejects_by_reason.update(problem_rows.column("reason").to_pylist())
    with run:
        data = run.writer("batch", time_column="inference_time", dynamic=options.decode)
        for hour in {f.hour for f in files} | set(problem_rows.column("source_hour").to_pylist()):
            run.rejects.touch((None, None, None if hour is None else int(hour.timestamp()) // 3600))
        run.rejects.write(problem_rows)  # manifest problems are found on the driver: written there
        sizes = transform_file_sizes(loc, files, options.fetch_concurrency)
        indexed = list(zip(files, sizes, strict=True))
        groups = pack(indexed, lambda fs: max(fs[1], 1), spark_options.task_bytes)
        tasks = _tasks(run, [(sum(s for _, s in g), encode_transform_files([f for f, _ in g])) for g in groups])
        _execute(spark, run, data, tasks, "batch", source, dest, options)
        return run.commit(
            data,
            empty_message=empty_message,
            no_data_error=f"no batch transform records in the window under {source}",
        )
