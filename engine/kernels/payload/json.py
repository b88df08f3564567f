"""Decode JSON and JSON Lines payload bodies (``captureData.*.data``) into typed record columns.

Contract of :func:`decode_json_bodies` (one call decodes one side, input or output, of a batch of events):

1. **Records of a body.**

   * JSON Lines (``lines=True``): every non-blank line is one record. Lines end in ``\\n`` or ``\\r\\n``; a
     trailing newline, blank and whitespace-only lines are not records. A line is never unwrapped: a line
     ``{"instances": [...]}`` is one object record.
   * JSON (``lines=False``): the whole body is ONE document, never split on newlines (pretty-printed bodies
     contain them). An object holding a list under ``instances``/``inputs`` (input side) or
     ``predictions``/``outputs`` (output side) yields the list's items as records; failing those, whichever of
     ``instances``, ``predictions``, ``inputs``, ``outputs`` (checked in the order the side prefers:
     input ``instances, inputs, predictions, outputs``; output ``predictions, outputs, instances, inputs``)
     holds a list. A top-level list yields its items, except on the input side a list whose items are all
     scalars: that request body is ONE instance (``[0.19, 0.0, 10.81]``, TF Serving's and sklearn's single
     row), while a list of lists or objects holds many. (On the output side a list of scalars stays one
     record per item: sklearn's containers answer a batch of rows with ``[1, 0, 1]``.) Any other object,
     or a scalar, is one record.

2. **Columns of a record.**

   * An object record is flattened: nested objects become ``parent.child`` columns, recursively. A key that
     occurs twice in one object keeps its first value (what the polars JSON reader does).
   * Arrays whose items are all numbers (or null) become one ``list<double>`` column named by the field
     (``arrays="list"``) or float64 columns ``field_0..field_k`` (``arrays="expand"``; k + 1 = the longest
     array of the batch, shorter arrays give nulls, a batch of only empty arrays gives no column).
   * A scalar record (a ``predictions`` item ``3.5``, a JSON Lines line ``0.93``) is one column:
     ``prediction`` (output side) or ``f0`` (input side).
   * An array record (an ``instances`` item ``[1, 2, 3]``) gives one float64 column per position: ``f0..fN``
     (input) or ``prediction_0..prediction_k`` (output). Positions holding something other than numbers are
     typed by the rules below (objects in them are flattened as ``f0.a``).
   * Types, decided per column over the whole batch (nulls and absent keys ignored): only integers that fit
     int64 -> int64; numbers otherwise -> float64; booleans -> bool; strings -> string; only nulls -> the
     Arrow ``null`` type. Anything else is *mixed* and becomes a string column (with a warning in the log):
     a string value as its text, any other value as its JSON text exactly as the body wrote it (``1e5``,
     ``2.50``, ``true``, ``{"b": 1}``); booleans mixed with numbers count as mixed. Arrays holding anything
     but numbers are rendered as polars renders JSON (``[1, "x"]``). Columns are plain Arrow types
     (``string``, ``list<double>``), in order of first appearance (object records first, then scalar
     records, then array records; fields of nested objects in the order polars' schema inference lists them).
   * Two record shapes producing the same column name (e.g. a ``prediction`` field in some object records
     and scalar records) share the column: numbers widen to float64, other differing types become strings.

3. **Explicit spec** (``spec.columns`` non-empty): the table has exactly the spec's columns, in its order and
   types. Object records are matched by field path (after flattening, and after expansion in expand mode);
   scalar and array records by position, like CSV (a scalar record fills ``spec.prediction`` on the output
   side if set, else the first column; item ``i`` of an array record fills column ``i``; items beyond the
   spec are dropped). A field absent from a record is null. A list kept in list mode is cast item-wise
   (``list<declared type>``). A value that cannot be cast (``"abc"`` to float64, ``1.5`` to int64, an
   out-of-range integer) fails its body with ``invalid_value`` and a detail naming the column and value.

4. **Failures**, keyed by body index in ``SideRecords.failed``: a body (or, in JSON Lines, a line) that is not
   valid JSON (RFC 8259 as serde_json checks it: ``NaN``, lone surrogates, raw control characters in strings
   and trailing data are invalid) -> ``("invalid_json", detail)``; valid JSON the polars reader cannot
   represent (e.g. an integer literal beyond 128 bits inside an array) -> ``invalid_json`` too, found by
   bisection so that only those bodies fail; a body with no records
   (blank, only blank lines, an empty list) -> ``("empty_payload", detail)``. Failed bodies contribute no
   records; other bodies are unaffected.

5. **Vectorized.** There is no Python loop per record or value. Validity is checked for all bodies (or lines)
   at once with polars' JSONPath matcher (serde_json); records are typed by one polars ``read_ndjson`` over
   all of them with schema inference over every row. The two run concurrently (polars releases the GIL); the
   decode is kept only if every body turns out valid, else it is redone on the valid ones. When inference
   fails or yields a type the rules above do not allow (a type conflict), a numpy scanner splits the objects
   into key/value texts (quote parity and bracket depth over the whole byte buffer) and every key is decoded
   on its own, recursively, with the same rules; the same scanner unwraps JSON documents into records.
   Python loops run only over columns, over bodies that failed (to word their detail) and, when polars
   rejects JSON that passed validation, over a bisection of the bodies.

6. ``event`` gives the body index of every record: non-decreasing, the records of a body in their order.
"""

