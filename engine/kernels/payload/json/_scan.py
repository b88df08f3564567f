"""The numpy structural scanner: member spans of objects and arrays found over the whole byte buffer at once."""

from __future__ import annotations

import logging

import numpy as np
import polars as pl
import pyarrow as pa
from numpy.typing import NDArray

from engine.kernels.payload.json._common import _CLOSE, _DEPTH, _ITEM, _KEY, _TOKEN, _VALUE, _WS

logger = logging.getLogger(__name__)

# --- the numpy scanner ------------------------------------------------------------------------------------


class _Scan:
    """Structural tokens (``{}[],:`` outside strings) of valid JSON texts laid end to end in one buffer.

    Attributes:
        data: The Arrow data buffer holding the texts.
        offsets: Start of every text in `data`, plus the end of the last one.
        base: Start of the first text.
        pos: Position of every token in `data`.
        ch: The token's character.
        level: Nesting level of the container the token belongs to (a text's own brackets are level 1).
    """

    def __init__(self, data: pa.Buffer, offsets: NDArray[np.int64], pos: NDArray[np.int64], ch: NDArray[np.uint8]):
        self.data = data
        self.offsets = offsets
        self.base = int(offsets[0])
        self.pos = pos
        self.ch = ch
        # Texts are balanced, so depth is a running sum; a closing bracket belongs to the level it closes.
        self.level = np.cumsum(_DEPTH[ch], dtype=np.int32) + _CLOSE[ch]

    def row_of(self, positions: NDArray[np.int64]) -> NDArray[np.int64]:
        """Index of the text holding each position."""
        rows: NDArray[np.int64] = np.searchsorted(self.offsets, positions, side="right") - 1
        return rows


def _scan(texts: pl.Series) -> _Scan:
    """Find the structural tokens of valid JSON container texts with whole-buffer numpy operations."""
    arr = texts.rechunk().to_arrow(compat_level=pl.CompatLevel.oldest())
    if arr.type != pa.large_string():
        arr = arr.cast(pa.large_string())
    n = len(arr)
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int64, count=n + 1, offset=arr.offset * 8).copy()
    data_buf = arr.buffers()[2]
    base = int(offsets[0])
    data = np.frombuffer(data_buf, dtype=np.uint8)[base : int(offsets[-1])]
    quote = data == ord('"')
    slashes = np.flatnonzero(data == ord("\\"))
    if len(slashes):
        quotes = np.flatnonzero(quote)
        quote[quotes[_escaped(quotes, slashes)]] = False
    # Valid JSON strings pair their quotes, so the running parity of quotes marks the bytes inside strings.
    inside = np.bitwise_xor.accumulate(quote.view(np.uint8))
    tokens = np.flatnonzero(_TOKEN[data] & (inside == 0))
    return _Scan(data_buf, offsets, tokens + base, data[tokens])


def _level_spans(
    scan: _Scan, level: int
) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.int8], NDArray[np.int64]]:
    """Member spans of the containers at `level`: starts, ends, kinds and the index of the opening token.

    Every span between two consecutive tokens of one level is a member, except after a closing bracket
    (the next container of that level starts there). Spans are in buffer order and may be blank (the inside
    of an empty container, which holds no member).
    """
    at = np.flatnonzero(scan.level == level)
    ch = scan.ch[at]
    keep = ~_CLOSE[ch[:-1]]
    first, second = ch[:-1][keep], ch[1:][keep]
    starts = scan.pos[at[:-1][keep]] + 1
    ends = scan.pos[at[1:][keep]]
    kind = np.where(second == ord(":"), _KEY, np.where(first == ord(":"), _VALUE, _ITEM)).astype(np.int8)
    return starts, ends, kind, at[:-1][keep]


def _members(texts: pl.Series) -> pl.DataFrame:
    """Split JSON containers (valid, stripped texts starting with ``{`` or ``[``) into their direct members.

    Returns:
        One row per member, in text order: ``row`` (index into `texts`), ``kind`` (_KEY, _VALUE or _ITEM)
        and ``text`` (the member's JSON text, stripped). An object's keys and values alternate: key i pairs
        with value i.
    """
    scan = _scan(texts)
    starts, ends, kind, _ = _level_spans(scan, 1)
    members = pl.DataFrame(
        {
            "row": scan.row_of(starts),
            "kind": kind,
            "text": pl.Series("text", _spans(scan.data, starts, ends)).str.strip_chars(_WS),
        }
    )
    return members.filter(pl.col("text") != "")


def _escaped(quotes: NDArray[np.intp], slashes: NDArray[np.intp]) -> NDArray[np.bool_]:
    """Which quotes are escaped: preceded by a run of an odd number of backslashes."""
    breaks = np.flatnonzero(np.diff(slashes) != 1)
    run_first = np.concatenate(([0], breaks + 1))
    run_last = np.concatenate((breaks, [len(slashes) - 1]))
    odd_ends = slashes[run_last][(run_last - run_first) % 2 == 0]  # a run of odd length ends here
    if not len(odd_ends):
        return np.zeros(len(quotes), dtype=np.bool_)
    at = np.minimum(np.searchsorted(odd_ends, quotes - 1), len(odd_ends) - 1)
    escaped: NDArray[np.bool_] = odd_ends[at] == quotes - 1
    return escaped


def _spans(data: pa.Buffer, starts: NDArray[np.int64], ends: NDArray[np.int64]) -> pa.LargeStringArray:
    """The byte spans [start, end) of `data` as strings; spans are ordered and do not overlap.

    The spans and the gaps between them, taken as consecutive values of one array over the same buffer,
    form valid Arrow offsets; taking every other value then copies only the spans' bytes.
    """
    m = len(starts)
    if m == 0:
        return pa.array([], type=pa.large_string())
    offsets = np.empty(2 * m, dtype=np.int64)
    offsets[0::2] = starts
    offsets[1::2] = ends
    interleaved = pa.LargeStringArray.from_buffers(2 * m - 1, pa.py_buffer(offsets), data)
    return interleaved.take(pa.array(np.arange(0, 2 * m - 1, 2, dtype=np.int64)))


def _key_names(key_texts: pl.Series) -> pl.Series:
    """Object keys (JSON string texts) as their decoded names."""
    if bool(key_texts.str.contains("\\", literal=True).any()):
        return key_texts.str.json_decode(dtype=pl.String)
    return key_texts.str.strip_prefix('"').str.strip_suffix('"')
