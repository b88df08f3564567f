"""When pyarrow's parse of every unit can stand in for the strict RFC 8259 validation (serde_json).

pyarrow's JSON reader parses with rapidjson, flags ``kParseIterativeFlag | kParseNanAndInfFlag |
kParseStopWhenDoneFlag | kParseNumbersAsStringsFlag`` (Arrow's ``cpp/src/arrow/json/parser.cc``), without
``kParseValidateEncodingFlag``. Without those extensions rapidjson is RFC 8259 strict: raw control characters
in strings, invalid escapes, lone surrogates (high and low), leading zeros, ``1.``, ``.5``, ``+1``, trailing
commas, comments and truncated texts all raise. What it accepts and serde_json (the validation) rejects:

* ``NaN``, ``Inf``, ``Infinity`` with an optional sign (the NaN-and-Inf flag), and numbers beyond double range
  (``2e308``, read as infinity): every number literal lands in a numeric column of the table (a number after
  a string in one field raises), so a non-finite float anywhere in the table catches both, and a text holding
  ``NaN`` or ``Inf`` anywhere is validated anyway;
* invalid UTF-8 (no encoding check): the bodies are checked with Arrow's UTF-8 validation first;
* more than one value per text (the stop-when-done flag reads a stream of values): the fast path demands one
  row per unit;
* nesting of 128 levels and more (iterative parsing has no depth limit; serde_json's is 128): the table's
  type is as deep as the deepest value, so a deep type sends the batch to the validation;
* a UTF-8 byte order mark at the start of the buffer: units must start with ``{``.

Escaped surrogates (``\\ud...``) are validated too, only because they are rare and a pair is easy to get wrong.
Any unit that is suspect is validated the strict way; if one fails, the whole batch takes the strict path.
"""

from __future__ import annotations

import logging
from typing import Final

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

logger = logging.getLogger(__name__)

__all__ = ["_bodies_utf8", "_suspects", "_table_trusted"]

# serde_json refuses nesting of 128 levels; keep well below it (an object record is level 1).
_MAX_DEPTH: Final = 100
_SUSPECT: Final = ["NaN", "Inf", "\\ud", "\\uD"]


def _bodies_utf8(bodies: pa.Array) -> bool:
    """Whether every body is valid UTF-8 (Arrow's full validation of a string array checks exactly that)."""
    try:
        bodies.validate(full=True)
    except pa.ArrowInvalid:
        return False
    return True


def _suspects(texts: pl.Series) -> pl.Series:
    """Texts that pyarrow's parse does not vouch for on their own: they are validated the strict way."""
    return texts.str.contains_any(_SUSPECT)


def _table_trusted(table: pa.Table) -> bool:
    """Whether pyarrow's table of the units can hold nothing serde_json rejects: shallow and only finite floats."""
    return all(_depth(f.type) < _MAX_DEPTH and _finite(col) for f, col in zip(table.schema, table.columns, strict=True))


def _depth(dtype: pa.DataType) -> int:
    """Nesting levels of a type (a list or struct is one); the record object itself is one more."""
    if pa.types.is_struct(dtype):
        return 1 + max((_depth(dtype.field(i).type) for i in range(dtype.num_fields)), default=0)
    if pa.types.is_list(dtype) or pa.types.is_large_list(dtype):
        return 1 + _depth(dtype.value_type)
    return 0


def _finite(values: pa.Array | pa.ChunkedArray) -> bool:
    """Whether every float in `values`, nested ones included, is finite (nulls ignored)."""
    dtype = values.type
    if pa.types.is_floating(dtype):
        return not bool(pc.any(pc.invert(pc.is_finite(values))).as_py())
    if pa.types.is_struct(dtype):
        chunks = values.chunks if isinstance(values, pa.ChunkedArray) else [values]
        return all(_finite(chunk.field(i)) for chunk in chunks for i in range(dtype.num_fields))
    if pa.types.is_list(dtype) or pa.types.is_large_list(dtype):
        chunks = values.chunks if isinstance(values, pa.ChunkedArray) else [values]
        return all(_finite(chunk.values) for chunk in chunks)
    return True
