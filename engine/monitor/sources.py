"""What a monitoring job reads: a baseline or a window as record batches of feature columns.

Sources: a Parquet dataset (any, or one this engine wrote: its provenance and partition columns are not
features), CSV (with or without a header; headerless columns are named ``_c0..``, Spark's names as the
analyzer's), JSON Lines; or raw capture decoded on the way: real-time capture (``capture``: input and
output features of each payload record) or batch transform capture (``batch``), optionally merged with
ground truth on the way (model quality). CSV is read as text, so that types are inferred from the text as
the analyzer infers them (``1.0`` is Fractional).

`read_groups` also splits every batch by hour and/or by (endpoint, variant), for per-group breakdowns.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.dataset as ds

from engine.errors import OptionsError, SourceError
from engine.io.storage import open_location, translate_errors
from engine.jobs.batch import iter_batch
from engine.jobs.merge import iter_merge
from engine.jobs.realtime import iter_capture
from engine.options import BatchOptions, MergeOptions, RealtimeOptions
from engine.tables import table_spec
from engine.times import in_window

__all__ = [
    "GroupBy",
    "SourceFormat",
    "envelope_columns",
    "group_path",
    "read_groups",
    "read_source",
    "select_groups",
    "source_files",
]

SourceFormat = Literal["auto", "parquet", "csv", "jsonl", "capture", "batch"]
GroupBy = Literal["hour", "endpoint"]
_BLOCK = 1 << 24
_JSONL = (".jsonl", ".json", ".ndjson", ".jsonl.gz")


def envelope_columns() -> frozenset[str]:
    """Columns of the engine's tables that describe where a record came from, not what the model saw."""
    names: set[str] = {"record_index", "year", "month", "day", "hour"}
    for table in ("capture", "batch", "merged", "merged_batch"):
        names |= set(table_spec(table).schema.names)
    # Label columns of a merge are the ground truth, not features; the payload columns stay features.
    return frozenset(names - {"label", "label_value"})


def _format(path: str, fmt: SourceFormat, is_dir: bool) -> SourceFormat:
    if fmt != "auto":
        return fmt
    lower = path.lower().rstrip("/")
    if is_dir or lower.endswith(".parquet"):
        return "parquet"
    if lower.endswith((".csv", ".csv.gz")):
        return "csv"
    if lower.endswith(_JSONL):
        return "jsonl"
    raise OptionsError(f"cannot tell the format of {path}: give --format parquet, csv, jsonl, capture or batch")


def read_source(
    source: str,
    *,
    fmt: SourceFormat = "auto",
    header: bool = False,
    features: list[str] | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    storage_options: dict[str, object] | None = None,
    ground_truth: str | None = None,
) -> Iterator[pa.RecordBatch]:
    """Feature batches of `source`, within [start, end) on `inference_time` when the table has one.

    With `ground_truth`, the capture (``capture`` or ``batch``, or a folder of either) is merged with the labels
    on the way (`engine.iter_merge`, decoded), so model quality needs no merged dataset on disk.

    Raises:
        SourceError: the source does not exist or cannot be read.
        OptionsError: the format cannot be told, or a window is given for a table without times.
    """
    for _, batch in read_groups(
        source,
        fmt=fmt,
        header=header,
        features=features,
        start=start,
        end=end,
        storage_options=storage_options,
        ground_truth=ground_truth,
    ):
        yield batch


def read_groups(
    source: str,
    *,
    fmt: SourceFormat = "auto",
    header: bool = False,
    features: list[str] | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    storage_options: dict[str, object] | None = None,
    ground_truth: str | None = None,
    by: tuple[GroupBy, ...] = (),
) -> Iterator[tuple[tuple[str, ...], pa.RecordBatch]]:
    """`read_source`'s batches split by `by`: ``(key, batch)`` with key e.g. ``("ep", "AllTraffic", "2026110102")``.

    The key holds endpoint and variant (``by`` has ``endpoint``) then the hour as ``YYYYMMDDHH`` (``by`` has
    ``hour``), in that order whatever the order of `by`; without `by` the key is ``()``.
    """
    # Parquet is read column by column: only the features (or all but provenance) and the window/group keys.
    keys = {"inference_time"} if (start is not None or end is not None or "hour" in by) else set()
    keys |= {"endpoint", "variant"} if "endpoint" in by else set()
    wanted = None if features is None else set(features) | keys
    batches = _raw(source, fmt, header, start, end, storage_options or {}, ground_truth, wanted, keys)
    yield from select_groups(batches, source, features=features, start=start, end=end, by=by)