from __future__ import annotations

import io
import logging
import re
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Final, Literal

import numpy as np
import orjson
import polars as pl
import pyarrow as pa
from numpy.typing import NDArray

from engine.kernels.payload.records import SideRecords
from engine.kernels.payload.spec import ArrayMode, SideSpec

__all__ = ["decode_json_bodies"]

logger = logging.getLogger(__name__)

Side = Literal["input", "output"]
Columns = dict[str, pl.Series]
Failures = dict[int, tuple[str, str]]

# Container keys in the order each side prefers them.
_CONTAINERS: Final[dict[str, tuple[str, ...]]] = {
    "input": ("instances", "inputs", "predictions", "outputs"),
    "output": ("predictions", "outputs", "instances", "inputs"),
}
_WS: Final = " \t\r\n"  # JSON whitespace; str.strip_chars() alone would also strip Unicode spaces
_DETAIL_MAX: Final = 200

# Kinds of JSON values, from the first character of their (stripped) text.
_OBJ, _ARR, _STR, _BOOL, _NULL, _INT, _FLOAT = range(7)
_FIRST_CHAR_KIND: Final = {"{": _OBJ, "[": _ARR, '"': _STR, "t": _BOOL, "f": _BOOL, "n": _NULL}
# Valid JSON texts made of these characters only hold numbers and null, so this matches numeric arrays.
_NUMERIC_ARRAY: Final = r"^\[[\s0-9eE+\-.,nul]*\]$"

# Member spans found by the scanner.
_KEY, _VALUE, _ITEM = 0, 1, 2

_TOKEN = np.zeros(256, dtype=np.bool_)
_TOKEN[list(b"{}[],:")] = True
_DEPTH = np.zeros(256, dtype=np.int64)
_DEPTH[list(b"{[")] = 1
_DEPTH[list(b"}]")] = -1
_CLOSE = np.zeros(256, dtype=np.bool_)
_CLOSE[list(b"}]")] = True


class _Unsupported(Exception):
    """The fast path produced a type the column rules do not allow; decode the level key by key instead."""


