"""Predictions: the prediction side of a merge as record batches, from capture, batch capture or a Parquet dataset.

Three sources, one shape: an iterator of record batches of prediction rows within the window [start, end) of
`inference_time`, plus what kind of rows they are (real-time or batch) and whether they carry the raw bodies.

* capture (``--captures``): decoded here by the real-time reader (`iter_capture`), raw or `decode`-d;
* batch capture (``--batch``): decoded here by the batch reader (`iter_batch`), raw or `decode`-d;
* a dataset a `realtime` or `batch` run wrote (``--predictions``): only the hour partitions of the window are
  listed, and files are read in groups of equal schema (decoded datasets vary by endpoint and variant), so every
  batch keeps its own columns.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from typing import Any, Literal, TypeVar
from urllib.parse import unquote

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from engine.errors import SourceError
from engine.io.concurrency import prefetch
from engine.io.listing import find
from engine.io.storage import Location, open_location, translate_errors
from engine.kernels.partition import HIVE_NULL
from engine.options import JobOptions, RealtimeOptions
from engine.report import RunReport
from engine.times import epoch_us, in_window

__all__ = [
    "DatasetPart",
    "DatasetPlan",
    "Predictions",
    "batch_predictions",
    "capture_predictions",
    "dataset_predictions",
    "plan_dataset",
    "scan_dataset",
]

logger = logging.getLogger(__name__)

Kind = Literal["realtime", "batch"]
_BATCH_ROWS = 64 * 1024
_PREFETCH = 2  # batches decoded ahead of the join
T = TypeVar("T")


@dataclass
class Predictions:
    """Prediction rows to merge.

    Attributes:
        kind: real-time rows (joined on coalesce(inference_id, event_id), partitioned by endpoint, variant and
            hour) or batch rows (joined on inference_id, partitioned by hour).
        raw: the rows carry the raw request/response bodies (not decoded payload records).
        batches: the rows, within the window; schemas may differ between batches.
    """

    kind: Kind
    raw: bool
    batches: Iterator[pa.RecordBatch]


def _common(options: JobOptions) -> dict[str, Any]:
    return {f.name: getattr(options, f.name) for f in fields(JobOptions)}


def _us(t: datetime) -> int:
    return epoch_us(t)


def _in_window(batch: pa.RecordBatch, options: JobOptions) -> pa.RecordBatch:
    """Rows of `batch` with inference_time in [start, end) (no-op without a window)."""
    if options.start is None and options.end is None:
        return batch
    inside = in_window(batch.column("inference_time"), options.start, options.end)
    return batch if inside.all() else batch.filter(pa.array(inside))


def capture_predictions(
    source: str, options: JobOptions, report: RunReport, on_rejects: Callable[[pa.RecordBatch], None]
) -> Predictions:
    """Real-time capture under `source`, decoded by this run (counted in `report`)."""
    from engine.jobs.realtime import iter_capture

    rt = RealtimeOptions(**_common(options))
    rows = iter_capture(source, options=rt, report=report, on_rejects=on_rejects)
    return Predictions("realtime", not rt.decode, rows)


def batch_predictions(
    source: str,
    options: JobOptions,
    report: RunReport,
    on_rejects: Callable[[pa.RecordBatch], None],
    *,
    prefix_map: Mapping[str, str] | None = None,
) -> Predictions:
    """Batch transform capture under `source`, decoded by this run (raw, or `decode`-d with the options' column
    spec; manifest prefixes rewritten by `prefix_map`): every record read counts in `report`, rows, rejects and
    those outside the window alike."""
    from engine.jobs.batch import BatchOptions, iter_batch

    bt = BatchOptions(**_common(options), prefix_map=dict(prefix_map or {}))
    # The reader applies the window itself and counts what falls outside it.
    rows = iter_batch(source, options=bt, report=report, on_rejects=on_rejects)
    return Predictions("batch", not bt.decode, rows)


# --- a dataset written by `realtime` or `batch` ------------------------------------------------------------


def _dirs(loc: Location, path: str, prefix: str) -> list[str]:
    with translate_errors(loc.uri(path)):
        entries = loc.fs.ls(path, detail=True)
    names = (e["name"].rstrip("/") for e in entries if e.get("type") == "directory")
    return sorted(n for n in names if n.rsplit("/", 1)[-1].startswith(prefix))


def _parquet_files(loc: Location, path: str, *, missing_ok: bool) -> list[tuple[str, int]]:
    found = find(loc, path, missing_ok=missing_ok)
    out = []
    for name, info in found.items():
        rel = name[len(path) :]
        # Not data: _rejects/, _temporary/, _SUCCESS, hidden files (every reader skips them too).
        if info.get("type") != "file" or not name.endswith(".parquet") or re.search(r"/[_.]", rel):
            continue
        out.append((name, int(info.get("size") or 0)))
    return out


def _hours(options: JobOptions) -> list[datetime] | None:
    """Hour partitions of the window: the dataset's hour is the UTC hour of inference_time, so no slack."""
    if options.start is None or options.end is None:
        return None
    h = options.start.replace(minute=0, second=0, microsecond=0)
    out = []
    while h < options.end:
        out.append(h)
        h += timedelta(hours=1)
    return out


