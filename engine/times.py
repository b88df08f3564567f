"""Times: the one timestamp type of every table, and window arithmetic on it, vectorized.

Times are kept to the microsecond (SageMaker's SDK writes ``2020-12-03T19:08:02.123456``); a value
must lie in years 1-9999 after normalising to UTC, the range Parquet readers, Python and hive paths share.
"""

from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
import polars as pl
import pyarrow as pa

__all__ = ["MAX_US", "MIN_US", "TIME_TYPE", "US_PER_HOUR", "epoch_us", "in_window", "parse_inference_times"]

TIME_TYPE = pa.timestamp("us", tz="UTC")
US_PER_HOUR = 3_600_000_000
MIN_US = (
    int((datetime(1, 1, 1, tzinfo=timezone.utc) - datetime(1970, 1, 1, tzinfo=timezone.utc)).total_seconds()) * 10**6
)
MAX_US = (  # exclusive: 10000-01-01T00:00:00Z
    int((datetime(9999, 12, 31, 23, tzinfo=timezone.utc) - datetime(1970, 1, 1, tzinfo=timezone.utc)).total_seconds())
    * 10**6
    + US_PER_HOUR
)


def epoch_us(t: datetime) -> int:
    """Microseconds since the epoch, exactly (no float rounding)."""
    if t.tzinfo is None:
        t = t.replace(tzinfo=timezone.utc)  # a naive time in a table or statistics is UTC
    delta = t - datetime(1970, 1, 1, tzinfo=timezone.utc)
    return (delta.days * 86_400 + delta.seconds) * 10**6 + delta.microseconds


def in_window(times: pa.Array | pa.ChunkedArray, start: datetime | None, end: datetime | None) -> np.ndarray:
    """Mask of `times` within [start, end); null times are outside any bounded window."""
    us = np.asarray(times.cast(TIME_TYPE).cast(pa.int64()).to_numpy(zero_copy_only=False))
    valid = ~np.isnan(us) if us.dtype.kind == "f" else np.ones(len(us), dtype=bool)
    us = np.nan_to_num(us, nan=0).astype(np.int64) if us.dtype.kind == "f" else us.astype(np.int64)
    inside = valid.copy() if (start is not None or end is not None) else np.ones(len(us), dtype=bool)
    if start is not None:
        inside &= us >= epoch_us(start)
    if end is not None:
        inside &= us < epoch_us(end)
    return inside


_TIME_FORMATS = (
    "%Y-%m-%dT%H:%M:%S%.fZ",
    "%Y-%m-%dT%H:%M:%S%.f",
    "%Y-%m-%dT%H:%M:%S%.f%:z",
    "%Y-%m-%dT%H:%M:%S%.f%z",
)


def parse_inference_times(values: pa.Array) -> pa.Array:
    """Parse inferenceTime strings to timestamp[us, UTC]; unparseable values become null.

    Accepts what SageMaker and its SDK write: ``...Z`` with or without fractional seconds (kept to the
    microsecond), no zone (taken as UTC), or an explicit offset. A time outside years 1-9999 once in
    UTC (``10000-01-01T00:00:00Z``, ``9999-12-31T23:59:59-01:00``, year 0) is null: no reader, no
    Python `datetime` and no hive path can hold it.
    """
    s = pl.Series("t", values, dtype=pl.String) if len(values) else pl.Series("t", [], dtype=pl.String)
    parsed = pl.coalesce([pl.lit(s).str.strptime(pl.Datetime("us", "UTC"), f, strict=False) for f in _TIME_FORMATS])
    raw = parsed.cast(pl.Int64)
    ranged = pl.when((raw >= MIN_US) & (raw < MAX_US)).then(parsed).otherwise(None)
    out = pl.select(ranged).to_series().to_arrow()
    return out.cast(TIME_TYPE)