def decode_json_bodies(
    bodies: pa.Array,
    *,
    lines: bool,
    side: Literal["input", "output"],
    spec: SideSpec,
    arrays: ArrayMode,
) -> SideRecords:
    """Decode JSON (or JSON Lines) payload bodies into one row per record.

    Args:
        bodies: String (or large_string) array of bodies without nulls; may be empty.
        lines: True for JSON Lines (``application/jsonlines``): one JSON value per non-blank line.
        side: Which side the bodies are; it picks default column names and container keys.
        spec: Explicit columns, or an empty spec for the default naming and typing.
        arrays: ``"list"`` for one list column per numeric array, ``"expand"`` for ``name_i`` columns.

    Returns:
        The records' body indexes, their columns and the failed bodies, as described in the module docstring.
    """
    n = len(bodies)
    texts = pl.Series("text", bodies).cast(pl.String)
    failed: Failures = {}

    units = _lines(texts) if lines else _documents(texts)
    # Validation and a first decode attempt are independent, and polars and numpy release the GIL: overlap
    # them. The guess is kept only if every unit is valid, so it always equals the validated decode.
    with ThreadPoolExecutor(max_workers=1) as pool:
        validity = pool.submit(_is_valid, units["text"])
        guessed_records, columns = _guess(units, lines, side, spec, arrays)
        valid = validity.result()
    if bool(valid.all()) and guessed_records is not None:
        records = guessed_records
    else:
        failed.update(_invalid_details(units.filter(~valid), lines))
        units = units.filter(valid)
        records = _records(units, lines, side)
        columns = None

    has_unit = np.zeros(n, dtype=np.bool_)
    has_unit[units["ev"].to_numpy()] = True
    has_record = np.zeros(n, dtype=np.bool_)
    has_record[records["ev"].to_numpy()] = True
    for ev in np.flatnonzero(~has_record).tolist():
        if ev in failed:
            continue
        if has_unit[ev]:
            failed[ev] = ("empty_payload", "the body holds an empty list of records")
        else:
            failed[ev] = ("empty_payload", "the body has no non-blank line" if lines else "the body is blank")

    if columns is None:
        columns, undecodable = _decode_with_bisection(records, side, spec, arrays)
        failed.update(undecodable)
    events = records["ev"].to_numpy().astype(np.int64)
    if spec.columns:
        table_columns, bad = _apply_spec(columns, spec, len(records))
        for row, detail in bad:
            failed.setdefault(int(events[row]), ("invalid_value", detail))
    else:
        table_columns = {name: _plain(s) for name, s in columns.items()}
    keep = ~np.isin(events, np.fromiter(failed, dtype=np.int64, count=len(failed)))
    if not keep.all():
        mask = pa.array(keep)
        table_columns = {name: col.filter(mask) for name, col in table_columns.items()}
        events = events[keep]
    table = pa.table(table_columns) if table_columns else _no_columns(len(events))
    return SideRecords(event=events, table=table, failed=dict(sorted(failed.items())))


def _records(units: pl.DataFrame, lines: bool, side: Side) -> pl.DataFrame:
    """Record texts (stripped, newline-free) with their body index ``ev``, from valid units."""
    if lines:
        return units.select("ev", "text")
    # Valid JSON has newlines only between tokens, and the NDJSON reader needs one record per line.
    return _unwrap(units.with_columns(pl.col("text").str.replace_all(r"[\r\n]", " ")), side)


def _guess(
    units: pl.DataFrame, lines: bool, side: Side, spec: SideSpec, arrays: ArrayMode
) -> tuple[pl.DataFrame | None, Columns | None]:
    """Records and fast-path columns of not yet validated units; None for what failed or needs more."""
    try:
        records = _records(units, lines, side)
    except Exception:  # unvalidated input may fail in any way; the validated path then decides
        return None, None
    try:
        return records, _decode_records(records["text"], side, spec, arrays, fast_only=True)
    except Exception:  # as above; the records are still right if the units turn out valid
        return records, None


def _no_columns(rows: int) -> pa.Table:
    """A table without columns but with `rows` rows (records that are all empty objects)."""
    return pa.table({"_": pa.nulls(rows)}).drop_columns(["_"])


# --- bodies -> record texts ------------------------------------------------------------------------------


def _lines(texts: pl.Series) -> pl.DataFrame:
    """Non-blank lines of every body, stripped: columns ev (body index), line (0-based), text."""
    frame = pl.DataFrame({"ev": np.arange(len(texts), dtype=np.int64), "text": texts})
    return (
        frame.with_columns(pl.col("text").str.split("\n"))
        .explode("text")
        .with_columns(pl.int_range(pl.len()).over("ev").alias("line"), pl.col("text").str.strip_chars(_WS))
        .filter(pl.col("text").is_not_null() & (pl.col("text") != ""))
        .select("ev", "line", "text")
    )