def _list_dataset(loc: Location, options: JobOptions) -> tuple[Kind, list[tuple[str, int]]]:
    root = loc.root
    with translate_errors(loc.uri(root)):
        exists = loc.fs.exists(root)
    if not exists:
        raise SourceError("prediction dataset not found", uri=loc.uri(root))
    if _dirs(loc, root, "endpoint="):
        kind: Kind = "realtime"
        bases = [v for e in _dirs(loc, root, "endpoint=") for v in _dirs(loc, e, "variant=")]
    elif _dirs(loc, root, "year="):
        kind, bases = "batch", [root]
    else:
        raise SourceError(
            "not a dataset written by capture-engine realtime or batch (no endpoint=... or year=... folders)",
            uri=loc.uri(root),
        )
    hours = _hours(options)
    if hours is None:
        prefixes, missing_ok = bases, False
    else:
        prefixes = [f"{b}/year={h:%Y}/month={h:%m}/day={h:%d}/hour={h:%H}" for b in bases for h in hours]
        missing_ok = True
    if len(prefixes) <= 1:
        found = [f for p in prefixes for f in _parquet_files(loc, p, missing_ok=missing_ok)]
    else:
        # Listing is latency-bound on object stores: one request per hour prefix, many at once.
        with ThreadPoolExecutor(max_workers=min(options.fetch_concurrency, len(prefixes))) as pool:
            results: Iterable[list[tuple[str, int]]] = pool.map(
                lambda p: _parquet_files(loc, p, missing_ok=missing_ok), prefixes
            )
            found = [f for r in results for f in r]
    return kind, sorted(found)


def _filesystem(loc: Location) -> pafs.FileSystem:
    if loc.is_local:
        return pafs.LocalFileSystem()
    return pafs.PyFileSystem(pafs.FSSpecHandler(loc.fs))


@dataclass(frozen=True)
class DatasetPart:
    """One row group to read: plain data (a Spark task's input), no footer and no open handle.

    Attributes:
        path: the Parquet file, as the dataset's `Location` names it.
        row_group: the row group's index in that file.
        bytes: its compressed size (what reading it costs), for packing parts into tasks.
        partition: the partition values its path holds (endpoint, variant of a real-time dataset).
    """

    path: str
    row_group: int
    bytes: int
    partition: tuple[tuple[str, str | None], ...]


@dataclass(frozen=True)
class DatasetPlan:
    """What a dataset's window holds: its kind, whether raw, the files listed and the row groups to read."""

    kind: Kind
    raw: bool
    files: tuple[tuple[str, int], ...]  # (path, size) of every file listed in the window's hours
    parts: tuple[DatasetPart, ...]  # the row groups whose statistics overlap the window, in file order

    def count(self, report: RunReport) -> None:
        """The plan's files as read: the rows were decoded by an earlier run, so objects and bytes only."""
        report.objects += len(self.files)
        report.bytes_read += sum(size for _, size in self.files)
        report.bytes_total += sum(size for _, size in self.files)


def _partition_values(root: str, path: str, names: tuple[str, ...]) -> tuple[tuple[str, str | None], ...]:
    values = dict(seg.split("=", 1) for seg in path[len(root) :].split("/") if "=" in seg)
    return tuple((n, None if values.get(n, HIVE_NULL) == HIVE_NULL else unquote(values[n])) for n in names)


def _overlaps(metadata: pq.FileMetaData, rg: int, column: int | None, lo: int | None, hi: int | None) -> bool:
    """Whether row group `rg` may hold inference times in [lo, hi) ms, by its statistics (True when unknown)."""
    if column is None or (lo is None and hi is None):
        return True
    stats = metadata.row_group(rg).column(column).statistics
    if stats is None or not stats.has_min_max:
        return True
    low, high = (_to_us(v) for v in (stats.min, stats.max))
    return (hi is None or low < hi) and (lo is None or high >= lo)


def _to_us(value: Any) -> int:
    return epoch_us(value) if isinstance(value, datetime) else int(value)


def _compressed_bytes(metadata: pq.FileMetaData, rg: int) -> int:
    group = metadata.row_group(rg)
    return sum(group.column(i).total_compressed_size for i in range(group.num_columns))


