"""The capture-engine jobs on Apache Spark: the same kernels in `mapInArrow`, the same dataset and commit.

Listing and planning run on the driver as they do locally; the plan (inputs bin-packed into tasks of
`SparkOptions.task_bytes`) becomes a DataFrame of tasks; `mapInArrow` runs the engine's fetch and decode
kernels on the executors, reading through fsspec (local paths, ``s3://``, every storage option), and each
task writes its part files under the run's ``_temporary/`` folder; the driver adopts the files of the
attempts Spark kept and commits them with the engine's own protocol (partitions replaced, manifest,
`_SUCCESS` last, the counts the executors sent back). Readers return Spark DataFrames of the same rows.

pyspark is imported only inside these functions, so ``import engine.spark`` works without it.
"""

from engine.spark.driver import SparkOptions
from engine.spark.jobs import run_batch, run_realtime
from engine.spark.merge import run_merge
from engine.spark.readers import read_batch, read_capture
from engine.spark.session import get_session

__all__ = ["SparkOptions", "get_session", "read_batch", "read_capture", "run_batch", "run_merge", "run_realtime"]