def _documents(texts: pl.Series) -> pl.DataFrame:
    """Every non-blank body, stripped, as one unit: columns ev, line (always 0), text."""
    frame = pl.DataFrame({"ev": np.arange(len(texts), dtype=np.int64), "text": texts.str.strip_chars(_WS)})
    frame = frame.filter(pl.col("text") != "")
    return frame.select("ev", pl.lit(0, dtype=pl.Int64).alias("line"), pl.lit(0, dtype=pl.Int64).alias("pos"), "text")


def _is_valid(texts: pl.Series) -> pl.Series:
    """Which texts are one valid JSON value (serde_json's strict parser; `$` matches any valid document)."""
    # The matcher returns null for invalid JSON and for the literal null, which is valid.
    return texts.str.json_path_match("$").is_not_null() | (texts == "null")


def _invalid_details(bad: pl.DataFrame, lines: bool) -> Failures:
    """The first invalid unit of each body, worded; runs only over bodies that already failed."""
    out: Failures = {}
    first = bad.unique("ev", keep="first", maintain_order=True).select("ev", "line", "text")
    for ev, line, text in first.iter_rows():
        try:
            orjson.loads(text)
            reason = "not valid JSON"
        except orjson.JSONDecodeError as exc:
            reason = str(exc)
        where = f"line {line + 1}: " if lines else ""
        out[int(ev)] = ("invalid_json", _clip(f"{where}{reason}"))
    return out


def _unwrap(units: pl.DataFrame, side: Side) -> pl.DataFrame:
    """Records of JSON documents: container items, top-level list items, or the document itself.

    One scan of all container documents finds their level-1 members (items of top-level lists, keys and
    values of objects) and level-2 members (items of the lists held by those values).
    """
    kinds = _kinds(units["text"]).to_numpy()
    is_container = (kinds == _OBJ) | (kinds == _ARR)
    whole = units.filter(pl.Series(~is_container)).select("ev", "pos", "text")
    docs = units.filter(pl.Series(is_container))
    if not docs.height:
        return whole.select("ev", "text")
    scan = _scan(docs["text"])
    starts, ends, kind, token = _level_spans(scan, 1)
    rows = scan.row_of(starts)
    doc_is_array = (kinds[is_container] == _ARR)[rows]

    # Objects: the chosen container key of each document, by the side's preference; the first of
    # duplicate keys counts, as in the reader.
    key_at = np.flatnonzero((kind == _KEY) & ~doc_is_array)
    value_at = np.flatnonzero((kind == _VALUE) & ~doc_is_array)
    # A value is a list iff the token right after its colon opens a list (strings hold no tokens).
    value_is_list = scan.ch[np.minimum(token[value_at] + 1, len(scan.ch) - 1)] == ord("[")
    rank = {name: i for i, name in enumerate(_CONTAINERS[side])}
    keys = _key_names(pl.Series("k", _spans(scan.data, starts[key_at], ends[key_at])).str.strip_chars(_WS))
    chosen = (
        pl.DataFrame({"row": rows[key_at], "key": keys, "value": value_at, "list": value_is_list})
        .unique(["row", "key"], keep="first", maintain_order=True)
        .filter(pl.col("key").is_in(list(rank)) & pl.col("list"))
        .with_columns(pl.col("key").replace_strict(rank, return_dtype=pl.Int64).alias("rank"))
        .sort("row", "rank")
        .unique("row", keep="first", maintain_order=True)
    )
    chosen_value = chosen["value"].to_numpy()  # index into the level-1 spans
    unwrapped = np.zeros(docs.height, dtype=np.bool_)
    unwrapped[chosen["row"].to_numpy()] = True

    # Records: items of top-level lists, items of chosen container lists, and the remaining objects.
    top_items = np.flatnonzero((kind == _ITEM) & doc_is_array)
    whole_arrays = np.zeros(docs.height, dtype=np.bool_)
    if side == "input" and len(top_items):
        # A request body that is a list of scalars is ONE instance (TF Serving's and sklearn's single
        # row, ``[0.19, 0.0, 10.81]``); a list of lists or objects holds many.
        item_texts = pl.Series("t", _spans(scan.data, starts[top_items], ends[top_items])).str.strip_chars(_WS)
        item_kind = _kinds(item_texts).to_numpy()
        nested = np.zeros(docs.height, dtype=np.bool_)
        nested[rows[top_items][(item_kind == _OBJ) | (item_kind == _ARR)]] = True
        has_items = np.zeros(docs.height, dtype=np.bool_)
        has_items[rows[top_items]] = True
        whole_arrays = (kinds[is_container] == _ARR) & has_items & ~nested
        top_items = top_items[~whole_arrays[rows[top_items]]]
    s2, e2, kind2, _ = _level_spans(scan, 2)
    parent = np.searchsorted(starts, s2, side="right") - 1  # the level-1 span holding each level-2 span
    picked = np.zeros(len(starts), dtype=np.bool_)
    picked[chosen_value] = True
    inner_items = np.flatnonzero((kind2 == _ITEM) & picked[np.maximum(parent, 0)] & (parent >= 0))
    rec_start = np.concatenate((starts[top_items], s2[inner_items]))
    rec_end = np.concatenate((ends[top_items], e2[inner_items]))
    order = np.argsort(rec_start, kind="stable")
    rec_start, rec_end = rec_start[order], rec_end[order]
    texts = pl.Series("text", _spans(scan.data, rec_start, rec_end)).str.strip_chars(_WS)
    ev = docs["ev"].to_numpy()[scan.row_of(rec_start)]
    items = pl.DataFrame({"ev": ev, "pos": rec_start - scan.base + 1, "text": texts}).filter(pl.col("text") != "")
    plain = (~unwrapped & (kinds[is_container] == _OBJ)) | whole_arrays
    plain_objects = docs.filter(pl.Series(plain)).select("ev", "pos", "text")
    records = pl.concat([whole, plain_objects, items.cast({"ev": pl.Int64, "pos": pl.Int64})])
    return records.sort("ev", "pos", maintain_order=True).select("ev", "text")


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