def _plan(loc: Location, options: JobOptions) -> tuple[DatasetPlan, dict[str, pq.FileMetaData]]:
    """The plan of `plan_dataset`, and the footers it read (the local scan reuses them)."""
    kind, files = _list_dataset(loc, options)
    fs = _filesystem(loc)
    paths = [p for p, _ in files]

    def footer(path: str) -> pq.FileMetaData:
        with translate_errors(loc.uri(path)):
            return pq.read_metadata(path, filesystem=fs)

    if len(paths) > 1:
        # Footers are one request each on object stores: many at once.
        with ThreadPoolExecutor(max_workers=min(options.fetch_concurrency, len(paths))) as pool:
            footers = list(pool.map(footer, paths))
    else:
        footers = [footer(p) for p in paths]
    schemas = [m.schema.to_arrow_schema() for m in footers]
    raw = bool(schemas) and all("output_data" in s.names for s in schemas)
    if kind == "realtime" and any("event_id" not in s.names for s in schemas):
        raise SourceError("prediction dataset has endpoint= folders but no event_id column", uri=loc.uri(loc.root))
    if kind == "batch" and any("inference_id" not in s.names for s in schemas):
        raise SourceError("prediction dataset has no inference_id column to join on", uri=loc.uri(loc.root))
    names = ("endpoint", "variant") if kind == "realtime" else ()
    lo = None if options.start is None else _us(options.start)
    hi = None if options.end is None else _us(options.end)
    parts: list[DatasetPart] = []
    for path, metadata in zip(paths, footers, strict=True):
        # Parquet numbers leaf columns (a list column has its own leaves), so look the time column up by path.
        leaves = [metadata.schema.column(i).path for i in range(metadata.num_columns)]
        column = leaves.index("inference_time") if "inference_time" in leaves else None
        partition = _partition_values(loc.root, path, names)
        parts += [
            DatasetPart(path, rg, _compressed_bytes(metadata, rg), partition)
            for rg in range(metadata.num_row_groups)
            if _overlaps(metadata, rg, column, lo, hi)
        ]
    plan = DatasetPlan(kind, raw, tuple(files), tuple(parts))
    return plan, dict(zip(paths, footers, strict=True))


def plan_dataset(loc: Location, options: JobOptions) -> DatasetPlan:
    """List a dataset a `realtime` or `batch` run wrote and plan the reading of its window (on a driver).

    Only the window's hour partitions are listed; every file's footer is read once, and the row groups whose
    `inference_time` statistics lie outside [start, end) are left out. The plan is plain data: its parts can
    be read anywhere, in any grouping, by `scan_dataset`.

    Raises:
        SourceError: the dataset does not exist, cannot be read, or is not in either layout.
    """
    return _plan(loc, options)[0]


def scan_dataset(
    loc: Location,
    parts: Iterable[DatasetPart],
    options: JobOptions,
    footers: Mapping[str, pq.FileMetaData] | None = None,
) -> Iterator[pa.RecordBatch]:
    """The rows of `parts` within the window, in batches, with their partition columns appended.

    A file's footer comes from `footers` (the planner's) or is read once per run of consecutive parts of
    that file. Memory follows the batch size, not the row-group size.
    """
    fs = _filesystem(loc)
    opened: tuple[str, pq.ParquetFile] | None = None
    for part in parts:
        with translate_errors(loc.uri(part.path)):
            if opened is None or opened[0] != part.path:
                metadata = None if footers is None else footers.get(part.path)
                opened = (part.path, pq.ParquetFile(part.path, filesystem=fs, metadata=metadata))
            batches = opened[1].iter_batches(batch_size=_BATCH_ROWS, row_groups=[part.row_group], use_threads=True)
            for batch in batches:
                for name, value in part.partition:
                    batch = batch.append_column(name, pa.repeat(pa.scalar(value, pa.string()), batch.num_rows))
                kept = _in_window(batch, options)
                if kept.num_rows:
                    yield kept


def dataset_predictions(source: str, options: JobOptions, report: RunReport) -> Predictions:
    """The prediction rows of a dataset a `realtime` or `batch` run wrote, within the window.

    Planned by `plan_dataset` (the window's hour partitions, row groups pruned by their statistics) and read
    by `scan_dataset`, a batch at a time by a background thread, at most `_PREFETCH` batches ahead. Each file
    keeps its own columns (decoded datasets vary by endpoint and variant). The rows were decoded by an
    earlier run, so they count as objects and bytes read only.

    Raises:
        SourceError: the dataset does not exist, cannot be read, or is not in either layout.
    """
    loc = open_location(source, options.storage_options, connections=options.fetch_concurrency)
    plan, footers = _plan(loc, options)
    plan.count(report)
    logger.info("found %d %s prediction files under %s", len(plan.files), plan.kind, source)
    return Predictions(plan.kind, plan.raw, prefetch(scan_dataset(loc, plan.parts, options, footers), _PREFETCH))
