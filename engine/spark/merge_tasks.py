"""The merge's work on the executors: labels and predictions decoded into side files, then the join written.

Stage 1 (`merge_body`, one task per group of objects, like realtime and batch): a label task decodes its
ground-truth objects with `iter_labels` into a Parquet side file of `LABEL_SIDE` rows, numbered in read order
(task, then row) so that the driver's window can keep the latest label of a key exactly as the local job does;
a prediction task decodes its capture objects or transform files with the realtime/batch task code into Arrow
IPC segments (one per schema: decoded records vary by endpoint and variant), plus a Parquet file of their
`KEYS` (merge key, record_index, segment). Rejects go to the task's rejects writer, as in the other jobs.

Stage 2 (`join_function`): Spark has deduplicated the labels and joined them to the keys; each segment comes
with the distinct labels its keys matched. The segment's rows are joined to them with the local job's own
`LabelIndex` and `_Merger.join` (the same label columns, label value per record_index, ``how``) and written by
the engine's `DatasetWriter` under the attempt's folder, for the driver to commit.
"""

from __future__ import annotations

import itertools
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import fields, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from engine.jobs.plan import decode_dataset_parts, decode_objects
from engine.spark._kernels import (
    COMPACT_LABELS,
    TIME_TYPE,
    BatchOptions,
    DatasetWriter,
    DuplicateCounter,
    JobOptions,
    LabelIndex,
    Location,
    MergedJson,
    MergeOptions,
    Merger,
    PartitionKey,
    RealtimeOptions,
    RunReport,
    iter_labels,
    join_key,
    key_hash,
    merged_writer,
    open_location,
    scan_dataset,
    written_files,
)
from engine.spark.executor import JobContext, SideFile, TaskBody, batch_task, realtime_task, run_attempt

__all__ = ["KEYS", "LABEL_SIDE", "SEGMENT_BITS", "join_function", "merge_body", "prediction_options", "read_side"]

SEGMENT_BITS = 20  # a segment's id: task << SEGMENT_BITS | segment of that task
LABEL_SIDE = pa.schema(
    [
        ("event_id", pa.string()),
        ("label_data", pa.string()),
        ("label_encoding", pa.string()),
        ("label_hour", pa.int64()),  # microseconds since the epoch: no time zone crosses Spark
        ("label_file", pa.string()),
        ("label_line", pa.int64()),
        ("_task", pa.int64()),
        ("_seq", pa.int64()),
    ]
)
KEYS = pa.schema([("key", pa.string()), ("record_index", pa.int64()), ("segment", pa.int64())])
Kind = Literal["realtime", "batch"]
_NO_KEY: PartitionKey = (None, None, None)  # side files belong to no partition
_NO_SCHEMA = pa.schema([])  # JSON Lines files have none


def prediction_options(options: MergeOptions, kind: str) -> RealtimeOptions | BatchOptions:
    """The options the local merge reads its prediction source with (`engine.sources.predictions`)."""
    common = {f.name: getattr(options, f.name) for f in fields(JobOptions)}
    if kind == "captures":
        return RealtimeOptions(**common)
    return BatchOptions(**common, prefix_map=dict(options.prefix_map))


def _make_folder(folder: Location) -> None:
    if folder.is_local:  # object stores have no folders to make
        folder.fs.makedirs(folder.root, exist_ok=True)


class _ParquetSide:
    """One Parquet side file of a fixed schema under a task's folder, opened at the first batch."""

    def __init__(self, folder: Location, name: str, schema: pa.Schema) -> None:
        self.folder, self.name, self.schema = folder, name, schema
        self.path = folder.join(name)
        self.rows = 0
        self._file: Any = None
        self._writer: pq.ParquetWriter | None = None

    def write(self, batch: pa.RecordBatch) -> None:
        if not batch.num_rows:
            return
        if self._writer is None:
            _make_folder(self.folder)
            self._file = self.folder.fs.open(self.path, "wb")
            self._writer = pq.ParquetWriter(self._file, self.schema, compression="lz4")
        self._writer.write_batch(batch)
        self.rows += batch.num_rows

    def close(self) -> list[SideFile]:
        if self._writer is None:
            return []
        self._writer.close()
        self._file.close()
        return [(self.name.split("-")[0], _NO_KEY, self.path, self.rows, self.schema)]