# --- record texts -> columns ------------------------------------------------------------------------------


def _decode_with_bisection(
    records: pl.DataFrame, side: Side, spec: SideSpec, arrays: ArrayMode
) -> tuple[Columns, Failures]:
    """Decode the records; bodies that polars cannot read although they passed validation fail alone.

    The validator (serde_json) and the reader (simd-json) agree on almost everything; where they do not
    (e.g. integer literals beyond 128 bits), the reader raises for the whole batch. Halving the set of
    bodies until each failing decode holds one body finds the culprits in O(k log n) decodes.
    """
    try:
        return _decode_records(records["text"], side, spec, arrays), {}
    except pl.exceptions.PolarsError:
        pass
    events = records["ev"].unique(maintain_order=True).to_numpy()
    failed: Failures = {}
    stack = [events]
    while stack:
        group = stack.pop()
        try:
            _decode_records(records.filter(pl.col("ev").is_in(group))["text"], side, spec, arrays)
        except pl.exceptions.PolarsError as exc:
            if len(group) == 1:
                message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                failed[int(group[0])] = ("invalid_json", _clip(f"not decodable: {message}"))
            else:
                half = len(group) // 2
                stack.extend((group[half:], group[:half]))
    good = records.filter(~pl.col("ev").is_in(list(failed)))
    columns = _decode_records(good["text"], side, spec, arrays)
    # Re-align to the full record list: rows of failed bodies are dropped by the caller.
    keep = ~records["ev"].is_in(list(failed)).to_numpy()
    rows = np.flatnonzero(keep)
    return {name: _scatter(s, rows, records.height) for name, s in columns.items()}, failed


