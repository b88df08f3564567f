"""JoinSource=Input outputs and appended keys: member spans of `SageMakerInput`/`SageMakerOutput` found by a numpy
scan over all texts at once, cut from the source text (never re-serialized, so numbers stay as written)."""

from __future__ import annotations

import logging

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = []

logger = logging.getLogger(__name__)

_WS = np.array([32, 9, 10, 13], dtype=np.uint8)


def _skip_ws(b: np.ndarray, pos: np.ndarray, step: int, limit: np.ndarray) -> np.ndarray:
    """Move each position over JSON whitespace (forward: step 1, at b[pos]; backward: step -1, at b[pos - 1]);
    a loop per whitespace byte in a row, not per row."""
    pos = pos.copy()
    look = 0 if step > 0 else -1
    active = np.flatnonzero(pos != limit)
    while len(active):
        ws = np.isin(b[pos[active] + look], _WS)
        active = active[ws]
        pos[active] += step
        active = active[pos[active] != limit[active]]
    return pos


def _member_spans(texts: pa.Array, key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Where the top-level member `key` of each JSON object text is, in bytes of the text, without parsing it.

    Returns (value start, value end, cut start, cut end), -1 where the member is absent: the value's exact text
    is ``text[vs:ve]``, and removing ``text[cs:ce]`` removes the member with one separating comma. Vectorized
    over the bytes (numpy): unescaped quotes delimit strings, brackets outside strings give the depth, and a
    member is a key string followed by a colon at depth 1. The texts must be valid JSON (rejects come first).
    """
    n = len(texts)
    none = np.full(n, -1, dtype=np.int64)
    buffers = texts.buffers()
    if not n or buffers[2] is None:
        return none, none.copy(), none.copy(), none.copy()
    offs = np.frombuffer(buffers[1], dtype=np.int32)[texts.offset : texts.offset + n + 1].astype(np.int64)
    lo, hi = int(offs[0]), int(offs[-1])
    b = np.frombuffer(buffers[2], dtype=np.uint8)[lo:hi]
    starts, ends = offs[:-1] - lo, offs[1:] - lo
    # Quotes not escaped: preceded by an even run of backslashes.
    quotes = np.flatnonzero(b == 34)
    slashes = b == 92
    if slashes.any() and len(quotes):
        last_plain = np.maximum.accumulate(np.where(slashes, -1, np.arange(len(b))))
        before = np.where(quotes > 0, last_plain[np.maximum(quotes - 1, 0)], -1)
        run = np.where(quotes > 0, quotes - 1 - before, 0)
        quotes = quotes[run % 2 == 0]
    row_quotes = np.searchsorted(quotes, starts)
    # Structural characters: those outside strings (an even count of quotes before them in their row).
    cand = np.flatnonzero(np.isin(b, np.frombuffer(b"{}[],:", dtype=np.uint8)))
    cand_row = np.searchsorted(starts, cand, side="right") - 1
    outside = (np.searchsorted(quotes, cand) - row_quotes[cand_row]) % 2 == 0
    s, s_row = cand[outside], cand_row[outside]
    ch = b[s]
    delta = np.where((ch == 123) | (ch == 91), 1, np.where((ch == 125) | (ch == 93), -1, 0))
    depth = np.cumsum(delta)
    first = np.searchsorted(s, starts)
    base = np.where(first > 0, depth[np.maximum(first - 1, 0)], 0)
    depth = depth - base[s_row]  # depth after the character, within its row
    colons = np.flatnonzero((ch == 58) & (depth == 1))
    k = np.frombuffer(key.encode(), dtype=np.uint8)
    c_pos = s[colons]
    qi = np.searchsorted(quotes, c_pos) - 1  # the key's closing quote, then its opening one
    ok = qi >= 1
    close = np.where(ok, quotes[np.maximum(qi, 0)], 0)
    open_ = np.where(ok, quotes[np.maximum(qi - 1, 0)], 0)
    ok &= (close - open_ - 1 == len(k)) & (open_ >= starts[s_row[colons]])
    if ok.any():
        at = open_[ok, None] + 1 + np.arange(len(k))
        ok[ok] = (b[at] == k).all(axis=1)
    hit = colons[ok]
    rows = s_row[hit]
    if not len(rows):
        return none, none.copy(), none.copy(), none.copy()
    rows, keep = np.unique(rows, return_index=True)  # the first such member of a row
    hit, key_open = hit[keep], open_[ok][keep]
    # The value runs to the next comma at depth 1 or to the object's closing brace.
    sep = np.flatnonzero(((ch == 44) & (depth == 1)) | ((ch == 125) & (depth == 0)))
    at_sep = np.searchsorted(sep, hit, side="right")
    closed = at_sep < len(sep)
    nxt = sep[np.minimum(at_sep, max(len(sep) - 1, 0))] if len(sep) else hit
    closed &= s_row[nxt] == rows  # not closed within its row: not valid JSON, the member is left alone
    rows, hit, key_open, nxt = rows[closed], hit[closed], key_open[closed], nxt[closed]
    vs = _skip_ws(b, s[hit] + 1, 1, ends[rows])
    ve = _skip_ws(b, s[nxt], -1, vs)
    comma_after = ch[nxt] == 44
    commas = sep[ch[sep] == 44]
    prev = np.searchsorted(commas, hit) - 1
    prev_at = commas[np.maximum(prev, 0)] if len(commas) else hit
    prev_pos = s[prev_at]
    has_prev = (prev >= 0) & (s_row[prev_at] == rows)
    after = _skip_ws(b, s[nxt] + 1, 1, ends[rows])
    cs = np.where(comma_after, key_open, np.where(has_prev, prev_pos, key_open))
    ce = np.where(comma_after, after, ve)
    out = [none.copy() for _ in range(4)]
    for arr, val in zip(out, (vs, ve, cs, ce), strict=True):
        arr[rows] = val - starts[rows]
    return out[0], out[1], out[2], out[3]


def _rebuild(texts: pa.Array, keep: bool, starts: np.ndarray, ends: np.ndarray) -> pa.Array:
    """Each text cut to ``[starts, ends)`` (`keep`) or with ``[starts, ends)`` removed (not `keep`); unchanged
    where starts is -1 and not `keep`, null where it is -1 and `keep`. Bytes are copied, never re-encoded."""
    n = len(texts)
    buffers = texts.buffers()
    offs = np.frombuffer(buffers[1], dtype=np.int32)[texts.offset : texts.offset + n + 1].astype(np.int64)
    data = np.frombuffer(buffers[2], dtype=np.uint8) if buffers[2] is not None else np.zeros(0, np.uint8)
    found = starts >= 0
    s = np.where(found, offs[:-1] + starts, offs[:-1])
    e = np.where(found, offs[:-1] + ends, offs[1:])
    # Pieces per row: kept rows one piece [s, e); cut rows two pieces [row start, s) and [e, row end).
    piece_s = np.where(keep, s, offs[:-1])
    piece_e = np.where(keep, e, np.where(found, s, offs[1:]))
    tail_s = np.where(keep | ~found, 0, e)
    tail_e = np.where(keep | ~found, 0, offs[1:])
    ps = np.stack([piece_s, tail_s], axis=1).ravel()
    pe = np.stack([piece_e, tail_e], axis=1).ravel()
    lengths = pe - ps
    total = int(lengths.sum())
    piece_offs = np.concatenate([[0], np.cumsum(lengths)])
    idx = np.arange(total, dtype=np.int64) + np.repeat(ps - piece_offs[:-1], lengths)
    out_offs = piece_offs[::2].astype(np.int32)
    arr = pa.StringArray.from_buffers(n, pa.py_buffer(out_offs.tobytes()), pa.py_buffer(data[idx].tobytes()))
    valid: pa.Array | None = texts.is_valid() if texts.null_count else None
    if keep and not found.all():
        mask = pa.array(found)
        valid = mask if valid is None else pc.and_(valid, mask)
    return arr if valid is None else pc.if_else(valid, arr, pa.scalar(None, pa.string()))


_CSV_FIELD = r'(?:"(?:[^"]|"")*"|[^,"]*)'  # one RFC 4180 field, quoted (commas and "" inside) or not


def _split_joined_csv(out: pa.Array, k: int, m: int) -> tuple[pa.Array, pa.Array]:
    """CSV lines of exactly k + m fields cut after field k, as their own text (null where the count differs)."""
    first = rf"(?:{_CSV_FIELD},){{{k - 1}}}{_CSV_FIELD}" if k > 1 else _CSV_FIELD
    rest = rf"(?:{_CSV_FIELD},){{{m - 1}}}{_CSV_FIELD}" if m > 1 else _CSV_FIELD
    parts = pc.extract_regex(out, rf"^(?P<i>{first}),(?P<o>{rest})$")
    return pc.struct_field(parts, "i"), pc.struct_field(parts, "o")


def _joined_input(out: pa.Array) -> pa.Array:
    """The input inside joined JSON outputs, as its own text: ``SageMakerInput`` when the transform wrapped a
    non-object input, else the object without ``SageMakerOutput`` (formats reference 4.4); null if neither."""
    vs, ve, _, _ = _member_spans(out, "SageMakerInput")
    wrapped = _rebuild(out, True, vs, ve)
    _, _, cs, ce = _member_spans(out, "SageMakerOutput")
    rest = pc.if_else(pa.array(cs >= 0), _rebuild(out, False, cs, ce), pa.scalar(None, pa.string()))
    return pc.coalesce(wrapped, rest)
