"""The merge job on a SparkSession: labels and predictions decoded on the executors, joined by Spark.

    driver:    list the label window and the predictions (as the local job), plan tasks
    stage 1:   label tasks -> label side files (read order numbered) + rejects
               prediction tasks (capture objects, transform files or a dataset's row groups)
                 -> prediction segments (Arrow IPC) + their keys + rejects
    Spark:     latest label per key (a window over read order: the local rule, re-labels included),
               keys x latest labels (Spark's join), the counts (distinct labels, unmatched labels,
               duplicate prediction keys) as Spark aggregations
    stage 2:   per prediction segment, its rows joined to the labels Spark sent it and written by the
               engine's writer (`engine.spark.merge_tasks`), and with ``--format sagemaker`` rendered by the
               local job's `merged_writer` into the attempt's folder
    driver:    the files of the kept attempts committed with the engine's protocol, `_SUCCESS` last

Side files live under the run's ``_temporary/`` folder and are read back through the engine's storage seam
in mapInArrow (not by Spark's own readers: an ``s3://`` destination needs no Hadoop S3 connector).
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from engine.errors import NoDataError, SinkError
from engine.jobs.plan import Task, file_ids, pack_capture_objects, pack_dataset_parts, pack_transform_files
from engine.spark._kernels import (
    MERGE_COUNTS,
    BatchOptions,
    JobRun,
    MergeOptions,
    RunReport,
    check_location,
    check_sagemaker,
    committed_names,
    list_capture_objects,
    list_label_objects,
    manifest_problem_counts,
    manifest_problem_rejects,
    merged_writer,
    one_prediction_source,
    open_location,
    plan_dataset,
    plan_transform_files,
    say_if_nothing_matched,
)
from engine.spark.driver import SparkOptions, absorb, collect_results, map_in_arrow, run_tasks, spark_schema, with_hooks
from engine.spark.executor import JobContext
from engine.spark.jobs import _executor_info, _tasks
from engine.spark.merge_tasks import (
    KEYS,
    LABEL_SIDE,
    SEGMENT_BITS,
    Kind,
    join_function,
    prediction_options,
    read_side,
)

__all__ = ["run_merge"]

logger = logging.getLogger(__name__)

_SIDES = ("labels", "keys", "predictions")


def _side_frame(spark: Any, dest: Any, paths: list[str], schema: Any) -> Any:
    """A DataFrame of the rows of side files, read on the executors through the engine's storage seam."""
    from pyspark.sql import types as T

    struct = spark_schema(schema)
    if not paths:
        return spark.createDataFrame([], struct)
    rows = [(p,) for p in paths]
    frame = spark.createDataFrame(
        spark.sparkContext.parallelize(rows, len(rows)), T.StructType([T.StructField("path", T.StringType())])
    )

    def read(batches: Any) -> Any:
        loc = dest()
        for batch in batches:
            for path in batch.column("path").to_pylist():
                yield from read_side(loc, path)

    return map_in_arrow(frame, read, struct)


def _taken_in(
    run: JobRun, results: list[dict[str, Any]], tasks: list[Task], writers: dict[str, Any]
) -> list[dict[str, Any]]:
    """The tasks' counts and dataset files taken into the run; returns the side files they wrote."""
    sides = [r for r in results if r["kind"] == "file" and r["table"] in _SIDES]
    absorb([r for r in results if not (r["kind"] == "file" and r["table"] in _SIDES)], tasks, run.report, writers)
    # Only the files of the attempts whose task rows Spark returned (absorb checked there is one per task).
    kept = {(r["task"], r["attempt"]) for r in results if r["kind"] == "task"}
    return sorted((s for s in sides if (s["task"], s["attempt"]) in kept), key=lambda s: (s["task"], s["path"]))


