"""The fast path for object records: one multithreaded pyarrow NDJSON read of all units, strict about types.

Most captured JSON is objects: JSON Lines of ``{"features": [...]}`` and documents ``{"instances": [{...}]}``.
For those, pyarrow's reader (which runs on every core and releases the GIL) types every column in one pass and
*raises* on anything the column rules would have to settle differently (a field that is a number in one record
and a string, boolean or list in another, a key given twice, an object where a list was), where polars'
inference would coerce. Whatever it cannot take, or the checks below refuse, returns None and goes the general
way (:mod:`._columns`), so this path only ever produces what that one would.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj
from numpy.typing import NDArray

from engine.kernels.payload.json._columns import _expand_lists, _flatten, _may_mix, _string_leaves
from engine.kernels.payload.json._common import _CONTAINERS, Columns, Side, _Unsupported
from engine.kernels.payload.json._trust import _table_trusted
from engine.kernels.payload.spec import ArrayMode

logger = logging.getLogger(__name__)

# Integer literals this long may not fit int64: the general path types them (Int128, or fails a body polars
# cannot read), pyarrow would read a double. A run of digits that starts after a '.' or ends before '.', 'e'
# or 'E' is a fraction or mantissa; a string holding such a run only costs the general path.
_LONG_INTEGER = r"(^|[^0-9.])[0-9]{19,}([^0-9.eE]|$)"
_MIN_BLOCK = 1 << 20


def _fast_decode(
    units: pl.DataFrame,
    lines: bool,
    side: Side,
    arrays: ArrayMode,
    *,
    trusted_only: bool = False,
    line_counts: NDArray[np.int64] | None = None,
) -> tuple[pl.DataFrame, Columns] | None:
    """Record body indexes (``ev``) and columns of units that are all objects, or None for the general path.

    JSON Lines units are records; a document's records are the items of its container list when the side's
    preferred container key is the only one present and holds a list of objects in every document;
    documents with no container key at all are records. With `trusted_only`, also None where the table may
    hold what serde_json rejects (:func:`._trust._table_trusted`): the caller then skips the strict validation
    of the units that are not suspect. With `line_counts` (JSON Lines only, :mod:`._bodylines`), the units are
    whole bodies holding that many records each.
    """
    texts = units["text"]
    if not len(texts) or (line_counts is None and not bool(texts.str.starts_with("{").all())):
        return None
    if bool(texts.str.contains(_LONG_INTEGER).any()):
        return None
    if not lines and bool(texts.str.contains("[\r\n]").any()):
        # Valid JSON has newlines only between tokens. A tab is whitespace there too, and unlike a space it is a
        # raw control character inside a string, which rapidjson refuses: an unvalidated text with a newline in
        # a string fails here instead of being read as valid.
        texts = texts.str.replace_all(r"[\r\n]", "\t")
    ndjson = _ndjson(texts)
    table = _read_objects(ndjson, texts)
    rows = len(texts) if line_counts is None else int(line_counts.sum())
    if table is None or table.num_rows != rows:
        return None  # also where a unit holds two values (rapidjson reads a stream of them)
    if trusted_only and not _table_trusted(table):
        return None
    ev = units["ev"].to_numpy()
    if line_counts is not None:
        ev = np.repeat(ev, line_counts)
    container = False
    if not lines:
        present = [key for key in _CONTAINERS[side] if key in table.column_names]
        if len(present) > 1:
            return None
        if present:
            lists = table.column(present[0]).combine_chunks()
            if not pa.types.is_list(lists.type) or not pa.types.is_struct(lists.type.value_type):
                return None
            if lists.null_count:
                return None  # a document without the list (or with null) is a record itself
            items = lists.flatten()
            if items.null_count:
                return None  # a null item is a scalar record of its own
            ev = np.repeat(ev, pc.list_value_length(lists).to_numpy(zero_copy_only=False))
            table = pa.Table.from_struct_array(items)
            container = True
    columns = _columns(table, arrays)
    if columns is None:
        return None
    empty = pl.from_arrow(table.slice(0, 0))
    assert isinstance(empty, pl.DataFrame)
    if _may_mix(texts, _string_leaves(empty.schema)):
        # The general path decodes such records key by key (a string field that may hold other values, e.g.
        # null), with columns in order of first appearance; this check is its own, so both agree on when.
        return None
    if not _same_keys(table):
        # Records differ in their keys: the general path orders columns as polars' inference over the
        # records does, which is not the order of first appearance. Where the records are the units, ask
        # that inference; items of container lists are not laid out as its rows, so they go the general way.
        if container or line_counts is not None:
            return None  # for whole bodies the order asked below would be over lines that were never split
        columns = _in_polars_order(columns, ndjson, arrays)
        if columns is None:
            return None
    return pl.DataFrame({"ev": ev.astype(np.int64)}), columns


def _ndjson(texts: pl.Series) -> pa.Buffer:
    """The newline-free texts end to end, each ended by a newline, as one buffer."""
    data = (texts + "\n").str.join("").to_arrow(compat_level=pl.CompatLevel.oldest())
    if data.type != pa.large_string():
        data = data.cast(pa.large_string())
    offsets = np.frombuffer(data.buffers()[1], dtype=np.int64, count=len(data) + 1, offset=data.offset * 8)
    buffer: pa.Buffer = data.buffers()[2][int(offsets[0]) : int(offsets[-1])]
    return buffer


def _read_objects(ndjson: pa.Buffer, texts: pl.Series) -> pa.Table | None:
    """pyarrow's NDJSON read of the object texts, inferring over every row; None where it raises."""
    longest = texts.str.len_bytes().max()
    block = max(_MIN_BLOCK, 2 * (int(longest) if isinstance(longest, int) else 0) + 2)
    try:
        # Blocks are parsed on the reader's own threads, without the GIL.
        table = pj.read_json(pa.BufferReader(ndjson), read_options=pj.ReadOptions(block_size=block))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    try:
        # pyarrow 26's reader drops the nulls that open a list of numbers (``[null, 1.5]``), leaving a list
        # whose offsets span more values than its child holds: the values would shift. Full validation finds
        # every such array; the general path reads those batches.
        table.validate(full=True)
    except pa.ArrowInvalid:
        return None
    return table


