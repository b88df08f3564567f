"""Aggregates of a dataset the engine wrote, computed with polars from only the columns they need.

A page shows hours, reasons and counts, never rows: each table of the dataset (one ``endpoint=/variant=``
folder, or the batch table) is read column-projected and grouped at once, so a million rows behind a page
cost one pass over two or three columns. Files come from the dataset's manifest (the consistent view of
its last commit) or, for a dataset without one, from listing its Parquet files.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import unquote

import polars as pl
import pyarrow.compute as pc
import pyarrow.dataset as ds

from engine.html.inputs import DatasetSource
from engine.io.storage import translate_errors
from engine.monitor.sources import envelope_columns
from engine.sinks.manifest import table_of

__all__ = [
    "MAX_FILLED_HOURS",
    "DatasetAggregates",
    "TableInfo",
    "aggregate_dataset",
    "capture_gaps",
    "fill_hours",
]

logger = logging.getLogger(__name__)

HOUR = "1h"
MAX_FILLED_HOURS = 24 * 92  # beyond a quarter of hourly bars the page shows only the hours that hold data
EXAMPLES_PER_REASON = 3
EXAMPLE_BYTES = 300
REJECTS = "_rejects"


@dataclass(frozen=True, kw_only=True)
class TableInfo:
    """One table of a dataset: its folder, its series label, what it holds, its columns."""

    name: str
    series: str
    kind: str  # capture | decoded | merged | batch
    files: int
    rows: int
    columns: pl.DataFrame  # column, type, role, null_share


@dataclass(frozen=True, kw_only=True)
class DatasetAggregates:
    """Everything the page shows of one dataset, as small frames (one row per hour, reason, bucket...)."""

    source: DatasetSource
    tables: list[TableInfo]
    volume: pl.DataFrame  # series, hour, records, events (every hour of the range, zeros included)
    records_per_event: pl.DataFrame  # series, records_per_event, events
    labels: pl.DataFrame  # series, hour, predictions, labelled, coverage
    label_delay: pl.DataFrame  # series, delay_hours, labels
    rejects_by_reason: pl.DataFrame  # reason, rejects
    rejects_by_hour: pl.DataFrame  # hour, reason, rejects
    reject_examples: pl.DataFrame  # reason, source_file, source_line, detail, raw


def _files(src: DatasetSource) -> list[str]:
    """Relative paths of the dataset's Parquet files (data and rejects)."""
    if src.manifest is not None:
        return sorted(rel for rel in src.manifest.get("files", {}) if rel.endswith(".parquet"))
    loc = src.loc
    base = loc.root.rstrip("/") + "/"
    with translate_errors(src.uri):
        found = loc.fs.find(loc.root)
    rels = (p[len(base) :] if p.startswith(base) else p for p in found)
    return sorted(r for r in rels if r.endswith(".parquet") and not r.startswith(("_temporary", "_sagemaker", ".")))


def _series(name: str) -> str:
    parts = dict(p.split("=", 1) for p in name.split("/") if "=" in p)
    if "endpoint" in parts or "variant" in parts:
        return f"{unquote(parts.get('endpoint', '-'))} / {unquote(parts.get('variant', '-'))}"
    return name or "batch"


def _kind(names: list[str]) -> str:
    if "label" in names:
        return "merged"
    if "manifest_file" in names:
        return "batch"
    return "decoded" if "record_index" in names else "capture"


def _role(name: str, envelope: frozenset[str]) -> str:
    if name in ("label", "label_value"):
        return "label"
    if name == "prediction" or name.startswith("prediction_"):
        return "prediction"
    return "provenance" if name in envelope else "payload"


def _columns(dataset: ds.FileSystemDataset, rows: int) -> pl.DataFrame:
    """Each column's type and share of nulls, from the files' footers (no data is read)."""
    schema = dataset.schema
    nulls: dict[str, int | None] = dict.fromkeys(schema.names, 0)
    for frag in dataset.get_fragments():
        meta = frag.metadata
        for g in range(meta.num_row_groups):
            group = meta.row_group(g)
            for c in range(group.num_columns):
                col = group.column(c)
                name = col.path_in_schema.split(".", 1)[0]
                stats = col.statistics
                if name not in nulls or nulls[name] is None:
                    continue
                if stats is None or not stats.has_null_count:
                    nulls[name] = None
                else:
                    nulls[name] = (nulls[name] or 0) + stats.null_count
    envelope = envelope_columns()
    return pl.DataFrame(
        {
            "column": schema.names,
            "type": [str(t) for t in schema.types],
            "role": [_role(n, envelope) for n in schema.names],
            "null_share": [None if nulls[n] is None or not rows else nulls[n] / rows for n in schema.names],  # type: ignore[operator]
        },
        schema={"column": pl.String, "type": pl.String, "role": pl.String, "null_share": pl.Float64},
    )


