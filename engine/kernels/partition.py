"""Partition: split record batches by (endpoint, variant, UTC hour) without a Python loop per row."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from urllib.parse import quote

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from engine.times import TIME_TYPE, US_PER_HOUR

__all__ = ["HIVE_NULL", "PartitionKey", "split_by_hour"]

HIVE_NULL = "__HIVE_DEFAULT_PARTITION__"
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)

PartitionKey = tuple[str | None, str | None, int | None]  # endpoint, variant, epoch hour


# Filesystems limit a name to 255 bytes; `endpoint=` plus an escaped name must fit, with room to spare.
MAX_SEGMENT_BYTES = 200


def _escape(value: str | None) -> str:
    # Hive escapes path-unsafe characters with %XX; SageMaker names are [a-zA-Z0-9-], so this is rare.
    if value is None:
        return HIVE_NULL
    escaped = quote(value, safe="-_.~ ")
    if escaped == HIVE_NULL:
        # Readers take this exact name (however escaped) for null: a folder really named so gets a suffix.
        return f"{HIVE_NULL}~{hashlib.sha256(value.encode()).hexdigest()[:16]}"
    if len(escaped) <= MAX_SEGMENT_BYTES:
        return escaped
    # Too long for a folder name (100 non-ASCII letters escape to 900 bytes): keep the escaped prefix of
    # whole characters that fits, plus a hash of the whole name, so distinct names stay distinct.
    head: list[str] = []
    size = 0
    for ch in value:
        q = quote(ch, safe="-_.~ ")
        if size + len(q) > MAX_SEGMENT_BYTES - 17:
            break
        head.append(q)
        size += len(q)
    return "".join(head) + "~" + hashlib.sha256(value.encode()).hexdigest()[:16]


def partition_path(key: PartitionKey, *, with_names: bool = True) -> str:
    """``endpoint=e/variant=v/year=YYYY/month=MM/day=DD/hour=HH`` (zero-padded, UTC)."""
    endpoint, variant, hour = key
    parts = []
    if with_names:
        parts += [f"endpoint={_escape(endpoint)}", f"variant={_escape(variant)}"]
    if hour is None:
        parts += [f"year={HIVE_NULL}", f"month={HIVE_NULL}", f"day={HIVE_NULL}", f"hour={HIVE_NULL}"]
    else:
        t = _EPOCH + timedelta(hours=hour)  # also before 1970; %Y would not zero-pad year 1 on glibc
        parts += [f"year={t.year:04d}", f"month={t:%m}", f"day={t:%d}", f"hour={t:%H}"]
    return "/".join(parts)


def _codes(col: pa.Array) -> tuple[np.ndarray, list[str | None]]:
    enc = pc.dictionary_encode(col, null_encoding="encode")
    values: list[str | None] = enc.dictionary.to_pylist()
    return np.asarray(enc.indices.to_numpy(zero_copy_only=False), dtype=np.int64), values


def _none(batch: pa.RecordBatch) -> tuple[np.ndarray, list[str | None]]:
    return np.zeros(batch.num_rows, dtype=np.int64), [None]


def split_by_hour(batch: pa.RecordBatch, time_column: str) -> Iterator[tuple[PartitionKey, pa.RecordBatch]]:
    """Yield (key, rows) for each (endpoint, variant, hour of `time_column`) in `batch`.

    Without `endpoint`/`variant` columns (batch transform tables) the key is (None, None, hour).

    Rows arrive mostly grouped (objects are read in hour order), so contiguous runs are sliced
    without a copy; otherwise one stable sort of an int64 composite key, then slices. Never a
    filter per partition, never a Python loop per row.
    """
    if batch.num_rows == 0:
        return
    # Batch tables have no endpoint/variant: every row then shares the (None, None) prefix.
    e_codes, e_values = _codes(batch.column("endpoint")) if "endpoint" in batch.schema.names else _none(batch)
    v_codes, v_values = _codes(batch.column("variant")) if "variant" in batch.schema.names else _none(batch)
    ts = batch.column(time_column).cast(TIME_TYPE).cast(pa.int64())
    valid = np.asarray(pc.is_valid(ts).to_numpy(zero_copy_only=False), dtype=bool)
    hours = np.asarray(ts.fill_null(0).to_numpy(), dtype=np.int64) // US_PER_HOUR  # floor: 1969 hours too
    # A null time gets the hour below the smallest valid one: every valid hour, before 1970 included,
    # keeps its own partition, and only null times go to the hive default partition.
    null_hour = int(hours[valid].min()) - 1 if valid.any() else 0
    hours = np.where(valid, hours, null_hour)
    hour_min = int(hours.min())
    span = int(hours.max()) - hour_min + 1
    key = (e_codes * len(v_values) + v_codes) * span + (hours - hour_min)
    cuts = np.flatnonzero(key[1:] != key[:-1]) + 1
    starts = np.concatenate([[0], cuts])
    if len(np.unique(key[starts])) == len(starts):
        # Each key is one contiguous run (capture objects are read in hour order): slice, no copy.
        ordered = batch
        sorted_key = key
    else:
        order = np.argsort(key, kind="stable")
        sorted_key = key[order]
        ordered = batch.take(pa.array(order))
        cuts = np.flatnonzero(sorted_key[1:] != sorted_key[:-1]) + 1
        starts = np.concatenate([[0], cuts])
    bounds = np.concatenate([starts, [batch.num_rows]])
    groups = list(zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True))
    sorted_key = sorted_key[starts]
    for (lo, hi), k in zip(groups, sorted_key.tolist(), strict=False):
        ev, h = divmod(k, span)
        e, v = divmod(ev, len(v_values))
        hour = h + hour_min
        yield (e_values[e], v_values[v], None if hour == null_hour else hour), ordered.slice(lo, hi - lo)
