"""Ground truth streamed: the label objects of a label window decoded unit by unit (`read_ground_truth`).

The listing is `engine.sources.labels`, the decoder `engine.kernels.labels`; this module runs one over the other
on a bounded pool, in order, and adds every unit's counts to the report.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator

import pyarrow as pa

from engine.io.concurrency import ordered_map
from engine.io.fetch import Piece, fetch_threads, group_units, iter_pieces
from engine.io.listing import CaptureObject
from engine.io.storage import Location, open_location
from engine.kernels.labels import decode_labels, labels_schema
from engine.kernels.result import UnitResult
from engine.options import JobOptions, MergeOptions
from engine.report import RunReport
from engine.sources.labels import label_window, list_label_objects

__all__ = ["iter_labels", "read_ground_truth"]

logger = logging.getLogger(__name__)


def iter_labels(
    loc: Location,
    objects: list[CaptureObject],
    options: JobOptions,
    report: RunReport,
    on_rejects: Callable[[pa.RecordBatch], None],
) -> Iterator[pa.RecordBatch]:
    """Fetch and decode `objects`, `workers` units at a time, in order; counts go to `report`.

    Rows have the "labels" columns, label_file dictionary-encoded (`read_ground_truth` gives it as strings).
    """
    concurrency = fetch_threads(loc, options.fetch_concurrency)
    pieces = iter_pieces(
        loc, objects, block=options.unit_bytes, concurrency=concurrency, max_line_bytes=options.max_line_bytes
    )

    def decode(unit: list[Piece]) -> UnitResult:
        t0 = time.perf_counter()
        d = decode_labels(unit, max_line_bytes=options.max_line_bytes)
        report.add_time("labels", time.perf_counter() - t0)
        return d

    units = group_units(pieces, options.unit_bytes)
    for d in ordered_map(decode, units, workers=options.workers, lookahead=options.workers + 1):
        report.add(d.counts())
        for rejected in d.reject_batches():
            on_rejects(rejected)
        if d.rows.num_rows:
            yield d.rows


def read_ground_truth(
    source: str,
    *,
    options: JobOptions | None = None,
    report: RunReport | None = None,
    on_rejects: Callable[[pa.RecordBatch], None] | None = None,
) -> pa.RecordBatchReader:
    """Stream the ground-truth labels under `source` as a `pyarrow.RecordBatchReader` ("labels" table columns).

    Args:
        source: the ground-truth root (the folder holding ``yyyy/``), any level below it, or one object, as a
            local path or fsspec URL.
        options: which hour folders to read (see `label_window`: with `MergeOptions` the prediction window
            widened by `label_delay`), concurrency and limits.
        report: receives the counts (objects, records, rows, rejects by reason) as the reader is consumed, so
            ``records = events_written + rejected`` can be checked.
        on_rejects: called with each batch of rejected records (``_rejects`` columns); by default rejects
            are counted in the log only.

    Raises:
        SourceError: the source does not exist or cannot be read.
    """
    options = options or MergeOptions()
    loc = open_location(source, options.storage_options, connections=options.fetch_concurrency)
    objects = list_label_objects(loc, hours=label_window(options), concurrency=options.fetch_concurrency)
    report = report or RunReport(command="read", source=source, dest=None, options={})
    report.objects += len(objects)
    report.bytes_total += sum(o.size for o in objects)

    def rejected(batch: pa.RecordBatch) -> None:
        if on_rejects is not None:
            on_rejects(batch)
        else:
            logger.warning("%d ground-truth records rejected in %s", batch.num_rows, source)

    schema = labels_schema()

    def batches() -> Iterator[pa.RecordBatch]:
        for rows in iter_labels(loc, objects, options, report, rejected):
            yield rows.cast(schema)

    return pa.RecordBatchReader.from_batches(schema, batches())
