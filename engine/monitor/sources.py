"""What a monitoring job reads: a baseline or a window as record batches of feature columns.

Sources: a Parquet dataset (any, or one this engine wrote: its provenance and partition columns are not
features), CSV (with or without a header; headerless columns are named ``_c0..``, Spark's names as the
analyzer's), JSON Lines. CSV is read as text, so that types are inferred from the text as the analyzer
infers them (``1.0`` is Fractional).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from datetime import datetime
from typing import Literal

import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.dataset as ds

from engine.errors import OptionsError, SourceError
from engine.io.storage import open_location, translate_errors
from engine.tables import table_spec
from engine.times import in_window

__all__ = ["SourceFormat", "envelope_columns", "read_source"]

SourceFormat = Literal["auto", "parquet", "csv", "jsonl"]
_BLOCK = 1 << 24


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
    if lower.endswith((".jsonl", ".json", ".ndjson", ".jsonl.gz")):
        return "jsonl"
    raise OptionsError(f"cannot tell the format of {path}: give --format parquet, csv or jsonl")


def read_source(
    source: str,
    *,
    fmt: SourceFormat = "auto",
    header: bool = False,
    features: list[str] | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    storage_options: dict[str, object] | None = None,
) -> Iterator[pa.RecordBatch]:
    """Feature batches of `source`, within [start, end) on `inference_time` when the table has one.

    Raises:
        SourceError: the source does not exist or cannot be read.
        OptionsError: the format cannot be told, or a window is given for a table without times.
    """
    loc = open_location(source, storage_options or {})
    with translate_errors(source):
        if not loc.fs.exists(loc.root):
            raise SourceError("monitoring source not found", uri=source)
        is_dir = loc.fs.isdir(loc.root)
    kind = _format(loc.root, fmt, is_dir)
    if kind == "parquet":
        batches = _parquet(loc.fs, loc.root, is_dir)
    elif kind == "csv":
        batches = _csv(loc.fs, loc.root, is_dir, header)
    else:
        batches = _jsonl(loc.fs, loc.root, is_dir)
    skip = envelope_columns()
    for batch in batches:
        if start is not None or end is not None:
            if "inference_time" not in batch.schema.names:
                raise OptionsError(f"{source} has no inference_time column: a window cannot be applied")
            batch = batch.filter(pa.array(in_window(batch.column("inference_time"), start, end)))
        names = features if features is not None else [n for n in batch.schema.names if n not in skip]
        yield pa.RecordBatch.from_arrays(
            [batch.column(n) if n in batch.schema.names else pa.nulls(batch.num_rows) for n in names], names=names
        )


def _files(fs: object, root: str, is_dir: bool, suffixes: tuple[str, ...]) -> list[str]:
    if not is_dir:
        return [root]
    found = [p for p in fs.find(root) if p.lower().endswith(suffixes)]  # type: ignore[attr-defined]
    return sorted(p for p in found if not any(part.startswith(("_", ".")) for part in p[len(root) :].split("/")))


def _parquet(fs: object, root: str, is_dir: bool) -> Iterator[pa.RecordBatch]:
    files = _files(fs, root, is_dir, (".parquet",))
    for path in files:
        # One file at a time: decoded datasets may differ in schema between files (new fields).
        dataset = ds.dataset(path, filesystem=fs, format="parquet")
        yield from dataset.to_batches(batch_size=65_536)


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

    for path in _files(fs, root, is_dir, (".jsonl", ".json", ".ndjson", ".jsonl.gz")):
        with fs.open(path, "rb", compression="infer") as f:  # type: ignore[attr-defined]
            frame = pl.read_ndjson(f.read(), infer_schema_length=None)
        yield from frame.to_arrow().to_batches()
