"""The one place `engine.spark` reaches into the engine's internals: listing, kernels, sinks, commit, report.

Everything the Spark backend runs on the executors or commits on the driver is imported here and nowhere
else, so that a change of the engine's module layout is followed by changing this file only. The names on
the left are what `engine.spark` uses; the right-hand sides are today's homes.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from engine import interrupts
from engine.io.listing import CaptureObject, list_capture_objects, looks_like, looks_like_object
from engine.io.storage import Location, open_location, redact
from engine.jobs.batch import _problem_counts as manifest_problem_counts
from engine.jobs.batch import _problem_rejects as manifest_problem_rejects
from engine.jobs.batch import plan_transform_files
from engine.jobs.batch import run_batch as run_batch_job
from engine.jobs.labels import iter_labels
from engine.jobs.merge import _COUNTS as MERGE_COUNTS
from engine.jobs.merge import _check_sagemaker as check_sagemaker
from engine.jobs.merge import _Merger as Merger
from engine.jobs.merge import _one_source as one_prediction_source
from engine.jobs.merge import _say_if_nothing_matched as say_if_nothing_matched
from engine.jobs.pipelines import Sink, account, capture_units, deliver, transform_units
from engine.jobs.realtime import plan_capture
from engine.jobs.realtime import run_realtime as run_realtime_job
from engine.jobs.run import JobRun
from engine.jobs.spill import DuplicateCounter
from engine.kernels.join import _COMPACT as COMPACT_LABELS
from engine.kernels.join import LabelIndex, join_key, key_hash
from engine.kernels.partition import PartitionKey
from engine.options import BatchOptions, JobOptions, MergeOptions, RealtimeOptions, check_location, parse_size
from engine.report import RunReport
from engine.sinks.dataset import TEMPORARY, DatasetWriter
from engine.sinks.manifest import read_manifest
from engine.sinks.merged_jsonl import MergedJson, merged_writer
from engine.sources.labels import list_label_objects
from engine.sources.manifests import TransformFile
from engine.sources.predictions import DatasetPart, DatasetPlan, plan_dataset, scan_dataset
from engine.tables import TableSpec, capture_schema, table_spec
from engine.times import TIME_TYPE

__all__ = [
    "COMPACT_LABELS",
    "MERGE_COUNTS",
    "TEMPORARY",
    "TIME_TYPE",
    "BatchOptions",
    "CaptureObject",
    "DatasetPart",
    "DatasetPlan",
    "DatasetWriter",
    "DuplicateCounter",
    "JobOptions",
    "JobRun",
    "LabelIndex",
    "Location",
    "MergeOptions",
    "MergedJson",
    "Merger",
    "PartitionKey",
    "RealtimeOptions",
    "RunReport",
    "Sink",
    "TableSpec",
    "TransformFile",
    "account",
    "adopt_files",
    "capture_schema",
    "capture_units",
    "check_location",
    "check_sagemaker",
    "committed_names",
    "deliver",
    "interrupts",
    "iter_labels",
    "join_key",
    "key_hash",
    "list_capture_objects",
    "list_label_objects",
    "looks_like",
    "looks_like_object",
    "manifest_problem_counts",
    "manifest_problem_rejects",
    "merged_writer",
    "one_prediction_source",
    "open_location",
    "parse_size",
    "plan_capture",
    "plan_dataset",
    "plan_transform_files",
    "redact",
    "run_batch_job",
    "run_realtime_job",
    "say_if_nothing_matched",
    "scan_dataset",
    "table_spec",
    "transform_units",
    "written_files",
]


def written_files(writer: DatasetWriter) -> list[tuple[PartitionKey, str, int, pa.Schema]]:
    """After `writer.close()`: (partition key, temporary path, rows, schema) of every file it wrote."""
    return [
        (key, path, writer.file_rows.get(path, 0), writer.file_schemas[path])
        for key, part in writer.partitions.items()
        for path in part.files
    ]


def adopt_files(writer: DatasetWriter, key: PartitionKey, path: str, rows: int, schema: pa.Schema) -> None:
    """Make a file an executor wrote under the run's `_temporary/` one of `writer`'s, as if it had written it.

    The driver's `JobRun.commit` then treats it like a local file: partitions replaced, cut hours, one
    schema per table, manifest, `_SUCCESS` (merge's JSON Lines: their hour folders replaced).
    """
    part = writer._partition(key)
    part.files.append(path)
    part.rows += rows
    writer.rows += rows
    writer.file_rows[path] = rows
    writer.file_schemas[path] = schema


def committed_names(loc: Location) -> set[str]:
    """File names the dataset's manifest lists (a run's new names must differ from them)."""
    manifest: dict[str, Any] | None = read_manifest(loc)
    return {rel.rsplit("/", 1)[-1] for rel in (manifest or {}).get("files", {})}
