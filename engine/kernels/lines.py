"""A unit's line geometry (pieces of whole lines, numpy offsets and provenance) and the per-line helpers that the
capture and ground-truth decoders share: UTF-8 check, pyarrow's second opinion on a line, field text."""

from __future__ import annotations

import functools
import io
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj

from engine.io.fetch import Piece

_OPEN_BRACE = ord("{")
_WHITESPACE = b" \t\r\n\x0b\x0c"
_WHITESPACE_BYTES = np.frombuffer(_WHITESPACE, dtype=np.uint8)

__all__ = [
    "NOT_JSON",
    "FieldError",
    "Lines",
    "field_text",
    "get_key",
    "nested_column",
    "not_json",
    "parse_line",
    "read_flat",
    "read_unit",
    "second_opinion",
    "unverified_lines",
    "valid_utf8",
    "value_at",
]


class Lines:
    """Line geometry of a unit, computed only as far as a path needs it.

    The fast path needs just the line count of each piece (known from fetching): when pyarrow
    returns one row per line, row i is line i. The byte positions of lines are computed (one numpy
    pass) only for units with blank lines, rejects or the per-line path.
    """

    def __init__(self, pieces: list[Piece]) -> None:
        self.pieces = pieces
        self.buf = b"".join(p.data for p in pieces)
        counts = np.fromiter((p.lines for p in pieces), dtype=np.int64, count=len(pieces))
        self.piece_end = np.cumsum(counts)  # exclusive line index where each piece ends
        self.total = int(self.piece_end[-1]) if len(pieces) else 0

    @functools.cached_property
    def ends(self) -> np.ndarray:
        # Every piece ends with "\n", so every line, the last included, ends at a newline.
        return np.flatnonzero(np.frombuffer(self.buf, dtype=np.uint8) == 10)

    @functools.cached_property
    def starts(self) -> np.ndarray:
        starts = np.empty_like(self.ends)
        if len(starts):
            starts[0] = 0
            starts[1:] = self.ends[:-1] + 1
        return starts

    @functools.cached_property
    def lengths(self) -> np.ndarray:
        lengths: np.ndarray = self.ends - self.starts
        return lengths

    @functools.cached_property
    def blank(self) -> np.ndarray:
        """Lines holding only whitespace. A line starting with "{" is a record candidate; others are rare."""
        arr = np.frombuffer(self.buf, dtype=np.uint8)
        nonempty = self.lengths > 0
        first = np.zeros(len(self.ends), dtype=np.uint8)
        first[nonempty] = arr[self.starts[nonempty]]
        blank: np.ndarray = first != _OPEN_BRACE
        suspects = np.flatnonzero(blank & nonempty)
        if len(suspects):
            # Count the non-whitespace bytes of those lines with one cumulative sum over the unit (a million
            # garbage lines must not cost a million Python calls).
            solid = np.cumsum(~np.isin(arr, _WHITESPACE_BYTES), dtype=np.int32 if len(arr) < 2**31 else np.int64)
            before = np.where(self.starts[suspects] > 0, solid[self.starts[suspects] - 1], 0)
            other = suspects[(solid[self.ends[suspects] - 1] - before) > 0]
            blank[other] = False
            self.other = len(other)
        else:
            self.other = 0
        return blank

    other: int  # non-blank lines that do not start with "{" (set with `blank`)

    def row_lines(self, rows: int) -> np.ndarray | None:
        """Line index of each of `rows` rows parsed from the unit, or None when that is ambiguous.

        pyarrow skips blank lines and reads two objects on one line as two rows, so a row count equal
        to the line count proves nothing by itself (one blank line and one double line cancel out).
        Every non-blank line of a parsed unit starts with "{" and so yields at least one row: rows ==
        non-blank lines proves one row per non-blank line. (The line starts cost one numpy pass over
        the unit, a few milliseconds per 8 MiB.)
        """
        if rows == self.total and self.total and all(p.braced for p in self.pieces):
            # Every line starts with "{" (each piece's fetch scan found so): no blank or other lines, so one
            # row per line is proven without another pass over the unit.
            return np.arange(self.total, dtype=np.int64)
        idx = np.flatnonzero(~self.blank)
        if self.other or rows != len(idx):
            return None
        return np.arange(self.total, dtype=np.int64) if len(idx) == self.total else idx

    def line(self, i: int) -> bytes:
        return self.buf[int(self.starts[i]) : int(self.ends[i])]

    def provenance(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Piece index and 1-based line number within its object, for line indices `idx`."""
        piece = np.searchsorted(self.piece_end, idx, side="right")
        piece_start = np.concatenate([[0], self.piece_end[:-1]])[piece]
        first = np.fromiter((p.first_line for p in self.pieces), dtype=np.int64, count=len(self.pieces))
        return piece, first[piece] + (idx - piece_start)


# What orjson says of a line whose first byte cannot begin a JSON value (taken from orjson itself, so that a line
# rejected by the vectorized check reads exactly as one rejected by the parser).
try:
    orjson.loads(b"x")
except orjson.JSONDecodeError as _exc:
    NOT_JSON = str(_exc)
_VALUE_START = np.zeros(256, dtype=bool)
_VALUE_START[np.frombuffer(b'{["-0123456789tfn' + _WHITESPACE, dtype=np.uint8)] = True
_VALUE_START[0x80:] = True  # a UTF-8 lead byte: orjson's own message (invalid UTF-8 or unexpected character)


def not_json(lines: Lines, idx: np.ndarray) -> np.ndarray:
    """Mask over lines `idx` (non-empty) whose first byte cannot begin a JSON value: invalid JSON, without parsing.

    A million garbage lines are rejected by this one numpy pass instead of a million parser errors.
    """
    first = np.frombuffer(lines.buf, dtype=np.uint8)[lines.starts[idx]]
    mask: np.ndarray = ~_VALUE_START[first]
    return mask


def valid_utf8(buf: bytes) -> bool:
    """Validate the whole unit at once (Arrow's SIMD UTF-8 check, no copy)."""
    offsets = pa.py_buffer(np.array([0, len(buf)], dtype=np.int64).tobytes())
    whole = pa.LargeBinaryArray.from_buffers(pa.large_binary(), 1, [None, offsets, pa.py_buffer(buf)])
    try:
        whole.cast(pa.large_string())
    except pa.ArrowInvalid:
        return False
    return True


def parse_line(line: bytes, parse: pj.ParseOptions) -> tuple[Any, str | None]:
    """One line of the per-line path as JSON: ``(value, None)``, or ``(None, orjson's message)`` if it is not JSON.

    orjson first; where it refuses, pyarrow's `second_opinion`, so that the per-line path accepts exactly what
    the unit's fast path would have.
    """
    try:
        return orjson.loads(line), None
    except orjson.JSONDecodeError as exc:
        row = second_opinion(line, parse)
        return (row, None) if row is not None else (None, str(exc))


def second_opinion(line: bytes, parse: pj.ParseOptions) -> dict[str, Any] | None:
    """The record pyarrow reads from `line` alone, for a line orjson refuses; None if pyarrow refuses it too.

    The fast path accepts what pyarrow accepts (``NaN`` or a 2,000-deep array in a field it ignores),
    so the per-line path must too: a record's fate may depend only on the record, never on whether
    another line of its unit sent the unit down this path. Exactly one row is required: two objects
    on one line are not a record.
    """
    stripped = line.strip(_WHITESPACE)
    if not (stripped.startswith(b"{") and stripped.endswith(b"}")):
        return None  # pyarrow reads only objects: no need to ask it (a million garbage lines stay cheap)
    if not valid_utf8(line):
        return None  # pyarrow would let invalid UTF-8 into string columns
    try:
        table = pj.read_json(
            io.BytesIO(line + b"\n"),
            read_options=pj.ReadOptions(block_size=max(1 << 16, len(line) + 2), use_threads=False),
            parse_options=parse,
        )
    except (pa.ArrowInvalid, UnicodeDecodeError):
        return None
    if table.num_rows != 1:
        return None
    row: dict[str, Any] = table.to_pylist()[0]
    return row


class FieldError(ValueError):
    """A field whose JSON cannot be kept as text (nested deeper than the serializer allows)."""


def field_text(v: Any) -> str | None:
    if v is None or isinstance(v, str):
        return v
    try:
        return orjson.dumps(v).decode()
    except orjson.JSONEncodeError as exc:
        raise FieldError(str(exc)) from None


def get_key(d: Any, key: str) -> Any:
    return d.get(key) if isinstance(d, dict) else None


def unverified_lines(pieces: list[Piece]) -> tuple[Lines, list[int], int]:
    """The lines of pieces inflated from a gzip stream that failed verification: (geometry, non-blank, blank).

    Such bytes may be decoded from corrupt input (gzip checks its CRC only at a member's end), so each
    non-blank line is a record and a reject with its own line number and raw bytes, never a row.
    """
    lines = Lines([p for p in pieces if p.error is not None and p.data])
    if not lines.total:
        return lines, [], 0
    nonblank = np.flatnonzero(~lines.blank).tolist()
    return lines, nonblank, lines.total - len(nonblank)


def read_unit(lines: Lines, parse: pj.ParseOptions, max_line_bytes: int) -> tuple[pa.Table, np.ndarray] | None:
    """The whole unit through `pyarrow.json` in one call, and the line of every row; None where it cannot be.

    None when a line is longer than `max_line_bytes`, the bytes are not UTF-8 (pyarrow would let invalid
    UTF-8 into string columns, where orjson rejects it line by line), pyarrow refuses the unit, or its rows
    are not one per non-blank line (an array line, two records on a line).
    """
    if any(len(p.data) > max_line_bytes for p in lines.pieces) and int(lines.lengths.max()) > max_line_bytes:
        return None
    if not valid_utf8(lines.buf):
        return None
    # One block for the whole unit: no line can straddle blocks, and large blocks parse fastest.
    block = max(1 << 20, len(lines.buf) + 1)
    try:
        table = pj.read_json(
            io.BytesIO(lines.buf),
            read_options=pj.ReadOptions(block_size=block, use_threads=False),
            parse_options=parse,
        )
    except (pa.ArrowInvalid, UnicodeDecodeError):
        return None
    idx = lines.row_lines(table.num_rows)
    return None if idx is None else (table, idx)


def nested_column(table: pa.Table, path: tuple[str, ...]) -> pa.ChunkedArray:
    """The column at `path` of a table pyarrow parsed (a field of structs of structs)."""
    col = table.column(path[0])
    for key in path[1:]:
        col = pc.struct_field(col, key)
    return col


def value_at(rec: dict[str, Any], path: tuple[str, ...]) -> Any:
    """The value at `path` of a parsed record; None where a level is missing or not an object."""
    value: Any = rec.get(path[0])
    for key in path[1:]:
        value = get_key(value, key)
    return value


def read_flat(
    lines: Lines, parse: pj.ParseOptions, paths: dict[str, tuple[str, ...]], max_line_bytes: int
) -> tuple[pa.Table, np.ndarray] | None:
    """The fast path of a JSON Lines decoder: flat string columns (name -> path in the record) of the whole
    unit read by `read_unit`, and the line of every row; None when the unit needs the per-line path."""
    if not lines.total:
        return pa.table({c: pa.array([], pa.string()) for c in paths}), np.empty(0, np.int64)
    read = read_unit(lines, parse, max_line_bytes)
    if read is None:
        return None
    table, idx = read
    return pa.table({c: nested_column(table, p) for c, p in paths.items()}), idx
