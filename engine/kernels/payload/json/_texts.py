"""Bodies to record texts: JSON Lines split into lines, documents unwrapped from their container keys."""

from __future__ import annotations

import logging

import numpy as np
import orjson
import polars as pl

from engine.kernels.payload.json._columns import _kinds
from engine.kernels.payload.json._common import _ARR, _CONTAINERS, _ITEM, _KEY, _OBJ, _VALUE, _WS, Failures, Side, _clip
from engine.kernels.payload.json._scan import _key_names, _level_spans, _scan, _spans

logger = logging.getLogger(__name__)

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
