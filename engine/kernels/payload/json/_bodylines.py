"""JSON Lines bodies read whole by pyarrow: their lines counted over the byte buffer instead of split out.

Splitting every body into line texts (polars ``str.split`` + ``explode``) costs a quarter of decoding JSON
Lines. pyarrow's reader takes the bodies as they are, one after the other with a newline between them, and
skips blank lines; what it does not tell is which body each row came from. That is the number of non-blank
lines of each body, counted here with whole-buffer numpy operations, *provided* no value spans lines and no line
holds two: every non-blank line, bare of its ``\\r``, must start with ``{`` and end with ``}``. Then a value
cannot continue past its line (after a closing brace the next token would have to be ``,``, ``}`` or ``]``,
but the next line opens with ``{``; a raw newline inside a string is refused by rapidjson), every line holds at
least one value, and the reader's row count equal to the line count means exactly one each.
"""

from __future__ import annotations

import logging

import numpy as np
import polars as pl
import pyarrow as pa
from numpy.typing import NDArray

logger = logging.getLogger(__name__)

__all__ = ["_line_counts"]

_WS_BYTE = np.zeros(256, dtype=np.bool_)
_WS_BYTE[list(b" \t\r\n")] = True


def _line_counts(texts: pl.Series) -> NDArray[np.int64] | None:
    """Non-blank lines of every body, or None unless each of them, bare of a final ``\\r``, is ``{...}``.

    Lines with other leading or trailing whitespace, or whitespace-only lines other than empty and ``\\r``,
    also give None: the caller then splits the bodies into lines the usual way.
    """
    arr = texts.rechunk().to_arrow(compat_level=pl.CompatLevel.oldest())
    if arr.type != pa.large_string():
        arr = arr.cast(pa.large_string())
    n = len(arr)
    if n == 0:
        return None
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int64, count=n + 1, offset=arr.offset * 8)
    base, end = int(offsets[0]), int(offsets[-1])
    if end == base:
        return None  # only empty bodies: nothing to read
    data = np.frombuffer(arr.buffers()[2], dtype=np.uint8)
    newlines = np.flatnonzero(data[base:end] == ord("\n")) + base
    # Every line is [start, end): bodies start lines, newlines end them and start the next one.
    starts = np.sort(np.concatenate((offsets[:-1], newlines + 1)), kind="stable")
    ends = np.sort(np.concatenate((newlines, offsets[1:])), kind="stable")
    ends = ends - ((ends > starts) & (data[np.maximum(ends - 1, 0)] == ord("\r")))
    filled = ends > starts
    first = data[starts[filled]]
    last = data[ends[filled] - 1]
    if not (bool((first == ord("{")).all()) and bool((last == ord("}")).all())):
        return None
    body = np.searchsorted(offsets, starts[filled], side="right") - 1
    counts: NDArray[np.int64] = np.bincount(body, minlength=n).astype(np.int64)
    return counts