def _read(src: DatasetSource, rels: list[str], columns: list[str]) -> tuple[ds.FileSystemDataset, pl.DataFrame]:
    paths = [src.loc.join(r) for r in rels]
    with translate_errors(src.uri):
        dataset = ds.dataset(paths, filesystem=src.loc.fs, format="parquet")
        names = set(dataset.schema.names)
        # record_index counts records within an event only in tables of events (real-time capture, not batch).
        skip = {"record_index"} if "event_id" not in names else set()
        wanted = [c for c in columns if c in names and c not in skip]
        table = dataset.to_table(columns=wanted)
    return dataset, pl.from_arrow(table)  # type: ignore[return-value]


def _records_per_event(frame: pl.DataFrame) -> pl.DataFrame:
    """Events by their number of records, from record_index alone (0-based within each event): the events with
    exactly k + 1 records are those with a record k but none k + 1. No event id is read or hashed."""
    counts = frame.group_by("record_index").len("n").sort("record_index")
    return (
        counts.with_columns((pl.col("n") - pl.col("n").shift(-1).fill_null(0)).alias("events"))
        .select((pl.col("record_index") + 1).cast(pl.Int64).alias("records_per_event"), "events")
        .filter(pl.col("events") > 0)
    )


def _table_aggregates(frame: pl.DataFrame, kind: str) -> tuple[pl.DataFrame, ...]:
    hour = pl.col("inference_time").dt.truncate(HOUR).alias("hour")
    decoded = "record_index" in frame.columns
    # Every event has exactly one record 0, in the event's hour (its records share its inference time).
    events = (pl.col("record_index") == 0).sum() if decoded else pl.len()
    volume = frame.group_by(hour).agg(pl.len().alias("records"), events.cast(pl.Int64).alias("events"))
    one = pl.DataFrame({"records_per_event": [1], "events": [frame.height]})
    rpe = _records_per_event(frame) if decoded else one
    labels = delay = pl.DataFrame()
    if kind == "merged":
        labelled = pl.col("label").is_not_null()
        labels = frame.group_by(hour).agg(pl.len().alias("predictions"), labelled.sum().alias("labelled"))
        delay = (
            frame.filter(labelled & pl.col("label_hour").is_not_null())
            .select(
                ((pl.col("label_hour") - pl.col("inference_time").dt.truncate(HOUR)).dt.total_hours()).alias(
                    "delay_hours"
                )
            )
            .group_by("delay_hours")
            .len("labels")
        )
    return volume, rpe, labels, delay


def fill_hours(volume: pl.DataFrame, start: datetime | None, end: datetime | None) -> pl.DataFrame:
    """Every hour from the first to the last (widened to the run's window [start, end)) for every series, 0 where
    nothing arrived, so that a gap in capture shows as an empty bar rather than as no bar at all."""
    if volume.is_empty():
        return volume
    first, last = volume["hour"].min(), volume["hour"].max()
    assert isinstance(first, datetime) and isinstance(last, datetime)
    if start is not None:
        first = min(first, start.replace(minute=0, second=0, microsecond=0))
    if end is not None:
        last = max(last, (end - timedelta(microseconds=1)).replace(minute=0, second=0, microsecond=0))
    span = (last - first) // timedelta(hours=1) + 1
    if span > MAX_FILLED_HOURS:
        logger.info("%d hours between %s and %s: only hours with data are shown", span, first, last)
        return volume.sort("series", "hour")
    hours = pl.DataFrame({"hour": pl.datetime_range(first, last, HOUR, time_zone="UTC", time_unit="us", eager=True)})
    grid = volume.select("series").unique().join(hours, how="cross")
    return (
        grid.join(volume, on=["series", "hour"], how="left")
        .with_columns(pl.col("records", "events").fill_null(0))
        .sort("series", "hour")
    )


def capture_gaps(volume: pl.DataFrame) -> pl.DataFrame:
    """Runs of hours without a record, per series: series, first_hour, last_hour, hours."""
    if volume.is_empty():
        return pl.DataFrame(schema={"series": pl.String, "first_hour": pl.Datetime("us", "UTC"), "hours": pl.UInt32})
    empty = pl.col("records") == 0
    return (
        volume.sort("series", "hour")
        .with_columns((empty != empty.shift(1).over("series")).fill_null(True).cum_sum().over("series").alias("run"))
        .filter(empty)
        .group_by("series", "run")
        .agg(pl.col("hour").min().alias("first_hour"), pl.col("hour").max().alias("last_hour"), pl.len().alias("hours"))
        .drop("run")
        .sort("series", "first_hour")
    )


