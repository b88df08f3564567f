"""The merge job: predictions joined with ground-truth labels into hour-partitioned Parquet.

    labels (label window)  -> decode -> LabelStore (in memory, or hash buckets spilled to local disk)
    predictions (window)   -> key = coalesce(inference_id, event_id) | inference_id -> probe the LabelIndex
                           -> merged rows -> hive Parquet (+ SageMaker's merged JSON Lines) -> commit

Duplicates: of several labels with one key the latest collected wins (by label hour folder, then object key
order, then line), the others are counted as `duplicate_labels`. Prediction rows sharing a key (and
record_index) with an earlier row are counted as `duplicate_prediction_keys`; each of them is merged.

Memory: the labels of the window in memory (about their JSON Lines size) when that is at most
`MergeOptions.join_memory` (256 MiB), else those of one hash bucket at a time, the predictions of both sides then
spilled by bucket to a local temporary directory; plus a few prediction batches in flight (read ahead, joining,
buffered for Parquet). Predictions never need to fit in memory: at 2M predictions x 1.8M labels the CLI peaks at
about 800 MB (about 950 MB with the SageMaker layout, whose JSON text is rendered on the join's threads).

The run report's counts: `records` are the input records this run decoded (ground-truth records, plus the
capture events with ``captures`` or the batch records with ``batch``; a Parquet dataset given as
``predictions`` was decoded by an earlier run), and ``records = events_written + rejected + out_of_window``
still holds, `events_written` being the records accepted. `rows_written` are merged rows. `counts` has
predictions, labels, duplicate_labels, matched, unmatched_predictions, unmatched_labels (distinct label keys
no prediction in the window matched) and duplicate_prediction_keys.
"""

from __future__ import annotations

import logging
import math
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa

from engine.errors import NoDataError, OptionsError
from engine.io.concurrency import ordered_map
from engine.io.storage import Location, open_location
from engine.jobs.labels import iter_labels
from engine.jobs.run import JobRun
from engine.jobs.spill import BucketSpill, DuplicateCounter, LabelStore
from engine.kernels.join import LabelIndex, join_key, key_hash
from engine.options import MergeOptions, check_location
from engine.report import RunReport
from engine.sinks.dataset import DatasetWriter
from engine.sinks.merged_jsonl import MergedJson, merged_writer, required_columns
from engine.sources.labels import list_label_objects
from engine.sources.predictions import Kind, Predictions, batch_predictions, capture_predictions, dataset_predictions

__all__ = ["iter_merge", "read_merge", "run_merge"]

logger = logging.getLogger(__name__)

# Labels take about their JSON Lines size in memory; a gzip object holds several times its size.
_GZIP_RATIO = 8
_COUNTS = (
    "predictions",
    "labels",
    "duplicate_labels",
    "matched",
    "unmatched_predictions",
    "unmatched_labels",
    "duplicate_prediction_keys",
)


@dataclass
class _Joined:
    """One prediction batch joined: the merged rows to write (None if none) and what the counts need."""

    merged: pa.RecordBatch | None
    rows: int
    matched: int
    hashes: np.ndarray
    record_index: pa.Array | None
    rendered: pa.RecordBatch | None = None  # SageMaker's records of the matched rows (sagemaker format)