def _decode_records(
    texts: pl.Series, side: Side, spec: SideSpec, arrays: ArrayMode, *, fast_only: bool = False
) -> Columns:
    """Columns of the records (stripped, newline-free JSON texts), one row per record.

    With `fast_only`, raise _Unsupported where object records would need the key-by-key decode.
    """
    n = len(texts)
    out: Columns = {}
    if n == 0:
        return out
    kinds = _kinds(texts).to_numpy()
    names = spec.names
    obj_rows = np.flatnonzero(kinds == _OBJ)
    arr_rows = np.flatnonzero(kinds == _ARR)
    scalar_rows = np.flatnonzero((kinds != _OBJ) & (kinds != _ARR))

    if len(obj_rows):
        for name, s in _decode_objects(texts.gather(obj_rows), "", fast_only=fast_only):
            _put(out, name, _scatter(s, obj_rows, n))
    if len(scalar_rows):
        if names:
            scalar_name = spec.prediction if side == "output" and spec.prediction else names[0]
        else:
            scalar_name = "prediction" if side == "output" else "f0"
        for name, s in _decode_values(texts.gather(scalar_rows), scalar_name):
            _put(out, name, _scatter(s, scalar_rows, n))
    if len(arr_rows):
        for name, s in _decode_array_records(texts.gather(arr_rows), side, names):
            _put(out, name, _scatter(s, arr_rows, n))
    if arrays == "expand":
        expanded: Columns = {}
        for name, s in out.items():
            for sub, col in _expand(s, name) if isinstance(s.dtype, pl.List) else [(name, s)]:
                _put(expanded, sub, col)
        out = expanded
    return out


def _position_name(side: Side, names: list[str], i: int) -> str | None:
    """Column of item `i` of an array record: the spec's i-th column, or f{i} / prediction_{i}."""
    if names:
        return names[i] if i < len(names) else None
    return f"prediction_{i}" if side == "output" else f"f{i}"


def _decode_array_records(texts: pl.Series, side: Side, names: list[str]) -> list[tuple[str, pl.Series]]:
    """One float64 column per position of array records (other positions typed by the general rules)."""
    out: list[tuple[str, pl.Series]] = []
    if bool(texts.str.contains(_NUMERIC_ARRAY).all()):
        lists = texts.str.json_decode(dtype=pl.List(pl.Float64))
        width = _max_len(lists)
        for i in range(width):
            name = _position_name(side, names, i)
            if name is not None:
                out.append((name, lists.list.get(i, null_on_oob=True)))
        return out
    items = _members(texts).filter(pl.col("kind") == _ITEM)
    items = items.with_columns(pl.int_range(pl.len()).over("row").alias("i"))
    for (i,), group in items.partition_by("i", maintain_order=True, as_dict=True).items():
        name = _position_name(side, names, int(i))
        if name is None:
            continue
        rows = group["row"].to_numpy()
        for sub, s in _decode_values(group["text"], name):
            col = s.cast(pl.Float64) if sub == name and s.dtype.is_integer() else s
            out.append((sub, _scatter(col, rows, len(texts))))
    return out


def _decode_objects(texts: pl.Series, prefix: str, *, fast_only: bool = False) -> list[tuple[str, pl.Series]]:
    """Flattened columns of JSON objects (stripped, newline-free texts), one row per text.

    One NDJSON read with inference over all rows is the fast path. A type conflict makes it raise or
    produce a type the rules forbid; then the scanner splits the objects into key/value texts and each
    key is decoded on its own, so the conflict is settled at the level where it occurs.
    """
    try:
        frame = _read_ndjson(texts)
        if frame.height != len(texts):
            raise _Unsupported
        if _may_mix(texts, _string_leaves(frame.schema)):
            raise _Unsupported  # the inferred string column may hold numbers rendered by polars
        return [col for name in frame.columns for col in _flatten(frame[name], prefix + name)]
    except (pl.exceptions.PolarsError, _Unsupported):
        if fast_only:
            raise _Unsupported(prefix) from None
    members = _members(texts)
    keys = members.filter(pl.col("kind") == _KEY)
    values = members.filter(pl.col("kind") == _VALUE)
    pairs = pl.DataFrame({"row": keys["row"], "key": _key_names(keys["text"]), "value": values["text"]})
    pairs = pairs.unique(["row", "key"], keep="first", maintain_order=True)
    out: list[tuple[str, pl.Series]] = []
    for (key,), group in pairs.partition_by("key", maintain_order=True, as_dict=True).items():
        rows = group["row"].to_numpy()
        for name, s in _decode_values(group["value"], f"{prefix}{key}"):
            out.append((name, _scatter(s, rows, len(texts))))
    return out


