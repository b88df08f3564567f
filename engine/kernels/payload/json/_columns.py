"""Record texts to columns: one polars read with inference, else key by key, with bisection around bad texts."""

from __future__ import annotations

import io
import logging
import re
from typing import Any

import numpy as np
import orjson
import polars as pl
import pyarrow as pa
from numpy.typing import NDArray

from engine.kernels.payload.json._common import (
    _ARR,
    _BOOL,
    _FIRST_CHAR_KIND,
    _FLOAT,
    _INT,
    _ITEM,
    _KEY,
    _NULL,
    _NUMERIC_ARRAY,
    _OBJ,
    _STR,
    _VALUE,
    Columns,
    Failures,
    Side,
    _clip,
    _Unsupported,
)
from engine.kernels.payload.json._scan import _key_names, _members
from engine.kernels.payload.spec import ArrayMode, SideSpec

logger = logging.getLogger(__name__)

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
    return _expand_lists(out) if arrays == "expand" else out


def _expand_lists(columns: Columns) -> Columns:
    """Every list column as its float64 ``name_i`` columns (arrays="expand"); other columns as they are."""
    expanded: Columns = {}
    for name, s in columns.items():
        for sub, col in _expand(s, name) if isinstance(s.dtype, pl.List) else [(name, s)]:
            _put(expanded, sub, col)
    return expanded


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
