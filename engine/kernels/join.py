"""Join: predictions x ground truth on the merge key, vectorized, in bounded memory.

The label side becomes a `LabelIndex`: labels deduplicated (the latest collected wins), sorted by a 64-bit hash
of their key. A batch of predictions is probed with one `numpy.searchsorted` of its key hashes, then the
candidate keys are compared as strings (so a hash collision never joins the wrong label). Nothing loops per row.

Memory: the index holds the labels of one bucket (about 120 bytes per label, close to their size as JSON Lines);
predictions stream through batch by batch. When the label window's objects are larger than
`MergeOptions.join_memory`, labels *and* predictions are hash-partitioned by key into buckets spilled to local
Arrow IPC files (`BucketSpill`) and joined bucket by bucket, so neither side ever needs to fit in memory whole.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from engine.tables import table_spec
from engine.times import TIME_TYPE

__all__ = ["LabelIndex", "join_key", "key_hash", "label_columns", "label_values", "split_label_values"]

logger = logging.getLogger(__name__)

_SEED = 0x5EED
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)  # odd multiplier spreading record indices over the hash space
# Strings and scalars of compact (canonical) JSON, and `"label":<scalar>` members: what json_path_match returns.
_JSON_STRING = r'"(?:[^"\\]|\\.)*"'
_SCALAR = rf'{_JSON_STRING}|[^,{{}}\[\]"]+'
_LABEL_MEMBER = rf'"label":(?:{_SCALAR})'
_LABEL_CHUNK = 1 << 18  # labels decoded at once
_LABEL_COLUMNS = ["label_data", "label_encoding", "label", "label_value", "label_file", "label_hour", "label_line"]
_COMPACT = pa.schema(
    [
        ("_hash", pa.uint64()),
        ("event_id", pa.string()),
        ("label_data", pa.string()),
        ("label_encoding", pa.string()),
        ("label_hour", TIME_TYPE),
        ("file_id", pa.int32()),
        ("label_line", pa.int64()),
    ]
)


def label_columns() -> pa.Schema:
    """The ground-truth columns a merged row gets, with their types (schemas/tables.json "merged")."""
    schema = table_spec("merged").schema
    return pa.schema([schema.field(n) for n in _LABEL_COLUMNS])


def join_key(batch: pa.RecordBatch) -> pa.Array:
    """The merge key of prediction rows: real-time ``coalesce(inference_id, event_id)``, batch ``inference_id``.

    Real-time rows are recognised by their `event_id` column (formats reference 2.3).
    """
    names = batch.schema.names
    if "event_id" in names:
        key = batch.column("event_id")
        if "inference_id" in names:
            key = pc.coalesce(batch.column("inference_id").cast(pa.string()), key.cast(pa.string()))
    elif "inference_id" in names:
        key = batch.column("inference_id")
    else:
        raise ValueError("prediction rows have neither event_id nor inference_id to join on")
    return key.cast(pa.string())


def key_hash(keys: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """64-bit hashes of string keys (equal strings, equal hashes, within one process)."""
    series = pl.Series("k", keys.cast(pa.string()), dtype=pl.String)
    return np.asarray(series.hash(seed=_SEED).to_numpy(), dtype=np.uint64)


def label_values(data: pa.Array | pa.ChunkedArray, encoding: pa.Array | pa.ChunkedArray) -> pl.Series:
    """The label values each ground-truth record carries, as a list of strings per record.

    CSV: one value per line (a trailing newline is no line), trimmed. JSON: the value of ``label``; the
    ``label`` of every item of ``instances`` (or of a top-level array); a top-level scalar. JSON values are
    taken as their text (``1``, ``0.5``, ``cat``, ``true``). Anything else, another encoding, or an empty value
    gives null (values) / null (items).
    """
    frame = pl.from_arrow(pa.table({"data": data.cast(pa.string()), "encoding": encoding.cast(pa.string())}))
    assert isinstance(frame, pl.DataFrame)
    enc = pl.col("encoding").str.to_uppercase()
    # Each branch reads only its own rows (others are null), so JSON parsing is spent on JSON labels only.
    csv_text = pl.when(enc == "CSV").then(pl.col("data"))
    csv = (
        csv_text.str.replace_all("\r", "", literal=True)
        .str.strip_chars_end("\n")
        .str.split("\n")
        .list.eval(pl.element().str.strip_chars())
    )
    json_text = pl.when(enc == "JSON").then(pl.col("data"))
    frame = frame.with_columns(
        csv.alias("csv"),
        json_text.str.json_path_match("$").alias("canon"),
        json_text.str.json_path_match("$.label").alias("label"),
        json_text.str.json_path_match("$.instances").alias("instances"),
    )
    arr = pl.coalesce(pl.col("instances"), pl.when(pl.col("canon").str.starts_with("[")).then(pl.col("canon")))
    members = arr.str.extract_all(_LABEL_MEMBER).list.eval(pl.element().str.slice(len('"label":')))
    elements = pl.when(arr.str.starts_with("[{")).then(members).otherwise(arr.str.extract_all(_SCALAR))
    frame = frame.with_columns(("[" + elements.list.join(",") + "]").alias("array"))
    try:
        # Every element is a scalar literal cut from canonical JSON, so this decodes; strings lose their quotes.
        array = frame.get_column("array").str.json_decode(pl.List(pl.String))
    except pl.exceptions.PolarsError:  # not expected; a label shape we do not read gives null values instead
        logger.warning("could not read the items of some JSON labels; their label is null", exc_info=True)
        array = pl.Series("array", [None] * frame.height, dtype=pl.List(pl.String))
    frame = frame.with_columns(array)
    canon = pl.col("canon")
    values: pl.Expr = (
        pl.when(enc == "CSV")
        .then(pl.col("csv"))
        .when(pl.col("label").is_not_null())
        .then(pl.concat_list(pl.col("label")))
        .when(pl.col("array").is_not_null())
        .then(pl.col("array"))
        .when(canon.is_not_null() & ~canon.str.starts_with("{"))
        .then(pl.concat_list(canon))
    )
    cleaned = values.list.eval(pl.when(pl.element() != "").then(pl.element()))
    return frame.select(cleaned.alias("values")).get_column("values")


def split_label_values(data: pa.Array, encoding: pa.Array) -> tuple[pa.Array, np.ndarray, pl.Series]:
    """`label_values` in the form the join uses: (the only value, or null; rows with several; their values).

    Most labels are one CSV line or ``{"label": x}``: those take a fast path of two string operations; the
    general rules of `label_values` run only on the others. Done in chunks, so that the intermediate columns
    stay small whatever the number of labels.
    """
    ones: list[pa.Array] = []
    rows: list[np.ndarray] = []
    values: list[pl.Series] = []
    for start in range(0, len(data), _LABEL_CHUNK):
        one, many_rows, many = _split_chunk(data.slice(start, _LABEL_CHUNK), encoding.slice(start, _LABEL_CHUNK))
        ones.append(one)
        rows.append(many_rows + start)
        values.append(many)
    if not ones:
        return pa.array([], pa.string()), np.empty(0, np.int64), pl.Series("values", [], dtype=pl.List(pl.String))
    return pa.concat_arrays(ones), np.concatenate(rows), pl.concat(values)


def _split_chunk(data: pa.Array, encoding: pa.Array) -> tuple[pa.Array, np.ndarray, pl.Series]:
    frame = pl.from_arrow(pa.table({"data": data.cast(pa.string()), "encoding": encoding.cast(pa.string())}))
    assert isinstance(frame, pl.DataFrame)
    # In stages of named columns: an expression used twice inside one select is computed twice.
    c = pl.col
    frame = frame.with_columns(c("encoding").str.to_uppercase().alias("enc"), c("data").str.strip_chars().alias("t"))
    frame = frame.with_columns(
        pl.when(c("enc") == "JSON").then(c("data").str.json_path_match("$.label")).alias("member"),
        (c("enc") == "CSV").alias("csv"),
        c("t").str.contains("\n", literal=True).fill_null(False).alias("lines"),
    )
    frame = frame.select(
        pl.when(c("csv") & ~c("lines")).then(c("t")).otherwise(c("member")).alias("one"),
        ((c("csv") & c("lines")) | ((c("enc") == "JSON") & c("member").is_null())).fill_null(False).alias("general"),
    )
    one = frame.get_column("one")
    general = np.flatnonzero(frame.get_column("general").to_numpy())
    many_rows = np.empty(0, np.int64)
    many = pl.Series("values", [], dtype=pl.List(pl.String))
    if len(general):
        take = pa.array(general)
        values = label_values(data.take(take), encoding.take(take))
        counts = values.list.len().fill_null(0).to_numpy()
        single = np.flatnonzero(counts == 1)
        one = one.scatter(general[single], values.list.first().gather(single))
        several = np.flatnonzero(counts > 1)
        many_rows, many = general[several], values.gather(several)
    one = one.to_frame().select(pl.when(pl.col("one") != "").then(pl.col("one")).alias("one")).get_column("one")
    return one.to_arrow(compat_level=pl.CompatLevel.oldest()).cast(pa.string()), many_rows, many


class LabelIndex:
    """Deduplicated labels of one bucket, their key hashes sorted, ready to be probed batch after batch.

    Attributes:
        labels: label records given (before deduplication).
        duplicates: records superseded by a later one with the same key.
    """

    def __init__(self, columns: dict[str, list[pa.Array]], files: pa.Array) -> None:
        """`columns`: chunks of the compact labels in read order (``_hash``, event_id, label_data, label_encoding,
        label_hour, file_id, label_line), emptied as they are combined; `files`: the URIs file ids refer to."""
        self.table = _combine(columns)
        self.labels = self.table.num_rows
        hashes = np.asarray(self.table.column("_hash").to_numpy(), dtype=np.uint64)
        self.table = self.table.drop_columns(["_hash"])
        self.files = files
        # Label values are decoded (polars, GIL released) while the hashes are sorted (numpy, GIL released).
        with ThreadPoolExecutor(max_workers=1) as pool:
            values = pool.submit(
                split_label_values, self.table.column("label_data"), self.table.column("label_encoding")
            )
            self._build(hashes)
            self.one, self.many_rows, self.many = values.result()
        self.value = pl.Series("v", self.one).cast(pl.Float64, strict=False).to_arrow()
        # Plain arrays (not chunked) of what each merged row takes.
        self.columns_by_name = {
            n: self.table.column(n).chunk(0) if self.table.num_rows else pa.array([], self.table.schema.field(n).type)
            for n in ("label_data", "label_encoding", "label_hour", "label_line", "file_id")
        }

    def _build(self, hashes: np.ndarray) -> None:
        """Deduplicate by key (latest wins) and index the distinct keys by hash."""
        order = np.argsort(hashes)
        sorted_hashes = hashes[order]
        first = np.ones(len(order), dtype=bool)
        first[1:] = sorted_hashes[1:] != sorted_hashes[:-1]
        starts = np.flatnonzero(first)
        # Rows are in read order, so of the rows sharing a hash the highest is the latest label of that key.
        latest = np.maximum.reduceat(order, starts) if len(order) else order
        keys = self.table.column("event_id")
        self.collision = False
        if len(starts) < len(order):
            # Rows dropped as older labels of the same key: check their keys really equal the kept one's.
            owner = latest[np.cumsum(first) - 1]
            older = np.flatnonzero(order != owner)
            same = pc.equal(keys.take(pa.array(order[older])), keys.take(pa.array(owner[older])))
            self.collision = not bool(pc.all(same).as_py())
        # The index: sorted hashes of distinct keys and the table row of each (the latest label of that key).
        self.hashes = sorted_hashes[starts]
        self.rows = latest
        if self.collision:
            # Two keys share a 64-bit hash (about never): deduplicate and look up by the strings instead.
            logger.warning("64-bit key hash collision among labels; joining this bucket by string lookup")
            frame = pl.DataFrame({"k": keys}).with_row_index("i")
            self.rows = np.sort(frame.unique("k", keep="last").get_column("i").to_numpy().astype(np.int64))
            self.hashes = np.empty(0, np.uint64)
        self.duplicates = self.labels - len(self.rows)
        self.keys = keys.cast(pa.string())
        self._distinct = pa.array(self.rows) if self.collision else None
        self.matched = np.zeros(self.table.num_rows, dtype=bool)
        # A direct-address table over the top bits of the sorted hashes: keys whose hash starts with t are at
        # hashes[bounds[t]:bounds[t + 1]], about one of them per slot, so a lookup is a cache miss or two
        # instead of a binary search.
        self._bits = max(1, int(np.ceil(np.log2(max(len(self.hashes), 2)))))
        self._shift = np.uint64(64 - self._bits)
        self._bounds = np.searchsorted(
            self.hashes >> self._shift, np.arange((1 << self._bits) + 1, dtype=np.uint64)
        ).astype(np.int64)

    def probe(self, keys: pa.Array, hashes: np.ndarray | None = None) -> np.ndarray:
        """The label row of each key (`hashes`: their `key_hash`), -1 where none matches; marks labels matched.

        Safe to call from several threads at once: it only reads the index, and the matched marks it sets
        are all True.
        """
        n = len(keys)
        if not len(self.rows) or not n:
            return np.full(n, -1, dtype=np.int64)
        if self.collision:
            assert self._distinct is not None
            found = pc.index_in(keys, value_set=self.keys.take(self._distinct))
            pos = np.asarray(found.fill_null(-1).to_numpy(zero_copy_only=False), dtype=np.int64)
            lidx = np.where(pos >= 0, self.rows[np.maximum(pos, 0)], -1)
        else:
            h = key_hash(keys) if hashes is None else hashes
            pos = self._find(h)
            cand = np.flatnonzero(self.hashes[pos] == h)
            lidx = np.full(n, -1, dtype=np.int64)
            if len(cand):
                rows = self.rows[pos[cand]]
                # Equal hashes are candidates only: the strings decide (null keys never match).
                same = pc.equal(keys.take(pa.array(cand)), self.keys.take(pa.array(rows)))
                ok = np.asarray(same.fill_null(False).to_numpy(zero_copy_only=False), dtype=bool)
                lidx[cand[ok]] = rows[ok]
        self.matched[lidx[lidx >= 0]] = True
        return lidx

    def _find(self, h: np.ndarray) -> np.ndarray:
        """For each hash, the position of the first indexed hash >= it within its top-bits slot (clipped)."""
        slot = (h >> self._shift).astype(np.int64)
        pos, end = self._bounds[slot], self._bounds[slot + 1]
        # Walk each slot's few entries in step, all keys at once: a loop per step, not per key.
        active = np.flatnonzero(pos < end)
        while len(active):
            behind = self.hashes[pos[active]] < h[active]
            active = active[behind]
            pos[active] += 1
            active = active[pos[active] < end[active]]
        clipped: np.ndarray = np.minimum(pos, len(self.hashes) - 1)
        return clipped

    def columns(self, lidx: np.ndarray, record_index: pa.Array | None) -> dict[str, pa.Array]:
        """The ground-truth columns for rows matched to labels `lidx` (-1: no label, all null).

        The label of a row: the only value when the label has one; with several, the one at the row's
        `record_index` (decoded payload records, batch records), else null.
        """
        idx = pa.array(lidx, pa.int64(), mask=lidx < 0)
        t = self.columns_by_name
        label, value = self.one.take(idx), self.value.take(idx)
        if record_index is not None and len(self.many_rows):
            at = np.minimum(np.searchsorted(self.many_rows, lidx), len(self.many_rows) - 1)
            many = np.where((lidx >= 0) & (self.many_rows[at] == lidx), at, -1)
            rows = np.flatnonzero(many >= 0)
        else:
            rows = np.empty(0, np.int64)
        if record_index is not None and len(rows):
            frame = pl.DataFrame(
                {
                    "v": self.many.gather(many[rows]),
                    "r": pl.Series(record_index.take(pa.array(rows)).cast(pa.int64())),
                }
            )
            picked = frame.select(pl.col("v").list.get(pl.col("r"), null_on_oob=True)).to_series()
            label = pc.replace_with_mask(
                label,
                pa.array(many >= 0),
                picked.to_arrow(compat_level=pl.CompatLevel.oldest()).cast(pa.string()),
            )
            value = pl.Series("v", label).cast(pl.Float64, strict=False).to_arrow()
        out: dict[str, Any] = {
            "label_data": t["label_data"].take(idx),
            "label_encoding": t["label_encoding"].take(idx),
            "label": label,
            "label_value": value,
            # Ids come from the store's own numbering of `files`: no need to validate them row by row.
            "label_file": self.files.take(t["file_id"].take(idx)),
            "label_hour": t["label_hour"].take(idx),
            "label_line": t["label_line"].take(idx),
        }
        return {f.name: _as(out[f.name], f.type) for f in label_columns()}

    def unmatched(self) -> int:
        """Distinct label keys no prediction matched."""
        return int(len(self.rows) - np.count_nonzero(self.matched[self.rows]))


def _combine(columns: dict[str, list[pa.Array]]) -> pa.Table:
    """One table of the chunks, a column at a time: each column's chunks are released once combined, so the
    labels are never held twice."""
    arrays = {}
    for name in list(columns):
        chunks = columns.pop(name)
        arrays[name] = pa.concat_arrays(chunks) if chunks else pa.array([], _COMPACT.field(name).type)
        del chunks
    return pa.table(arrays, schema=_COMPACT)


def _as(a: pa.Array | pa.ChunkedArray, t: pa.DataType) -> pa.Array:
    if isinstance(a, pa.ChunkedArray):
        a = a.combine_chunks()
    return a if a.type == t else a.cast(t)
