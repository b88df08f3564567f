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


# SageMaker's own shape, ``2021-05-18T00:29:04Z``: almost every value is parsed by numpy from this template.
_SHAPE = np.frombuffer(b"0000-00-00T00:00:00Z", dtype=np.uint8)
_DIGITS = np.equal(_SHAPE, ord("0"))
_MONTH_DAYS = np.array([31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31], dtype=np.int64)


def _fixed_shape(values: pa.StringArray) -> tuple[np.ndarray, np.ndarray]:
    """Microseconds of the values of SageMaker's shape, and the mask of those that are a valid date and time.

    Every other value (another shape, an invalid date, a null) is left to the general parser: this only
    spares it the common case, where chrono re-reads the format string for every value.
    """
    n = len(values)
    us = np.zeros(n, dtype=np.int64)
    ok = np.zeros(n, dtype=bool)
    data = values.buffers()[2]
    if not n or data is None:
        return us, ok
    offsets = np.frombuffer(values.buffers()[1], dtype=np.int32, count=n + 1, offset=values.offset * 4)
    width = len(_SHAPE)
    candidate = np.diff(offsets) == width
    if values.null_count:
        candidate &= np.asarray(values.is_valid())
    rows = np.flatnonzero(candidate)
    if not len(rows):
        return us, ok
    raw = np.frombuffer(data, dtype=np.uint8)
    if len(rows) == n:  # every value 20 bytes: they are contiguous, a view of the data buffer
        text = raw[offsets[0] : offsets[-1]].reshape(n, width)
    else:
        text = raw[offsets[rows][:, None] + np.arange(width)]
    shaped = (text[:, ~_DIGITS] == _SHAPE[~_DIGITS]).all(axis=1)
    d = text[:, _DIGITS].astype(np.int64) - ord("0")
    shaped &= ((d >= 0) & (d <= 9)).all(axis=1)
    year = d[:, 0] * 1000 + d[:, 1] * 100 + d[:, 2] * 10 + d[:, 3]
    month, day = d[:, 4] * 10 + d[:, 5], d[:, 6] * 10 + d[:, 7]
    hour, minute, second = d[:, 8] * 10 + d[:, 9], d[:, 10] * 10 + d[:, 11], d[:, 12] * 10 + d[:, 13]
    leap = (year % 4 == 0) & ((year % 100 != 0) | (year % 400 == 0))
    month_days = _MONTH_DAYS[np.clip(month, 1, 12) - 1] + (leap & (month == 2))
    shaped &= (year >= 1) & (month >= 1) & (month <= 12) & (day >= 1) & (day <= month_days)
    shaped &= (hour < 24) & (minute < 60) & (second < 60)  # a leap second (:60) is the general parser's
    # Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's days_from_civil; years here are >= 0).
    y = year - (month <= 2)
    era = y // 400
    yoe = y - era * 400
    doy = (153 * ((month + 9) % 12) + 2) // 5 + day - 1
    days = era * 146_097 + yoe * 365 + yoe // 4 - yoe // 100 + doy - 719_468
    us[rows] = (days * 86_400 + hour * 3_600 + minute * 60 + second) * 1_000_000
    ok[rows] = shaped
    return us, ok


def _general(values: pa.Array) -> pa.Array:
    s = pl.Series("t", values, dtype=pl.String) if len(values) else pl.Series("t", [], dtype=pl.String)
    parsed = pl.coalesce([pl.lit(s).str.strptime(pl.Datetime("us", "UTC"), f, strict=False) for f in _TIME_FORMATS])
    raw = parsed.cast(pl.Int64)
    ranged = pl.when((raw >= MIN_US) & (raw < MAX_US)).then(parsed).otherwise(None)
    out = pl.select(ranged).to_series().to_arrow()
    return out.cast(TIME_TYPE)


def parse_inference_times(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    """Parse inferenceTime strings to timestamp[us, UTC]; unparseable values become null.

    Accepts what SageMaker and its SDK write: ``...Z`` with or without fractional seconds (kept to the
    microsecond), no zone (taken as UTC), or an explicit offset. A time outside years 1-9999 once in
    UTC (``10000-01-01T00:00:00Z``, ``9999-12-31T23:59:59-01:00``, year 0) is null: no reader, no
    Python `datetime` and no hive path can hold it.
    """
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if values.type != pa.string():
        values = values.cast(pa.string())
    us, ok = _fixed_shape(values)
    if ok.all():
        return pa.Array.from_buffers(TIME_TYPE, len(us), [None, pa.py_buffer(us)])
    rest = np.flatnonzero(~ok)
    general = _general(values.take(pa.array(rest)))
    valid = ok.copy()
    valid[rest] = np.asarray(general.is_valid())
    us[rest] = np.asarray(general.cast(pa.int64()).fill_null(0))
    return pa.array(us, type=pa.int64(), mask=~valid).cast(TIME_TYPE)