def _join(
    spark: Any,
    run: JobRun,
    ctx: JobContext,
    label_files: list[dict[str, Any]],
    pred_files: list[dict[str, Any]],
    writers: dict[str, Any],
    shuffle: int,
    taken: set[str],
    *,
    raw: bool,
    kind: Kind,
) -> int:
    """Spark's part: the latest labels, the join's counts, then the join tasks (stage 2); their number."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    options = ctx.options
    counts, report = run.report.counts, run.report
    n_predictions = sum(int(f["rows"]) for f in pred_files if f["table"] == "keys")
    segments = {
        int(f["task"]) << SEGMENT_BITS | int(f["path"].rsplit("-", 1)[-1].split(".")[0]): f["path"]
        for f in pred_files
        if f["table"] == "predictions"
    }

    def dest_location() -> Any:
        return open_location(ctx.dest, options.storage_options, connections=options.fetch_concurrency)

    label_paths = [f["path"] for f in label_files if f["table"] == "labels"]
    label_rows = _side_frame(spark, dest_location, label_paths, LABEL_SIDE)
    keys = _side_frame(spark, dest_location, [f["path"] for f in pred_files if f["table"] == "keys"], KEYS)
    keys = keys.persist()
    # The local rule: of the labels of one key the latest read wins (hour folder, object key, line, element).
    latest = (
        label_rows.withColumn(
            "_n", F.row_number().over(Window.partitionBy("event_id").orderBy(F.desc("_task"), F.desc("_seq")))
        )
        .where(F.col("_n") == 1)
        .drop("_n", "_task", "_seq")
        .persist()
    )
    distinct_keys = keys.select(F.col("key").alias("event_id")).where(F.col("event_id").isNotNull()).distinct()
    stats = (
        latest.select("event_id")
        .join(distinct_keys.withColumn("_m", F.lit(1)), "event_id", "left")
        .agg(F.count("*").alias("n"), F.count(F.when(F.col("_m").isNull(), 1)).alias("unmatched"))
    )
    # As DuplicateCounter: rows of one event differ by record_index (null and absent count as 0).
    distinct_rows = keys.select("key", F.coalesce("record_index", F.lit(0)).alias("r")).distinct()
    with ThreadPoolExecutor(max_workers=2) as pool:
        labels_job = pool.submit(lambda: stats.collect()[0])
        repeats_job = pool.submit(distinct_rows.count)
        label_stats, repeats = labels_job.result(), repeats_job.result()
    counts["duplicate_labels"] = counts["labels"] - int(label_stats["n"])
    counts["unmatched_labels"] = int(label_stats["unmatched"])
    counts["duplicate_prediction_keys"] = n_predictions - int(repeats)
    if segments:
        ids = file_ids(run.run_id, len(segments), taken)
        order = sorted(segments)
        by_segment = {s: (ids[i], segments[s]) for i, s in enumerate(order)}
        join_tasks = [Task(index=s, file_id=by_segment[s][0], bytes=0, inputs=segments[s]) for s in order]
        wanted = keys.select("segment", F.col("key").alias("event_id")).distinct().join(latest, "event_id")
        markers = spark.createDataFrame([(s,) for s in order], "segment long")
        for f in LABEL_SIDE:
            if f.name not in ("_task", "_seq"):
                markers = markers.withColumn(f.name, F.lit(None).cast(wanted.schema[f.name].dataType))
        rows = wanted.unionByName(markers).repartition(min(len(order), shuffle), "segment")
        rows = rows.sortWithinPartitions("segment")
        ctx = with_hooks(ctx)
        fn = join_function(ctx, by_segment, raw=raw, kind=kind)
        results = collect_results(spark, ctx, map_in_arrow(rows, fn, None), len(join_tasks))
        absorb(results, join_tasks, report, writers)
    latest.unpersist()
    keys.unpersist()
    return len(segments)


def run_merge(
    spark: Any,
    *,
    ground_truth: str,
    dest: str,
    captures: str | None = None,
    batch: str | None = None,
    predictions: str | None = None,
    options: MergeOptions | None = None,
    spark_options: SparkOptions | None = None,
    command: str = "merge",
) -> RunReport:
    """`engine.run_merge` on Spark: the same merged dataset, rejects and `_SUCCESS` counts.

    Predictions come from `captures` or `batch` (decoded on the executors) or a `predictions` dataset (its
    row groups planned here and read on the executors); `options.sagemaker_format` also writes SageMaker's
    merged JSON Lines, from the join tasks, committed with the run.

    Raises: as `engine.run_merge`.
    """
    options = options or MergeOptions()
    spark_options = spark_options or SparkOptions()
    source = one_prediction_source(captures, batch, predictions, options)
    check_location("ground_truth", ground_truth)
    check_location("dest", dest)
    kind = "captures" if captures is not None else "batch" if batch is not None else "predictions"
    run = JobRun(dest, command=command, source=source, options=options, endpoint_rejects=kind == "captures")
    report = run.report
    report.notes["ground_truth"] = [ground_truth]
    report.counts.update(dict.fromkeys(MERGE_COUNTS, 0))

    gt = open_location(ground_truth, options.storage_options, connections=options.fetch_concurrency)
    t0 = time.perf_counter()
    labels = list_label_objects(gt, hours=options.label_hours(), concurrency=options.fetch_concurrency)
    report.add_time("list", time.perf_counter() - t0)
    report.objects += len(labels)
    report.bytes_total += sum(o.size for o in labels)
    src = open_location(source, options.storage_options, connections=options.fetch_concurrency)
    rows_kind: Kind = "realtime" if kind == "captures" else "batch"
    raw = not options.decode
    if kind == "predictions":
        # The local listing and row-group pruning, as plain data: row groups packed into tasks by their size.
        plan = plan_dataset(src, options)
        plan.count(report)
        rows_kind, raw = plan.kind, plan.raw
        groups = pack_dataset_parts(plan.parts, spark_options.task_bytes)
    elif kind == "captures":
        popts = prediction_options(options, kind)
        objects = list_capture_objects(src, hours=popts.window_hours(), concurrency=options.fetch_concurrency)
        report.objects += len(objects)
        report.bytes_total += sum(o.size for o in objects)
        groups = pack_capture_objects(objects, spark_options.task_bytes)
    else:
        popts = prediction_options(options, kind)
        assert isinstance(popts, BatchOptions)
        files, problems = plan_transform_files(src, popts, report)
        report.objects += report.counts.get("transform_files", 0)
        problem_rows = manifest_problem_rejects(problems)
        groups = pack_transform_files(src, files, options.fetch_concurrency, spark_options.task_bytes)

    with run:
        for o in labels:
            # Rejects of every label hour read are replaced, so a fixed input clears old rejects.
            run.rejects.touch((None, None, None if o.hour is None else int(o.hour.timestamp()) // 3600))
        check_sagemaker(options, rows_kind, raw, source)
        table = "merged" if rows_kind == "realtime" else "merged_batch"
        data = run.writer(table, time_column="inference_time", dynamic=True)
        writers: dict[str, Any] = {"data": data, "rejects": run.rejects}
        if options.sagemaker_format:
            writers["sagemaker"] = run.track(
                merged_writer(run.out, run_id=run.run_id, kind=rows_kind, schedule_name=options.schedule_name)
            )

        def context(job: str, job_source: str) -> JobContext:
            assert data.spec is not None and run.rejects.spec is not None  # tables' writers
            return JobContext(
                job=job,
                source=job_source,
                dest=dest,
                run_id=run.run_id,
                options=options,
                data_spec=data.spec,
                rejects_spec=run.rejects.spec,
                dynamic=True,
            )

        t1 = time.perf_counter()
        label_plan = pack_capture_objects(labels, spark_options.task_bytes)
        planned = _tasks(run, [*label_plan, *groups])  # one call: every task's file id distinct
        label_tasks, pred_tasks = planned[: len(label_plan)], planned[len(label_plan) :]
        with ThreadPoolExecutor(max_workers=2) as pool:
            # Two Spark jobs at once (Spark schedules concurrent jobs): labels and predictions side by side.
            label_job = pool.submit(run_tasks, spark, context("merge-labels", ground_truth), label_tasks)
            pred_job = pool.submit(run_tasks, spark, context(f"merge-{kind}", source), pred_tasks)
            label_results, pred_results = label_job.result(), pred_job.result()
        label_files = _taken_in(run, label_results, label_tasks, writers)
        if kind == "batch":
            report.add(manifest_problem_counts(problem_rows))
            run.rejects.write(problem_rows)  # manifest problems are found on the driver: written there
        pred_files = _taken_in(run, pred_results, pred_tasks, writers)
        n_tasks = len(label_tasks) + len(pred_tasks)

        counts = report.counts
        counts["labels"] = sum(int(f["rows"]) for f in label_files if f["table"] == "labels")
        n_predictions = sum(int(f["rows"]) for f in pred_files if f["table"] == "keys")
        shuffle = spark_options.shuffle_partitions or max(spark.sparkContext.defaultParallelism, n_tasks)
        previous = spark.conf.get("spark.sql.shuffle.partitions")
        spark.conf.set("spark.sql.shuffle.partitions", str(shuffle))
        try:
            # The join's part files are named apart from the dataset's and from this run's other tasks'.
            taken = committed_names(run.out) | {f"part-{t.file_id}-0.parquet" for t in [*label_tasks, *pred_tasks]}
            ctx = context("merge-join", source)
            joined = _join(spark, run, ctx, label_files, pred_files, writers, shuffle, taken, raw=raw, kind=rows_kind)
        finally:
            spark.conf.set("spark.sql.shuffle.partitions", previous)
        n_tasks += joined
        counts["unmatched_predictions"] = counts["predictions"] - counts["matched"]
        if counts["predictions"] != n_predictions:
            # Never expected (every segment has a marker row): a merge short of rows must not commit.
            raise SinkError(f"spark joined {counts['predictions']} of {n_predictions} predictions", uri=dest)
        report.options["executor"] = _executor_info(spark, n_tasks, time.perf_counter() - t1)
        say_if_nothing_matched(report, gt, options)
        if options.require_data and not counts["predictions"]:
            raise NoDataError(f"no predictions in the window under {source}")
        return run.commit(
            data,
            empty_message="the window held no labels and no predictions (nothing to write)",
            no_data_error=f"no predictions in the window under {source}",
        )
