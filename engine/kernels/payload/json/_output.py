"""Columns to Arrow: plain types, the column spec's casts and the rows each cast fails on."""

from __future__ import annotations

import logging

import numpy as np
import polars as pl
import pyarrow as pa
from numpy.typing import NDArray

from engine.kernels.payload.json._columns import _as_text
from engine.kernels.payload.json._common import Columns, _clip
from engine.kernels.payload.spec import SideSpec

logger = logging.getLogger(__name__)

# --- output ------------------------------------------------------------------------------------------------


def _plain_type(t: pa.DataType) -> pa.DataType:
    """Plain Arrow types for the output: string rather than large_string/string_view, list not large_list."""
    if t in (pa.large_string(), pa.string_view()):
        return pa.string()
    if t in (pa.large_binary(), pa.binary_view()):
        return pa.binary()
    if pa.types.is_large_list(t) or pa.types.is_list_view(t) or pa.types.is_list(t):
        return pa.list_(_plain_type(t.value_type))
    return t


def _plain(s: pl.Series) -> pa.Array:
    """A column as an Arrow array of plain types."""
    arr = s.to_arrow(compat_level=pl.CompatLevel.oldest())
    plain = _plain_type(arr.type)
    return arr if plain == arr.type else arr.cast(plain)


def _apply_spec(columns: Columns, spec: SideSpec, n: int) -> tuple[dict[str, pa.Array], list[tuple[int, str]]]:
    """The spec's columns cast to its types; rows whose value cannot be cast, with a detail, in row order."""
    out: dict[str, pa.Array] = {}
    bad: list[tuple[int, str]] = []
    for name, target in spec.columns:
        src = columns.get(name)
        if src is None:
            out[name] = pa.nulls(n, type=target)
            continue
        result, failures = _cast(src, target)
        out[name] = result
        if len(failures):
            values = src.gather(failures)
            for row, value in zip(failures.tolist(), values.to_list(), strict=True):
                bad.append((row, _clip(f"column {name!r}: cannot cast {value!r} to {target}")))
    bad.sort(key=lambda item: item[0])
    return out, bad


def _cast(s: pl.Series, target: pa.DataType) -> tuple[pa.Array, NDArray[np.int64]]:
    """Cast a column to an Arrow type; returns the array and the rows whose value could not be cast."""
    if isinstance(s.dtype, pl.List):
        # A numeric array kept in list mode: its items take the declared type.
        items = pl.DataFrame({"row": np.arange(len(s), dtype=np.int64), "v": s}).explode("v")
        cast_items = _cast_scalar(items["v"], target)
        failed = items["row"].filter(cast_items.is_null() & items["v"].is_not_null()).unique().sort()
        result = s.cast(pl.List(_polars_type(target)), strict=False)
        arr = _plain(result)
        want = pa.list_(target)
        return (arr if arr.type == want else arr.cast(want)), failed.to_numpy().astype(np.int64)
    result = _cast_scalar(s, target)
    failed_mask = result.is_null() & s.is_not_null()
    arr = result.to_arrow(compat_level=pl.CompatLevel.oldest())
    if arr.type != target:
        arr = arr.cast(target)
    return arr, np.flatnonzero(failed_mask.to_numpy()).astype(np.int64)


def _polars_type(target: pa.DataType) -> pl.DataType:
    """The polars dtype of an Arrow type."""
    empty = pl.from_arrow(pa.array([], type=target))
    assert isinstance(empty, pl.Series)
    return empty.dtype


def _cast_scalar(s: pl.Series, target: pa.DataType) -> pl.Series:
    """Non-strict cast of a scalar column: values that cannot be cast become null (the caller compares)."""
    want = _polars_type(target)
    if s.dtype == pl.Null:
        return pl.Series(s.name, [None] * len(s), dtype=want)
    if want == pl.String:
        return _as_text(s)
    if want == pl.Boolean and s.dtype == pl.String:
        # Polars has no string -> bool cast; JSON spells booleans in lower case.
        flags: pl.Series = s.replace_strict({"true": True, "false": False}, default=None, return_dtype=pl.Boolean)
        return flags
    if isinstance(want, pl.Datetime) and s.dtype == pl.String:
        times: pl.Series = s.str.to_datetime(time_unit=want.time_unit, time_zone=want.time_zone, strict=False)
        return times
    if want == pl.Float32:
        # Narrowing overflows to infinity instead of failing; an infinite result of a finite value fails.
        wide = _cast_scalar(s, pa.float64())
        narrow = pl.col("v").cast(pl.Float32)
        overflow = narrow.is_infinite() & pl.col("v").is_finite()
        floats: pl.Series = pl.DataFrame({"v": wide}).select(pl.when(~overflow).then(narrow))["v"]
        return floats
    if want.is_integer() and s.dtype.is_float():
        # A cast would truncate fractions; only whole numbers are castable.
        whole = pl.col("v").is_finite() & (pl.col("v") == pl.col("v").floor())
        ints: pl.Series = pl.DataFrame({"v": s}).select(pl.when(whole).then(pl.col("v")).cast(want, strict=False))["v"]
        return ints
    try:
        cast: pl.Series = s.cast(want, strict=False)
        return cast
    except pl.exceptions.PolarsError:
        # No cast exists between the types (e.g. list to number): every value fails.
        return pl.Series(s.name, [None] * len(s), dtype=want)