def _columns(table: pa.Table, arrays: ArrayMode) -> Columns | None:
    """The flattened, rule-typed columns of a pyarrow table of object records; None for a type the rules forbid."""
    out: Columns = {}
    try:
        for name in table.column_names:
            s = pl.from_arrow(table.column(name))
            assert isinstance(s, pl.Series)
            for sub, col in _flatten(s.rename(name), name):
                if sub in out:
                    return None  # "a.b" given both as a nested and as a dotted key
                out[sub] = col
    except _Unsupported:
        return None
    return _expand_lists(out) if arrays == "expand" else out


def _same_keys(table: pa.Table) -> bool:
    """Whether every record holds every key, none nested: then polars' inference keeps the first record's order.

    A key absent from a record (or null in it, which pyarrow does not tell apart) gives a null; nested objects
    are ordered by polars' inference in a way of its own.
    """
    return all(col.null_count == 0 and not pa.types.is_struct(col.type) for col in table.columns)


def _in_polars_order(columns: Columns, ndjson: pa.Buffer, arrays: ArrayMode) -> Columns | None:
    """The columns in the order (and checked against the types) polars' inference over the same rows gives."""
    try:
        schema = pl.scan_ndjson(ndjson.to_pybytes(), infer_schema_length=None).collect_schema()
    except pl.exceptions.PolarsError:
        return None
    leaves = _leaves(schema, "")
    if leaves is None:
        return None
    if arrays == "expand":
        # Lists expand to name_0..name_k; which k the columns already tell.
        order = [sub for name, dtype in leaves for sub in _expanded_names(name, dtype, columns)]
    else:
        order = [name for name, _ in leaves]
    # Both readers must agree on every type (a list column in expand mode is checked by its names alone).
    if any(columns[name].dtype != dtype for name, dtype in leaves if name in columns):
        return None
    if sorted(order) != sorted(columns):
        return None
    return {name: columns[name] for name in order}


def _leaves(schema: Mapping[str, Any], prefix: str) -> list[tuple[str, pl.DataType]] | None:
    """Flattened field names of an inferred schema with the type the column rules give them; None if forbidden."""
    out: list[tuple[str, pl.DataType]] = []
    for name, dtype in schema.items():
        path = prefix + name
        if isinstance(dtype, pl.Struct):
            nested = _leaves({f.name: f.dtype for f in dtype.fields}, path + ".")
            if nested is None:
                return None
            out.extend(nested)
        elif dtype in (pl.Int64, pl.Float64, pl.Boolean, pl.String, pl.Null):
            out.append((path, dtype))
        elif isinstance(dtype, pl.List) and (dtype.inner == pl.Null or dtype.inner.is_numeric()):
            out.append((path, pl.List(pl.Float64)))
        else:
            return None
    return out


def _expanded_names(name: str, dtype: pl.DataType, columns: Columns) -> list[str]:
    """The columns a field gives in expand mode: itself, or name_0.. for a list."""
    if not isinstance(dtype, pl.List):
        return [name]
    width = 0
    while f"{name}_{width}" in columns:
        width += 1
    return [f"{name}_{i}" for i in range(width)]
