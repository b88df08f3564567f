"""Readers returning a Spark DataFrame: the capture or batch transform rows, decoded on the executors.

The same plan and kernels as the jobs, without a sink: each task yields its rows (the tables' fixed
schemas from ``schemas/tables.json``, as Spark types) and drops its rejects with a warning in the
executor's log, as `engine.read_capture` does in the caller's. Decoded payload columns differ per
(endpoint, variant) and one DataFrame has one schema, so decoded records are read from a dataset a job
wrote (``spark.read.option("mergeSchema", "true").parquet(DEST)``); see the README.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import pyarrow as pa

from engine.errors import OptionsError
from engine.jobs.plan import decode_objects, decode_transform_files, pack_capture_objects, pack_transform_files
from engine.spark._kernels import (
    BatchOptions,
    RealtimeOptions,
    RunReport,
    capture_schema,
    capture_units,
    list_capture_objects,
    open_location,
    plan_transform_files,
    table_spec,
    transform_units,
)
from engine.spark.driver import SparkOptions
from engine.spark.executor import TASK_SCHEMA

__all__ = ["read_batch", "read_capture", "spark_type"]

logger = logging.getLogger(__name__)


def spark_type(t: pa.DataType) -> Any:
    """The Spark type of an Arrow column type of the engine's tables."""
    from pyspark.sql import types as T

    if pa.types.is_timestamp(t):
        return T.TimestampType()
    simple = {
        pa.string(): T.StringType(),
        pa.int64(): T.LongType(),
        pa.int32(): T.IntegerType(),
        pa.float64(): T.DoubleType(),
        pa.bool_(): T.BooleanType(),
        pa.binary(): T.BinaryType(),
    }
    return simple[t]


def _struct(schema: pa.Schema) -> Any:
    from pyspark.sql import types as T

    return T.StructType([T.StructField(f.name, spark_type(f.type), nullable=True) for f in schema])


def _arrow_out(schema: pa.Schema) -> pa.Schema:
    # What Spark's Arrow reader takes: microsecond UTC timestamps, every column nullable, in declared order.
    return pa.schema(
        [pa.field(f.name, f.type if not pa.types.is_timestamp(f.type) else pa.timestamp("us", "UTC")) for f in schema]
    )


def _conform(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    return pa.RecordBatch.from_arrays([batch.column(f.name).cast(f.type) for f in schema], schema=schema)


def _frame(
    spark: Any, groups: list[str], fn: Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]], schema: pa.Schema
) -> Any:
    from engine.spark.driver import map_in_arrow, spark_schema

    rows = [(i, "", 0, text) for i, text in enumerate(groups)]
    if not rows:
        return spark.createDataFrame([], _struct(schema))
    frame = spark.createDataFrame(spark.sparkContext.parallelize(rows, len(rows)), spark_schema(TASK_SCHEMA))
    return map_in_arrow(frame, fn, _struct(schema))


def _task_rows(
    source: str, options: RealtimeOptions | BatchOptions, schema: pa.Schema, units: Callable[..., Iterator[Any]]
) -> Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]]:
    """The mapInArrow function of a reader: each task row's inputs through `units`, rejects to the log."""

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        loc = open_location(source, options.storage_options, connections=options.fetch_concurrency)
        for batch in batches:
            for row in batch.to_pylist():
                report = RunReport(command="read", source=source, dest=None, options={})
                for d in units(loc, row["inputs"], report):
                    if d.rejects.num_rows:
                        logger.warning("%d records rejected in %s", d.rejects.num_rows, source)
                    yield from (_conform(b, schema) for b in d.outputs() if b.num_rows)

    return run


def read_capture(
    spark: Any, source: str, *, options: RealtimeOptions | None = None, spark_options: SparkOptions | None = None
) -> Any:
    """The capture events under `source` as a Spark DataFrame (the columns of `engine.read_capture`).

    Listing happens now, on the driver; decoding when the DataFrame is computed, on the executors.

    Raises:
        SourceError: the source does not exist or cannot be listed.
        OptionsError: `options.decode` is set (decoded columns vary; write a dataset with `run_realtime`).
    """
    options = options or RealtimeOptions()
    spark_options = spark_options or SparkOptions()
    if options.decode:
        raise OptionsError(
            "read_capture reads one schema; decoded payload columns vary: write them with engine.spark.run_realtime"
        )
    src = open_location(source, options.storage_options, connections=options.fetch_concurrency)
    objects = list_capture_objects(src, hours=options.window_hours(), concurrency=options.fetch_concurrency)
    groups = [inputs for _, inputs in pack_capture_objects(objects, spark_options.task_bytes)]
    schema = _arrow_out(capture_schema())
    one = replace(options, workers=1)

    def units(loc: Any, inputs: str, report: RunReport) -> Iterator[Any]:
        return capture_units(loc, decode_objects(inputs), one, report)

    return _frame(spark, groups, _task_rows(source, one, schema, units), schema)


def read_batch(
    spark: Any, source: str, *, options: BatchOptions | None = None, spark_options: SparkOptions | None = None
) -> Any:
    """The batch transform records under `source` as a Spark DataFrame (the columns of `engine.read_batch`).

    Manifest problems are logged on the driver; rejected records in the executors' logs.
    """
    options = options or BatchOptions()
    spark_options = spark_options or SparkOptions()
    if options.decode:
        options = BatchOptions(**{**options.__dict__, "decode": False, "columns": None})
    loc = open_location(source, options.storage_options, connections=options.fetch_concurrency)
    files, problems = plan_transform_files(
        loc, options, RunReport(command="read", source=source, dest=None, options={})
    )
    if problems:
        logger.warning("%d manifest entries rejected under %s", len(problems), source)
    packed = pack_transform_files(loc, files, options.fetch_concurrency, spark_options.task_bytes)
    groups = [inputs for _, inputs in packed]
    schema = _arrow_out(table_spec("batch").schema)

    one = replace(options, workers=1)

    def units(loc: Any, inputs: str, report: RunReport) -> Iterator[Any]:
        return transform_units(loc, decode_transform_files(inputs), one, report)

    return _frame(spark, groups, _task_rows(source, one, schema, units), schema)