class _PredictionSide:
    """Prediction rows as Arrow IPC segments (a new one when the schema changes) and their keys."""

    def __init__(self, folder: Location, task: int) -> None:
        self.folder, self.task = folder, task
        self.keys = _ParquetSide(folder, "keys-side.parquet", KEYS)
        self.segments: list[SideFile] = []
        self._open: tuple[pa.Schema, Any, Any, str] | None = None
        self._rows = 0

    def write(self, batch: pa.RecordBatch) -> None:
        if not batch.num_rows:
            return
        if self._open is None or self._open[0] != batch.schema:
            self._close_segment()
            path = self.folder.join(f"predictions-{len(self.segments):05d}.arrow")
            _make_folder(self.folder)
            sink = self.folder.fs.open(path, "wb")
            self._open = (batch.schema, sink, pa.ipc.new_file(sink, batch.schema), path)
        segment = self.task << SEGMENT_BITS | len(self.segments)
        self._open[2].write_batch(batch)
        self._rows += batch.num_rows
        names = batch.schema.names
        ri = batch.column("record_index").cast(pa.int64()) if "record_index" in names else pa.nulls(batch.num_rows)
        self.keys.write(
            pa.RecordBatch.from_arrays(
                [join_key(batch), ri.cast(pa.int64()), pa.repeat(pa.scalar(segment, pa.int64()), batch.num_rows)],
                schema=KEYS,
            )
        )

    def _close_segment(self) -> None:
        if self._open is None:
            return
        schema, sink, writer, path = self._open
        writer.close()
        sink.close()
        # The file's name numbers the segment within its task: the driver derives its id from both.
        self.segments.append(("predictions", _NO_KEY, path, self._rows, schema))
        self._open, self._rows = None, 0

    def close(self) -> list[SideFile]:
        self._close_segment()
        return [*self.segments, *self.keys.close()]


def merge_body(ctx: JobContext, task: int, inputs: str) -> TaskBody:
    """The stage-1 body of a merge task (`ctx.job`: merge-labels, merge-captures or merge-batch)."""
    options = ctx.options
    assert isinstance(options, MergeOptions)

    def labels(report: RunReport, data: DatasetWriter, rejects: DatasetWriter, folder: Location) -> list[SideFile]:
        src = open_location(ctx.source, options.storage_options, connections=options.fetch_concurrency)
        side = _ParquetSide(folder, "labels-side.parquet", LABEL_SIDE)
        one = replace(options, workers=1)  # Spark's cores are the parallelism
        seq = 0
        for rows in iter_labels(src, decode_objects(inputs), one, report, rejects.write):
            n = rows.num_rows
            cols = {name: rows.column(name) for name in rows.schema.names}
            cols["label_file"] = cols["label_file"].cast(pa.string())
            cols["label_hour"] = cols["label_hour"].cast(TIME_TYPE).cast(pa.int64())
            cols["_task"] = pa.repeat(pa.scalar(task, pa.int64()), n)
            cols["_seq"] = pa.array(np.arange(seq, seq + n, dtype=np.int64))
            seq += n
            side.write(pa.RecordBatch.from_arrays([cols[f.name].cast(f.type) for f in LABEL_SIDE], schema=LABEL_SIDE))
        return side.close()

    def predictions(report: RunReport, data: DatasetWriter, rejects: DatasetWriter, folder: Location) -> list[SideFile]:
        kind = ctx.job.removeprefix("merge-")
        side = _PredictionSide(folder, task)
        try:
            if kind == "predictions":
                # A dataset an earlier run decoded: its row groups read by the local scan, window applied. The
                # driver counted its files when it planned them (as the local job counts them when listing).
                src = open_location(ctx.source, options.storage_options, connections=options.fetch_concurrency)
                t0 = time.perf_counter()
                for batch in scan_dataset(src, decode_dataset_parts(inputs), options):
                    side.write(batch)
                report.add_time("predictions", time.perf_counter() - t0)
            else:
                decode = realtime_task if kind == "captures" else batch_task
                decode(prediction_options(options, kind), ctx.source, inputs, report, side.write, rejects.write)
        finally:
            files = side.close()
        return files

    return labels if ctx.job == "merge-labels" else predictions


