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

5. **Vectorized.** There is no Python loop per record or value. When every unit (JSON Lines line, document) is
   an object, one multithreaded pyarrow NDJSON read types them all and the records are taken from the container
   list column (:mod:`._fast`); pyarrow raises on every type conflict, and any conflict, container ambiguity or
   type the rules do not allow sends the batch the general way instead: records are typed by one polars
   ``read_ndjson`` over all of them with schema inference over every row. Where that read succeeds, it is also
   the validation: rapidjson with Arrow's flags is RFC 8259 strict but for what :mod:`._trust` checks (UTF-8,
   ``NaN``/``Infinity``, numbers beyond double range, nesting depth, one value per unit), and only units that
   may hold those (``NaN``, ``Inf``, an escaped surrogate) are validated with polars' JSONPath matcher
   (serde_json); JSON Lines bodies whose lines are all ``{...}`` are read whole, their lines counted over the
   byte buffer (:mod:`._bodylines`). Otherwise validity is checked for all units at once with serde_json,
   concurrently with a first decode (both release the GIL), which is kept only if every unit turns out valid,
   else redone on the valid ones. When inference
   fails or yields a type the rules above do not allow (a type conflict), a numpy scanner splits the objects
   into key/value texts (quote parity and bracket depth over the whole byte buffer) and every key is decoded
   on its own, recursively, with the same rules; the same scanner unwraps JSON documents into records.
   Python loops run only over columns, over bodies that failed (to word their detail) and, when polars
   rejects JSON that passed validation, over a bisection of the bodies.

6. ``event`` gives the body index of every record: non-decreasing, the records of a body in their order.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Literal

import numpy as np
import polars as pl
import pyarrow as pa

from engine.kernels.payload.json._bodylines import _line_counts
from engine.kernels.payload.json._columns import _decode_records, _decode_with_bisection
from engine.kernels.payload.json._common import Columns, Failures, Side
from engine.kernels.payload.json._fast import _fast_decode
from engine.kernels.payload.json._output import _apply_spec, _plain
from engine.kernels.payload.json._texts import _documents, _invalid_details, _is_valid, _lines, _unwrap
from engine.kernels.payload.json._trust import _bodies_utf8, _suspects
from engine.kernels.payload.records import SideRecords
from engine.kernels.payload.spec import ArrayMode, SideSpec

__all__ = ["decode_json_bodies"]

logger = logging.getLogger(__name__)


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
    return _decode(bodies, lines=lines, side=side, spec=spec, arrays=arrays, trust_parser=True)


def _decode(
    bodies: pa.Array,
    *,
    lines: bool,
    side: Side,
    spec: SideSpec,
    arrays: ArrayMode,
    trust_parser: bool,
) -> SideRecords:
    """:func:`decode_json_bodies`; `trust_parser` False validates every unit the strict way (the reference)."""
    n = len(bodies)
    texts = pl.Series("text", bodies).cast(pl.String)
    failed: Failures = {}

    columns: Columns | None
    has_unit = np.zeros(n, dtype=np.bool_)
    whole = _trusted_bodies(bodies, texts, side, arrays) if trust_parser and lines else None
    if whole is not None:
        records, columns = whole
        has_unit[records["ev"].to_numpy()] = True  # a line is a record
    else:
        units = _lines(texts) if lines else _documents(texts)
        records, columns = _decode_units(units, bodies, lines, side, spec, arrays, trust_parser, failed)
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


def _decode_units(
    units: pl.DataFrame,
    bodies: pa.Array,
    lines: bool,
    side: Side,
    spec: SideSpec,
    arrays: ArrayMode,
    trust_parser: bool,
    failed: Failures,
) -> tuple[pl.DataFrame, Columns | None]:
    """Records and (fast-path) columns of the units; invalid units are added to `failed` and dropped."""
    trusted = _trusted(bodies, units, lines, side, arrays) if trust_parser else None
    if trusted is not None:
        return trusted
    # Validation and a first decode attempt are independent, and polars and numpy release the GIL: overlap
    # them. The guess is kept only if every unit is valid, so it always equals the validated decode.
    with ThreadPoolExecutor(max_workers=1) as pool:
        validity = pool.submit(_is_valid, units["text"])
        guessed_records, guessed_columns = _guess(units, lines, side, spec, arrays)
        valid = validity.result()
    if bool(valid.all()) and guessed_records is not None:
        return guessed_records, guessed_columns
    failed.update(_invalid_details(units.filter(~valid), lines))
    # The units are kept whole for has_unit by the caller: a body whose units all failed is in `failed`.
    valid_units = units.filter(valid)
    fast = _fast_decode(valid_units, lines, side, arrays)
    return fast if fast is not None else (_records(valid_units, lines, side), None)


def _trusted_bodies(
    bodies: pa.Array, texts: pl.Series, side: Side, arrays: ArrayMode
) -> tuple[pl.DataFrame, Columns] | None:
    """JSON Lines bodies decoded whole, without splitting them into lines (:mod:`._bodylines`), where pyarrow's
    parse vouches for every line; None where the bodies need splitting (nothing is failed here)."""
    if not _bodies_utf8(bodies):
        return None
    counts = _line_counts(texts)
    if counts is None:
        return None
    whole = pl.DataFrame({"ev": np.arange(len(texts), dtype=np.int64), "text": texts})
    try:
        fast = _fast_decode(whole, True, side, arrays, trusted_only=True, line_counts=counts)
    except Exception:  # unvalidated input may fail in any way; the strict path then decides
        return None
    if fast is None:
        return None
    suspect = _suspects(texts)
    if bool(suspect.any()) and not bool(_is_valid(_lines(texts.filter(suspect))["text"]).all()):
        return None
    return fast


def _trusted(
    bodies: pa.Array, units: pl.DataFrame, lines: bool, side: Side, arrays: ArrayMode
) -> tuple[pl.DataFrame, Columns] | None:
    """The fast path's records and columns where pyarrow's parse vouches for every unit (:mod:`._trust`), the
    suspect units validated the strict way; None where the batch needs the strict path (nothing is failed here)."""
    if not _bodies_utf8(bodies):
        return None
    try:
        fast = _fast_decode(units, lines, side, arrays, trusted_only=True)
    except Exception:  # unvalidated input may fail in any way; the strict path then decides
        return None
    if fast is None:
        return None
    suspect = _suspects(units["text"])
    if bool(suspect.any()) and not bool(_is_valid(units["text"].filter(suspect)).all()):
        return None
    return fast


def _guess(
    units: pl.DataFrame, lines: bool, side: Side, spec: SideSpec, arrays: ArrayMode
) -> tuple[pl.DataFrame | None, Columns | None]:
    """Records and fast-path columns of not yet validated units; None for what failed or needs more."""
    try:
        fast = _fast_decode(units, lines, side, arrays)
    except Exception:  # unvalidated input may fail in any way; the validated path then decides
        fast = None
    if fast is not None:
        return fast
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