def _string_leaves(schema: pl.Schema | dict[str, Any]) -> set[str]:
    """Field names (at any depth) that polars inferred as strings."""
    leaves: set[str] = set()
    for name, dtype in schema.items():
        if dtype == pl.String:
            leaves.add(name)
        elif isinstance(dtype, pl.Struct):
            leaves |= _string_leaves({f.name: f.dtype for f in dtype.fields})
    return leaves


def _may_mix(texts: pl.Series, leaves: set[str]) -> bool:
    """Whether a field inferred as string may hold a non-string value in some record.

    polars infers a string column for a field that is a number in some records and a string in others,
    and renders the numbers its own way (``1e5`` becomes ``100000``). A non-string value of a field always
    follows its key without a quote, so one regex per string field finds every candidate; a key of the
    same name elsewhere in the record only costs the exact decode, never a wrong value.
    """
    for leaf in leaves:
        key = re.escape(orjson.dumps(leaf).decode())
        if bool(texts.str.contains(key + r'\s*:\s*[^"\s]').any()):
            return True
    return False


def _read_ndjson(texts: pl.Series) -> pl.DataFrame:
    """Polars' NDJSON reader over the texts (one per line), inferring the schema from every row."""
    data = texts.str.join("\n").item().encode()
    return pl.read_ndjson(io.BytesIO(data), infer_schema_length=None)


def _flatten(s: pl.Series, name: str) -> list[tuple[str, pl.Series]]:
    """Columns of one inferred column: structs flattened, types mapped by the rules, else _Unsupported."""
    dtype = s.dtype
    if isinstance(dtype, pl.Struct):
        return [col for field in dtype.fields for col in _flatten(s.struct.field(field.name), f"{name}.{field.name}")]
    if dtype in (pl.Int64, pl.Float64, pl.Boolean, pl.String, pl.Null):
        return [(name, s.rename(name))]
    if dtype.is_integer():  # Int128 / UInt64: integers beyond int64
        return [(name, s.cast(pl.Float64).rename(name))]
    if isinstance(dtype, pl.List) and (dtype.inner == pl.Null or dtype.inner.is_numeric()):
        return [(name, s.cast(pl.List(pl.Float64)).rename(name))]
    raise _Unsupported(name)


def _kinds(texts: pl.Series) -> pl.Series:
    """The kind (_OBJ, _ARR, ...) of each stripped JSON text, from its first character."""
    frame = pl.DataFrame({"t": texts})
    kind = pl.col("t").str.head(1).replace_strict(_FIRST_CHAR_KIND, default=-1, return_dtype=pl.Int8)
    number = pl.when(pl.col("t").str.contains("[.eE]")).then(pl.lit(_FLOAT)).otherwise(pl.lit(_INT))
    return frame.select(pl.when(kind == -1).then(number).otherwise(kind).cast(pl.Int8).alias("kind"))["kind"]


