"""Partition: split record batches by (endpoint, variant, UTC hour) without a Python loop per row."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from engine.times import TIME_TYPE, US_PER_HOUR

__all__ = ["HIVE_NULL", "PartitionKey", "split_by_hour"]

HIVE_NULL = "__HIVE_DEFAULT_PARTITION__"

PartitionKey = tuple[str | None, str | None, int | None]  # endpoint, variant, epoch hour


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
