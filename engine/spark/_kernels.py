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
from engine.jobs.batch import _account as account_batch_unit
from engine.jobs.batch import _manifests as plan_transform_files
from engine.jobs.batch import _problem_rejects as manifest_problem_rejects
from engine.jobs.realtime import _decoded_units as decoded_capture_units
from engine.jobs.realtime import plan_capture, refuse_if_not_capture, replace_read_hours
from engine.jobs.run import JobRun
from engine.kernels.batch_records import _Decoder as BatchDecoder
from engine.kernels.batch_records import sniff as sniff_transform_unit
from engine.kernels.partition import PartitionKey
from engine.options import BatchOptions, JobOptions, MergeOptions, RealtimeOptions, check_location, parse_size
from engine.report import RunReport
from engine.sinks.dataset import TEMPORARY, DatasetWriter
from engine.sinks.manifest import read_manifest
from engine.sources.manifests import TransformFile
from engine.sources.transform import iter_units as transform_units
from engine.tables import TableSpec, capture_schema, table_spec

__all__ = [
    "TEMPORARY",
    "BatchDecoder",
    "BatchOptions",
    "CaptureObject",
    "DatasetWriter",
    "JobOptions",
    "JobRun",
    "Location",
    "MergeOptions",
    "PartitionKey",
    "RealtimeOptions",
    "RunReport",
    "TableSpec",
    "TransformFile",
    "account_batch_unit",
    "account_capture_unit",
    "adopt_files",
    "capture_schema",
    "check_location",
    "committed_names",
    "decoded_capture_units",
    "interrupts",
    "list_capture_objects",
    "looks_like",
    "looks_like_object",
    "manifest_problem_rejects",
    "open_location",
    "parse_size",
    "plan_capture",
    "plan_transform_files",
    "redact",
    "refuse_if_not_capture",
    "replace_read_hours",
    "sniff_transform_unit",
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
    schema per table, manifest, `_SUCCESS`.
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


def account_capture_unit(report: RunReport, unit: Any) -> None:
    """A capture unit's counts into the run's report: the one accounting path (`RunReport.add`)."""
    report.add(unit.counts())