def _window(src: DatasetSource) -> tuple[datetime | None, datetime | None]:
    window = (src.success or {}).get("window") or {}

    def parse(text: Any) -> datetime | None:
        if not text:
            return None
        value = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)

    return parse(window.get("start")), parse(window.get("end"))


def _rejects(src: DatasetSource, rels: list[str]) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    by_reason = pl.DataFrame(schema={"reason": pl.String, "rejects": pl.UInt32})
    by_hour = pl.DataFrame(schema={"hour": pl.Datetime("us", "UTC"), "reason": pl.String, "rejects": pl.UInt32})
    examples = pl.DataFrame(
        schema={"reason": pl.String, "source_file": pl.String, "source_line": pl.Int64, "detail": pl.String,
                "raw": pl.String}
    )  # fmt: skip
    if not rels:
        return by_reason, by_hour, examples
    paths = [src.loc.join(r) for r in rels]
    with translate_errors(src.uri):
        table = ds.dataset(paths, filesystem=src.loc.fs, format="parquet").to_table(
            columns=["source_hour", "reason", "source_file", "source_line", "detail", "raw"]
        )
    # Only the head of each raw line is ever shown: cut it before it becomes text.
    raw = pc.binary_slice(table.column("raw"), 0, EXAMPLE_BYTES)
    table = table.set_column(table.schema.get_field_index("raw"), "raw", raw)
    frame: pl.DataFrame = pl.from_arrow(table)  # type: ignore[assignment]
    by_reason = frame.group_by("reason").len("rejects").sort(["rejects", "reason"], descending=[True, False])
    by_hour = (
        frame.group_by(pl.col("source_hour").dt.truncate(HOUR).alias("hour"), "reason")
        .len("rejects")
        .sort("hour", "reason")
    )
    head = (
        frame.sort("reason", "source_file", "source_line")
        .group_by("reason", maintain_order=True)
        .head(EXAMPLES_PER_REASON)
    )
    text = [None if b is None else b.decode("utf-8", "replace") for b in head["raw"].to_list()]
    examples = head.with_columns(pl.Series("raw", text, dtype=pl.String)).select(examples.columns)
    return by_reason, by_hour, examples


def aggregate_dataset(src: DatasetSource) -> DatasetAggregates:
    """Read the columns the page needs from each table of `src` and aggregate them."""
    rels = _files(src)
    reject_rels = [r for r in rels if r.startswith(REJECTS + "/")]
    groups: dict[str, list[str]] = {}
    for rel in rels:
        if not rel.startswith("_"):
            groups.setdefault(table_of(rel), []).append(rel)
    tables: list[TableInfo] = []
    parts: list[tuple[pl.DataFrame, ...]] = []
    needed = ["inference_time", "record_index", "label", "label_hour"]
    for name, files in sorted(groups.items()):
        dataset, frame = _read(src, files, needed)
        kind = _kind(dataset.schema.names)
        series = _series(name)
        tables.append(
            TableInfo(
                name=name, series=series, kind=kind, files=len(files), rows=frame.height,
                columns=_columns(dataset, frame.height),
            )
        )  # fmt: skip
        parts.append(tuple(p.with_columns(pl.lit(series).alias("series")) for p in _table_aggregates(frame, kind)))

    def cat(i: int, keys: list[str]) -> pl.DataFrame:
        frames = [p[i] for p in parts if not p[i].is_empty()]
        if not frames:
            return pl.DataFrame()
        out = pl.concat(frames, how="vertical_relaxed")
        return out.select("series", *[c for c in out.columns if c != "series"]).sort(["series", *keys])

    start, end = _window(src)
    volume = cat(0, ["hour"])
    volume = fill_hours(volume, start, end) if not volume.is_empty() else volume
    labels = cat(2, ["hour"])
    if not labels.is_empty():
        labels = labels.with_columns((pl.col("labelled") / pl.col("predictions")).alias("coverage"))
    by_reason, by_hour, examples = _rejects(src, reject_rels)
    return DatasetAggregates(
        source=src,
        tables=tables,
        volume=volume,
        records_per_event=cat(1, ["records_per_event"]),
        labels=labels,
        label_delay=cat(3, ["delay_hours"]),
        rejects_by_reason=by_reason,
        rejects_by_hour=by_hour,
        reject_examples=examples,
    )