class _Merger:
    """Joins prediction batches against a label index (in worker threads) and writes the merged rows (in one)."""

    def __init__(
        self,
        options: MergeOptions,
        report: RunReport,
        data: DatasetWriter | None,
        jsonl: MergedJson | None,
        duplicates: DuplicateCounter,
        *,
        raw: bool,
    ) -> None:
        self.options = options
        # Raw rows are whole bodies (a batch document may hold many instances): a label with several values
        # names no one value for them, so they get null as real-time rows do; decoded rows get their record's.
        self.raw = raw
        self.report = report
        self.counts = report.counts
        self.data = data
        self.jsonl = jsonl
        self.duplicates = duplicates

    def join(self, index: LabelIndex, batch: pa.RecordBatch) -> _Joined:
        """Probe and build the merged rows; thread-safe (the index is only read, its matched marks only set)."""
        t0 = time.perf_counter()
        keys = join_key(batch)
        hashes = key_hash(keys)
        record_index = batch.column("record_index") if "record_index" in batch.schema.names else None
        lidx = index.probe(keys, hashes)
        found = lidx >= 0
        matched = int(np.count_nonzero(found))
        joined = _Joined(None, batch.num_rows, matched, hashes, record_index)
        if self.options.how == "inner" and matched < batch.num_rows:
            if not matched:
                self.report.add_time("join", time.perf_counter() - t0)
                return joined
            mask = pa.array(found)
            batch, lidx = batch.filter(mask), lidx[found]
        rows_index = batch.column("record_index") if record_index is not None and not self.raw else None
        joined.merged = _attach(batch, index.columns(lidx, rows_index))
        t1 = time.perf_counter()
        self.report.add_time("join", t1 - t0)
        if self.jsonl is not None:
            joined.rendered = self.jsonl.render(joined.merged)
            self.report.add_time("render", time.perf_counter() - t1)
        return joined

    def write(self, joined: _Joined) -> None:
        t0 = time.perf_counter()
        self.counts["predictions"] += joined.rows
        self.counts["matched"] += joined.matched
        self.counts["unmatched_predictions"] += joined.rows - joined.matched
        self.duplicates.add(joined.hashes, joined.record_index)
        if joined.merged is not None and self.data is not None:
            self.data.write(joined.merged)
            if self.jsonl is not None:
                self.jsonl.write(joined.rendered)
        self.report.add_time("write", time.perf_counter() - t0)

    def run(self, index: LabelIndex, batches: Iterable[pa.RecordBatch]) -> None:
        """Join `batches` on `workers` threads, in order, and write them here: joining overlaps writing."""
        workers = self.options.workers
        for joined in ordered_map(lambda b: self.join(index, b), batches, workers=workers, lookahead=workers):
            self.write(joined)
        self.count_labels(index)

    def stream(self, index: LabelIndex, batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        """As `run`, but yield the merged rows instead of writing them (`iter_merge`)."""
        workers = self.options.workers
        for joined in ordered_map(lambda b: self.join(index, b), batches, workers=workers, lookahead=workers):
            self.write(joined)  # the counts; there is no writer
            if joined.merged is not None and joined.merged.num_rows:
                yield joined.merged
        self.count_labels(index)

    def count_labels(self, index: LabelIndex) -> None:
        self.counts["labels"] += index.labels
        self.counts["duplicate_labels"] += index.duplicates
        self.counts["unmatched_labels"] += index.unmatched()


def _attach(batch: pa.RecordBatch, labels: dict[str, pa.Array]) -> pa.RecordBatch:
    """Prediction columns, then the ground-truth columns (prefixed ``ground_truth.`` if a name is taken)."""
    names = list(batch.schema.names)
    arrays = list(batch.columns)
    for name, array in labels.items():
        names.append(f"ground_truth.{name}" if name in batch.schema.names else name)
        arrays.append(array)
    return pa.RecordBatch.from_arrays(arrays, names=names)


def _timed(batches: Iterator[pa.RecordBatch], report: RunReport, stage: str) -> Iterator[pa.RecordBatch]:
    """Charge the time spent producing each batch to `stage`."""
    while True:
        t0 = time.perf_counter()
        batch = next(batches, None)
        report.add_time(stage, time.perf_counter() - t0)
        if batch is None:
            return
        yield batch


def _one_source(captures: str | None, batch: str | None, predictions: str | None, options: MergeOptions) -> str:
    if options.prefix_map and batch is None:
        raise OptionsError("prefix_map (--prefix-map) rewrites batch manifest prefixes: it needs batch (--batch)")
    given = {"captures": captures, "batch": batch, "predictions": predictions}
    chosen = [name for name, value in given.items() if value is not None]
    if len(chosen) != 1:
        got = " and ".join(chosen) or "none"
        raise OptionsError(f"give exactly one prediction source (captures, batch or predictions), got {got}")
    return check_location(chosen[0], given[chosen[0]])


def _reporting(
    batches: Iterator[pa.RecordBatch], report: RunReport, progress: Callable[[RunReport, int], None]
) -> Iterator[pa.RecordBatch]:
    for batch in batches:
        progress(report, report.objects)
        yield batch


def _predictions(
    captures: str | None,
    batch: str | None,
    predictions: str | None,
    options: MergeOptions,
    report: RunReport,
    on_rejects: Callable[[pa.RecordBatch], None],
) -> Predictions:
    """The one prediction source given, its counts into `report` and its rejects to `on_rejects`."""
    if captures is not None:
        return capture_predictions(captures, options, report, on_rejects)
    if batch is not None:
        return batch_predictions(batch, options, report, on_rejects, prefix_map=options.prefix_map)
    assert predictions is not None
    return dataset_predictions(predictions, options, report)


def _check_sagemaker(options: MergeOptions, kind: Kind, raw: bool, source: str) -> None:
    """SageMaker's records are built from the raw bodies: decoded predictions cannot be rendered."""
    if options.sagemaker_format and not raw:
        raise OptionsError(
            f"the sagemaker format needs raw predictions (with {', '.join(required_columns(kind))}); "
            f"{source} holds decoded payload records"
        )


def _say_if_nothing_matched(report: RunReport, gt: Location, options: MergeOptions) -> None:
    """A merge that matched no prediction says so, and names label folders just outside its label window."""
    predictions, matched = report.counts.get("predictions", 0), report.counts.get("matched", 0)
    if not predictions or matched:
        return
    message = f"0 of {predictions:,} predictions matched a label ({report.counts.get('labels', 0):,} labels read)"
    first, last = options.label_hours() or (None, None)
    if first is not None and last is not None:  # a one-sided window has no outside on its open side
        day = timedelta(hours=24)
        nearby = [
            o
            for o in list_label_objects(gt, hours=(first - day, last + day), concurrency=options.fetch_concurrency)
            if o.hour is not None and not first <= o.hour <= last
        ]
        if nearby:
            hours_seen = sorted({f"{o.hour:%Y/%m/%d/%H}" for o in nearby if o.hour is not None})
            message += (
                f"; {len(nearby)} label objects lie within a day outside the label window "
                f"({first:%Y/%m/%d/%H}..{last:%Y/%m/%d/%H}), in {', '.join(hours_seen[:6])}"
                f"{' ...' if len(hours_seen) > 6 else ''}: widen --label-lead / --label-delay"
            )
    logger.warning("%s", message)
    report.notes["warnings"] = [*report.notes.get("warnings", []), message]


def run_merge(
    *,
    ground_truth: str,
    dest: str,
    captures: str | None = None,
    batch: str | None = None,
    predictions: str | None = None,
    options: MergeOptions | None = None,
    command: str = "merge",
    progress: Callable[[RunReport, int], None] | None = None,
) -> RunReport:
    """Merge predictions with ground-truth labels into hive-partitioned Parquet under `dest`.

    Give exactly one prediction source: `captures` (real-time capture, decoded by this run; with
    `options.decode` one row per payload record), `batch` (batch transform capture) or `predictions` (a
    dataset written by ``realtime`` or ``batch``, raw or decoded). Labels are read from `ground_truth`'s hour
    folders in the label window (see `MergeOptions`).

    Output: the prediction rows (``how="inner"``: those with a label) plus label_data, label_encoding, label,
    label_value, label_file, label_hour and label_line; real-time rows under
    ``endpoint=/variant=/year=/month=/day=/hour=``, batch rows under ``year=/month=/day=/hour=`` (UTC hour of
    inference_time). With `options.sagemaker_format` also ``DEST/_sagemaker/merge/...`` in SageMaker's merged
    layout.

    Returns the run report (also written as ``DEST/_SUCCESS``); `counts` has the join's figures. `progress`,
    if given, is called with the report as labels and predictions are read.

    Raises:
        OptionsError: not exactly one prediction source, or the SageMaker format with decoded predictions.
        SourceError: a source does not exist or cannot be read.
        SinkError: the destination cannot be written.
        RejectLimitError: rejects exceed `options.max_reject_ratio` (rejects are kept, nothing else).
        NoDataError: no predictions in the window and `options.require_data` is set.
    """
    options = options or MergeOptions()
    source = _one_source(captures, batch, predictions, options)
    check_location("ground_truth", ground_truth)
    check_location("dest", dest)
    # Capture rejects are partitioned by endpoint; without capture, label rejects need no endpoint level.
    run = JobRun(dest, command=command, source=source, options=options, endpoint_rejects=captures is not None)
    report = run.report
    report.notes["ground_truth"] = [ground_truth]
    report.counts.update(dict.fromkeys(_COUNTS, 0))

    t0 = time.perf_counter()
    gt = open_location(ground_truth, options.storage_options, connections=options.fetch_concurrency)
    objects = list_label_objects(gt, hours=options.label_hours(), concurrency=options.fetch_concurrency)
    report.add_time("list", time.perf_counter() - t0)
    report.objects += len(objects)
    report.bytes_total += sum(o.size for o in objects)
    expected = sum(o.size * (_GZIP_RATIO if o.path.endswith(".gz") else 1) for o in objects)
    buckets = max(1, math.ceil(expected / options.join_memory))
    logger.info(
        "found %d ground-truth objects (%d bytes) under %s; joining in %d bucket(s)",
        len(objects),
        sum(o.size for o in objects),
        ground_truth,
        buckets,
    )

    with run, tempfile.TemporaryDirectory(prefix="capture-engine-merge-") as tmp:
        spill_dir = Path(tmp)
        for o in objects:
            # Rejects of every label hour read are replaced, so a fixed input clears old rejects.
            run.rejects.touch((None, None, None if o.hour is None else int(o.hour.timestamp()) // 3600))
        store = LabelStore(buckets, spill_dir)
        for labels in iter_labels(gt, objects, options, report, run.rejects.write):
            store.add(labels)
            if progress is not None:
                progress(report, report.objects)
        store.close()

        preds = _predictions(captures, batch, predictions, options, report, run.rejects.write)
        _check_sagemaker(options, preds.kind, preds.raw, source)
        table = "merged" if preds.kind == "realtime" else "merged_batch"
        data = run.writer(table, time_column="inference_time", dynamic=True)
        jsonl = None
        if options.sagemaker_format:
            writer = merged_writer(run.out, run_id=run.run_id, kind=preds.kind, schedule_name=options.schedule_name)
            jsonl = MergedJson(preds.kind, run.track(writer))
        merger = _Merger(options, report, data, jsonl, DuplicateCounter(spill_dir), raw=preds.raw)
        rows = _timed(preds.batches, report, "predictions")
        if progress is not None:
            rows = _reporting(rows, report, progress)
        if buckets == 1:
            t0 = time.perf_counter()
            index = store.index(0)
            report.add_time("index", time.perf_counter() - t0)
            merger.run(index, rows)
        else:
            # Both sides hash-partitioned the same way: a bucket's predictions can only match its labels.
            spill = BucketSpill(spill_dir, "predictions", buckets)
            for b in rows:
                spill.write(b, key_hash(join_key(b)))
            spill.close()
            logger.info("spilled %d predictions (%d bytes) into %d buckets", spill.rows, spill.bytes, buckets)
            for k in range(buckets):
                t0 = time.perf_counter()
                index = store.index(k)
                report.add_time("index", time.perf_counter() - t0)
                merger.run(index, spill.read(k))
                del index
        report.counts["duplicate_prediction_keys"] = merger.duplicates.duplicates()
        _say_if_nothing_matched(report, gt, options)
        if options.require_data and not report.counts["predictions"]:
            raise NoDataError(f"no predictions in the window under {source}")
        return run.commit(
            data,
            empty_message="the window held no labels and no predictions (nothing to write)",
            no_data_error=f"no predictions in the window under {source}",
        )


def iter_merge(
    *,
    ground_truth: str,
    captures: str | None = None,
    batch: str | None = None,
    predictions: str | None = None,
    options: MergeOptions | None = None,
    report: RunReport | None = None,
    on_rejects: Callable[[pa.RecordBatch], None] | None = None,
) -> Iterator[pa.RecordBatch]:
    """Stream the merged rows `run_merge` would write, without writing anything (for a monitoring job).

    The sources and options are those of `run_merge` (without the SageMaker layout, which is a file tree).
    Labels are loaded first (into memory up to `options.join_memory`, else hash buckets spilled to a local
    temporary directory), then the predictions are streamed through the join; batches of decoded predictions
    keep their own columns, so schemas may differ between batches. Counts go to `report` when one is given
    (`counts` as in `run_merge`), rejected input records to `on_rejects` (else the log).

    Raises:
        OptionsError: not exactly one prediction source, or `options.sagemaker_format`.
        SourceError: a source does not exist or cannot be read (when iteration starts).
    """
    options = options or MergeOptions()
    source = _one_source(captures, batch, predictions, options)
    check_location("ground_truth", ground_truth)
    if options.sagemaker_format:
        raise OptionsError("iter_merge yields rows; SageMaker's merged JSON Lines layout is written by run_merge")
    report = report or RunReport(command="merge", source=source, dest=None, options=options.to_dict())
    for name in _COUNTS:
        report.counts.setdefault(name, 0)

    def rejected(rows: pa.RecordBatch) -> None:
        if on_rejects is not None:
            on_rejects(rows)
        else:
            logger.warning("%d records rejected while merging %s", rows.num_rows, source)

    gt = open_location(ground_truth, options.storage_options, connections=options.fetch_concurrency)
    objects = list_label_objects(gt, hours=options.label_hours(), concurrency=options.fetch_concurrency)
    report.objects += len(objects)
    report.bytes_total += sum(o.size for o in objects)
    expected = sum(o.size * (_GZIP_RATIO if o.path.endswith(".gz") else 1) for o in objects)
    buckets = max(1, math.ceil(expected / options.join_memory))
    with tempfile.TemporaryDirectory(prefix="capture-engine-merge-") as tmp:
        spill_dir = Path(tmp)
        store = LabelStore(buckets, spill_dir)
        for labels in iter_labels(gt, objects, options, report, rejected):
            store.add(labels)
        store.close()
        preds = _predictions(captures, batch, predictions, options, report, rejected)
        merger = _Merger(options, report, None, None, DuplicateCounter(spill_dir), raw=preds.raw)
        rows = _timed(preds.batches, report, "predictions")
        if buckets == 1:
            yield from merger.stream(store.index(0), rows)
        else:
            spill = BucketSpill(spill_dir, "predictions", buckets)
            for b in rows:
                spill.write(b, key_hash(join_key(b)))
            spill.close()
            for k in range(buckets):
                yield from merger.stream(store.index(k), spill.read(k))
        report.counts["duplicate_prediction_keys"] = merger.duplicates.duplicates()


def read_merge(
    *,
    ground_truth: str,
    captures: str | None = None,
    batch: str | None = None,
    predictions: str | None = None,
    options: MergeOptions | None = None,
    report: RunReport | None = None,
) -> pl.DataFrame:
    """The merged rows of `iter_merge` as one polars DataFrame (columns of differing batches are unioned).

    ``read_merge(...).lazy()`` gives a LazyFrame. The whole result is in memory: for large windows iterate
    `iter_merge` instead, or write the dataset with `run_merge`.
    """
    frames = [
        pl.from_arrow(b)
        for b in iter_merge(
            ground_truth=ground_truth,
            captures=captures,
            batch=batch,
            predictions=predictions,
            options=options,
            report=report,
        )
    ]
    if not frames:
        return pl.DataFrame()
    return pl.concat([f for f in frames if isinstance(f, pl.DataFrame)], how="diagonal_relaxed")