def select_groups(
    batches: Iterable[pa.RecordBatch],
    source: str,
    *,
    features: list[str] | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    by: tuple[GroupBy, ...] = (),
) -> Iterator[tuple[tuple[str, ...], pa.RecordBatch]]:
    """Window, breakdown and feature columns of any record batches (a table's, a reader's); `source` names them."""
    skip = envelope_columns()
    for batch in batches:
        if start is not None or end is not None:
            if "inference_time" not in batch.schema.names:
                raise OptionsError(f"{source} has no inference_time column: a window cannot be applied")
            batch = batch.filter(pa.array(in_window(batch.column("inference_time"), start, end)))
        names = features if features is not None else [n for n in batch.schema.names if n not in skip]
        for key, part in _split(source, batch, by):
            yield (
                key,
                pa.RecordBatch.from_arrays(
                    [part.column(n) if n in part.schema.names else pa.nulls(part.num_rows) for n in names], names=names
                ),
            )


def group_path(by: tuple[GroupBy, ...], key: tuple[str, ...]) -> str:
    """Where a group's files go under OUT: ``{endpoint}/{variant}/yyyy/mm/dd/hh``, Model Monitor's report layout."""
    parts = list(key[:2]) if "endpoint" in by else []
    if "hour" in by:
        h = key[-1]
        parts += [h[:4], h[4:6], h[6:8], h[8:10]]
    return "/".join(parts)


def _split(
    source: str, batch: pa.RecordBatch, by: tuple[GroupBy, ...]
) -> Iterator[tuple[tuple[str, ...], pa.RecordBatch]]:
    if not by or not batch.num_rows:
        yield (), batch
        return
    keys: list[pa.Array] = []
    if "endpoint" in by:
        for name in ("endpoint", "variant"):
            if name not in batch.schema.names:
                raise OptionsError(f"{source} has no {name} column: it cannot be broken down by endpoint")
            keys.append(pc.cast(batch.column(name), pa.string()).fill_null(""))
    if "hour" in by:
        if "inference_time" not in batch.schema.names:
            raise OptionsError(f"{source} has no inference_time column: it cannot be broken down by hour")
        hours = pc.strftime(pc.cast(batch.column("inference_time"), pa.timestamp("us", tz="UTC")), "%Y%m%d%H")
        keys.append(hours.fill_null("unknown"))
    table = pa.table(keys, names=[f"k{i}" for i in range(len(keys))])
    groups = table.group_by(table.column_names, use_threads=False).aggregate([])
    for row in groups.to_pylist():
        mask = np.ones(batch.num_rows, dtype=bool)
        for i, value in enumerate(row.values()):
            mask &= np.asarray(pc.equal(keys[i], value).to_numpy(zero_copy_only=False), dtype=bool)
        yield tuple(row.values()), batch.filter(pa.array(mask))


def source_files(
    source: str, *, fmt: SourceFormat = "auto", storage_options: dict[str, object] | None = None
) -> list[tuple[str, int]]:
    """The files of a Parquet/CSV/JSON Lines source as ``(uri, bytes)``, in reading order (empty for capture)."""
    loc = open_location(source, storage_options or {})
    with translate_errors(source):
        if not loc.fs.exists(loc.root):
            raise SourceError("monitoring source not found", uri=source)
        is_dir = loc.fs.isdir(loc.root)
    kind = _format(loc.root, fmt, is_dir)
    if kind in ("capture", "batch"):
        return []
    suffixes = {"parquet": (".parquet",), "csv": (".csv", ".csv.gz"), "jsonl": _JSONL}[kind]
    with translate_errors(source):
        files = _files(loc.fs, loc.root, is_dir, suffixes)
        return [(loc.uri(f), int(loc.fs.size(f))) for f in files]