def _decode_values(texts: pl.Series, name: str) -> list[tuple[str, pl.Series]]:
    """Columns of the values at one field path (stripped JSON texts), typed by the module's rules."""
    n = len(texts)
    kinds = _kinds(texts)
    seen = set(kinds.unique().to_list())
    present = seen - {_NULL}
    if not present:
        return [(name, pl.Series(name, [None] * n, dtype=pl.Null))]
    if _NULL in seen:
        rows = np.flatnonzero((kinds != _NULL).to_numpy())
        return [(sub, _scatter(s, rows, n)) for sub, s in _decode_values(texts.gather(rows), name)]
    if present == {_OBJ}:
        return _decode_objects(texts, f"{name}.")
    if present == {_ARR}:
        if bool(texts.str.contains(_NUMERIC_ARRAY).all()):
            return [(name, texts.str.json_decode(dtype=pl.List(pl.Float64)).rename(name))]
        return [(name, _render(texts).rename(name))]
    if present <= {_INT, _FLOAT}:
        if present == {_INT}:
            ints = texts.cast(pl.Int64, strict=False)
            if ints.null_count() == 0:  # every integer fits int64
                return [(name, ints.rename(name))]
        return [(name, texts.cast(pl.Float64).rename(name))]
    if present == {_STR}:
        return [(name, texts.str.json_decode(dtype=pl.String).rename(name))]
    if present == {_BOOL}:
        return [(name, (texts == "true").rename(name))]
    # Mixed kinds: the column is text, each value exactly as the source wrote it (a string as its value,
    # anything else as its JSON text); said in the log, since a number column turning text is a surprise.
    logger.warning("payload field %r mixes JSON value types; its column is text", name)
    exact = pl.DataFrame({"t": texts, "k": kinds}).select(
        pl.when(pl.col("k") == _STR).then(pl.col("t").str.json_decode(dtype=pl.String)).otherwise(pl.col("t"))
    )["t"]
    return [(name, exact.rename(name))]


def _render(texts: pl.Series) -> pl.Series:
    """Mixed values as strings the way polars renders any JSON value read into a String column."""
    data = ('{"v":' + texts + "}").str.join("\n").item().encode()
    return pl.read_ndjson(io.BytesIO(data), schema={"v": pl.String})["v"]


def _expand(s: pl.Series, name: str) -> list[tuple[str, pl.Series]]:
    """A list column as float64 columns name_0..name_k (k + 1 = the longest list)."""
    width = _max_len(s)
    return [(f"{name}_{i}", s.list.get(i, null_on_oob=True).cast(pl.Float64)) for i in range(width)]


def _max_len(lists: pl.Series) -> int:
    """Length of the longest list (0 if there is none)."""
    longest = lists.list.len().max()
    return int(longest) if isinstance(longest, int) else 0


def _scatter(values: pl.Series, rows: NDArray[np.integer[Any]], n: int) -> pl.Series:
    """A length-`n` series holding `values` at `rows` (increasing) and null elsewhere."""
    if len(rows) == n:
        return values
    index = np.full(n, -1, dtype=np.int64)
    index[rows] = np.arange(len(rows), dtype=np.int64)
    gather = pl.from_arrow(pa.array(index, mask=index < 0))
    assert isinstance(gather, pl.Series)
    return values.gather(gather)


def _put(out: Columns, name: str, s: pl.Series) -> None:
    """Add a column; a name produced twice (by record shapes with disjoint rows) merges its values."""
    s = s.rename(name)
    if name not in out:
        out[name] = s
        return
    old = out[name]
    if old.dtype != s.dtype:
        if old.dtype == pl.Null or s.dtype == pl.Null:
            target = s.dtype if old.dtype == pl.Null else old.dtype
            old, s = old.cast(target), s.cast(target)
        elif old.dtype.is_numeric() and s.dtype.is_numeric():
            old, s = old.cast(pl.Float64), s.cast(pl.Float64)
        else:
            old, s = _as_text(old), _as_text(s)
    out[name] = old.zip_with(old.is_not_null(), s)


def _as_text(s: pl.Series) -> pl.Series:
    """Any column as strings: strings as they are, other values as their JSON text."""
    if s.dtype == pl.String:
        return s
    # json_encode of {"v": x} is '{"v":' + JSON(x) + '}'; null values stay null.
    encoded = pl.struct("v").struct.json_encode().str.strip_prefix('{"v":').str.strip_suffix("}")
    text: pl.Series = pl.DataFrame({"v": s}).select(pl.when(pl.col("v").is_not_null()).then(encoded))["v"]
    return text.rename(s.name)


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


def _clip(text: str) -> str:
    """A detail string no longer than _DETAIL_MAX characters."""
    return text if len(text) <= _DETAIL_MAX else text[: _DETAIL_MAX - 3] + "..."