def read_side(location: Location, path: str) -> Iterator[pa.RecordBatch]:
    """The batches of a side file (Parquet or Arrow IPC) through the engine's storage seam."""
    with location.fs.open(path, "rb") as f:
        if path.endswith(".arrow"):
            reader = pa.ipc.open_file(f)
            for i in range(reader.num_record_batches):
                yield reader.get_batch(i)
        else:
            yield from pq.ParquetFile(f).iter_batches()


def _label_index(labels: pa.Table) -> LabelIndex:
    """A `LabelIndex` of distinct labels (Spark kept one per key): the compact columns the local store builds."""
    files = pc.dictionary_encode(labels.column("label_file").combine_chunks())
    keys = labels.column("event_id").combine_chunks().cast(pa.string())
    columns: dict[str, list[pa.Array]] = {
        "_hash": [pa.array(key_hash(keys), pa.uint64())],
        "event_id": [keys],
        "label_data": [labels.column("label_data").combine_chunks().cast(pa.string())],
        "label_encoding": [labels.column("label_encoding").combine_chunks().cast(pa.string())],
        "label_hour": [labels.column("label_hour").combine_chunks().cast(pa.int64()).cast(TIME_TYPE)],
        "file_id": [files.indices.cast(pa.int32())],
        "label_line": [labels.column("label_line").combine_chunks().cast(pa.int64())],
    }
    assert list(columns) == COMPACT_LABELS.names
    return LabelIndex(columns, files.dictionary.cast(pa.string()))


def join_function(
    ctx: JobContext, segments: dict[int, tuple[str, str]], *, raw: bool, kind: Kind
) -> Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]]:
    """The stage-2 mapInArrow function: rows (segment, labels...) sorted by segment in, result rows out.

    Every segment has at least one row (a marker with a null event_id), so each is joined and written once
    per attempt; `segments` maps a segment to its part files' id and its prediction file. `raw` and `kind`
    are the predictions' (raw bodies or decoded records; real-time or batch rows, for SageMaker's layout).
    """
    options = ctx.options
    assert isinstance(options, MergeOptions)

    def join(segment: int, labels: pa.Table) -> pa.RecordBatch:
        file_id, path = segments[segment]

        def body(report: RunReport, data: DatasetWriter, rejects: DatasetWriter, folder: Location) -> list[SideFile]:
            src = open_location(ctx.dest, options.storage_options, connections=options.fetch_concurrency)
            t0 = time.perf_counter()
            index = _label_index(labels.filter(pc.is_valid(labels.column("event_id"))))
            report.add_time("index", time.perf_counter() - t0)
            # SageMaker's records with the same writer as locally, into this attempt's folder; the driver commits.
            jsonl = None
            if options.sagemaker_format:
                writer = merged_writer(folder, run_id=file_id, kind=kind, schedule_name=options.schedule_name)
                jsonl = MergedJson(kind, writer)
            with tempfile.TemporaryDirectory(prefix="capture-engine-merge-") as tmp:
                merger = Merger(options, report, data, jsonl, DuplicateCounter(Path(tmp)), raw=raw)
                predictions = matched = 0
                for batch in read_side(src, path):
                    joined = merger.join(index, batch)
                    predictions += joined.rows
                    matched += joined.matched
                    if joined.merged is not None:
                        data.write(joined.merged)
                        if jsonl is not None:
                            jsonl.write(joined.rendered)
            report.counts.update(predictions=predictions, matched=matched)
            if jsonl is None:
                return []
            jsonl.writer.close()
            return [("sagemaker", key, p, rows, _NO_SCHEMA) for key, p, rows, _ in written_files(jsonl.writer)]

        return run_attempt(ctx, segment, file_id, body)

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        pending: list[pa.RecordBatch] = []
        current: int | None = None
        for batch in batches:
            seg = np.asarray(batch.column("segment").to_numpy(zero_copy_only=False), dtype=np.int64)
            # The partition is sorted by segment: cut the batch where the segment changes.
            cuts = [0, *(np.flatnonzero(seg[1:] != seg[:-1]) + 1).tolist(), len(seg)]
            for lo, hi in itertools.pairwise(cuts):
                if hi == lo:
                    continue
                s = int(seg[lo])
                if current is not None and s != current:
                    yield join(current, pa.Table.from_batches(pending))
                    pending = []
                current = s
                pending.append(batch.slice(lo, hi - lo))
        if current is not None:
            yield join(current, pa.Table.from_batches(pending))

    return run