def _raw(
    source: str,
    fmt: SourceFormat,
    header: bool,
    start: datetime | None,
    end: datetime | None,
    storage_options: dict[str, object],
    ground_truth: str | None,
    wanted: set[str] | None = None,
    keys: set[str] | frozenset[str] = frozenset(),
) -> Iterator[pa.RecordBatch]:
    loc = open_location(source, storage_options)
    with translate_errors(source):
        if not loc.fs.exists(loc.root):
            raise SourceError("monitoring source not found", uri=source)
        is_dir = loc.fs.isdir(loc.root)
    kind = _format(loc.root, fmt, is_dir) if ground_truth is None or fmt != "auto" else "capture"
    if ground_truth is not None:
        if kind not in ("capture", "batch"):
            raise OptionsError("--ground-truth merges raw capture on the way: give --format capture or batch")
        return capture_batches(source, kind, start, end, storage_options, ground_truth)
    if kind in ("capture", "batch"):
        return capture_batches(source, kind, start, end, storage_options, None)
    if kind == "parquet":
        return _parquet(loc.fs, loc.root, is_dir, wanted, keys)
    if kind == "csv":
        return _csv(loc.fs, loc.root, is_dir, header)
    return _jsonl(loc.fs, loc.root, is_dir)


def _files(fs: object, root: str, is_dir: bool, suffixes: tuple[str, ...]) -> list[str]:
    if not is_dir:
        return [root]
    found = [p for p in fs.find(root) if p.lower().endswith(suffixes)]  # type: ignore[attr-defined]
    return sorted(p for p in found if not any(part.startswith(("_", ".")) for part in p[len(root) :].split("/")))


def _parquet(
    fs: object, root: str, is_dir: bool, wanted: set[str] | None, keys: set[str] | frozenset[str]
) -> Iterator[pa.RecordBatch]:
    files = _files(fs, root, is_dir, (".parquet",))
    skip = envelope_columns()
    for path in files:
        # One file at a time: decoded datasets may differ in schema between files (new fields).
        dataset = ds.dataset(path, filesystem=fs, format="parquet")
        names = dataset.schema.names
        columns = [n for n in names if (n in wanted if wanted is not None else n not in skip or n in keys)]
        # Hive folders of the engine's layout (endpoint=.../variant=...) name what the files do not hold.
        folders = dict(part.split("=", 1) for part in path.split("/")[:-1] if "=" in part)
        extra = {k: folders[k] for k in keys if k in folders and k not in names}
        for batch in dataset.to_batches(columns=columns, batch_size=65_536):
            for name, value in extra.items():
                batch = batch.append_column(name, pa.array([value] * batch.num_rows, pa.string()))
            yield batch


def _csv(fs: object, root: str, is_dir: bool, header: bool) -> Iterator[pa.RecordBatch]:
    for path in _files(fs, root, is_dir, (".csv", ".csv.gz")):
        with fs.open(path, "rb", compression="infer") as f:  # type: ignore[attr-defined]
            data = f.read()
        first = data[: data.find(b"\n")] if b"\n" in data else data
        parsed = next(csv.reader([first.decode("utf-8", "replace").rstrip("\r")]), [])
        names = [n.strip() for n in parsed] if header else [f"_c{i}" for i in range(len(parsed))]
        reader = pcsv.open_csv(
            io.BytesIO(data),
            read_options=pcsv.ReadOptions(column_names=names, skip_rows=1 if header else 0, block_size=_BLOCK),
            # Text, typed later as the analyzer types text; an empty field is missing.
            convert_options=pcsv.ConvertOptions(
                column_types=dict.fromkeys(names, pa.string()), strings_can_be_null=True, null_values=[""]
            ),
        )
        yield from reader


def _jsonl(fs: object, root: str, is_dir: bool) -> Iterator[pa.RecordBatch]:
    import polars as pl

    for path in _files(fs, root, is_dir, _JSONL):
        with fs.open(path, "rb", compression="infer") as f:  # type: ignore[attr-defined]
            frame = pl.read_ndjson(f.read(), infer_schema_length=None)
        yield from frame.to_arrow().to_batches()


def capture_batches(
    source: str,
    kind: Literal["capture", "batch"],
    start: datetime | None,
    end: datetime | None,
    storage_options: dict[str, object],
    ground_truth: str | None,
) -> Iterator[pa.RecordBatch]:
    """Decoded payload records of raw capture (real-time or batch), merged with `ground_truth` when given."""
    if ground_truth is not None:
        options = MergeOptions(start=start, end=end, storage_options=storage_options, decode=True)
        if kind == "batch":
            return iter_merge(ground_truth=ground_truth, batch=source, options=options)
        return iter_merge(ground_truth=ground_truth, captures=source, options=options)
    if kind == "batch":
        return iter_batch(
            source, options=BatchOptions(start=start, end=end, storage_options=storage_options, decode=True)
        )
    return iter_capture(
        source, options=RealtimeOptions(start=start, end=end, storage_options=storage_options, decode=True)
    )
