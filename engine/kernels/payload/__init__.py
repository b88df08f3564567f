"""Payload decoding: the CSV / JSON / JSON Lines / base64 bodies inside capture records to typed columns.

One row per payload *record*: a body may carry several CSV rows, JSON Lines rows or ``instances``
items, and the response carries the same number. Input and output sides are decoded independently
(one event may be CSV in, JSON out), grouped by (endpoint, variant) so each keeps its own columns.
An event whose body does not decode, or whose input and output record counts differ, is rejected
as a whole with the reason.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from engine.kernels.payload.csv import decode_csv_bodies
from engine.kernels.payload.json import decode_json_bodies
from engine.kernels.payload.records import SideRecords
from engine.kernels.payload.spec import ColumnSpec, SideSpec, load_column_spec, parse_column_spec
from engine.tables import capture_schema

__all__ = [
    "ENVELOPE",
    "Body",
    "ColumnSpec",
    "PayloadFailure",
    "SideSpec",
    "decode_payloads",
    "decode_side",
    "decode_sides",
    "load_column_spec",
    "parse_column_spec",
    "payload_rejects",
]

Side = Literal["input", "output"]
SIDES: tuple[Side, Side] = ("input", "output")
# Envelope columns carried onto every record row (from schemas/tables.json); the raw bodies are replaced
# by their decoded columns.
ENVELOPE = [n for n in capture_schema().names if n not in ("input_data", "output_data")]


@dataclass(frozen=True)
class Body:
    """One side of a batch of events as plain arrays: the bodies, their capture encoding and content type.

    Any producer of bodies (the capture envelope, a batch transform file, a monitoring source) hands its
    sides over like this; the decoder knows no table's column names.
    """

    data: pa.Array
    encoding: pa.Array
    content_type: pa.Array


@dataclass(frozen=True)
class PayloadFailure:
    """An event rejected by payload decoding: its row in the envelope batch, why, and the body at fault."""

    row: int
    reason: str
    detail: str
    raw: bytes | None


def _np(a: pa.Array | pa.ChunkedArray) -> np.ndarray:
    return np.asarray(a.to_numpy(zero_copy_only=False))


def _mask(a: pa.Array | pa.ChunkedArray) -> np.ndarray:
    return np.asarray(pc.fill_null(a, False).to_numpy(zero_copy_only=False), dtype=bool)


def _text(binary: pa.Array) -> tuple[pa.Array, list[int]]:
    """Binary to string; returns the positions that are not UTF-8 (as nulls)."""
    try:
        return binary.cast(pa.string()), []
    except pa.ArrowInvalid:
        # Rare: find the offenders one by one, only on this failure path.
        values = [None if v is None else _utf8(v) for v in binary.to_pylist()]
        bad = [i for i, (v, b) in enumerate(zip(values, binary.is_valid().to_pylist(), strict=True)) if v is None and b]
        return pa.array(values, pa.string()), bad


def _utf8(value: bytes) -> str | None:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _concat(parts: list[SideRecords]) -> SideRecords:
    parts = [p for p in parts if len(p.event) or p.failed]
    failed = {k: v for p in parts for k, v in p.failed.items()}
    rows = [p for p in parts if len(p.event)]
    if not rows:
        return SideRecords(np.empty(0, dtype=np.int64), pa.table({}), failed)
    if len(rows) == 1:
        return SideRecords(rows[0].event, rows[0].table, failed)
    table = pa.concat_tables([p.table for p in rows], promote_options="permissive")
    event = np.concatenate([p.event for p in rows])
    order = np.argsort(event, kind="stable")
    return SideRecords(event[order], table.take(pa.array(order)), failed)


def decode_side(
    data: pa.Array, encoding: pa.Array, content_type: pa.Array, *, side: Side, spec: ColumnSpec
) -> SideRecords:
    """Decode one side of a batch of events. Null bodies give no records (the side was not captured).

    The format is the capture's `encoding`; BASE64 bodies are decoded and then read by their observed
    content type (CSV, JSON, JSON Lines); any other content type stays binary, one record per body, in
    a binary column named ``{side}_data``.
    """
    n = len(data)
    present = _mask(pc.is_valid(data))
    enc = pc.utf8_upper(pc.fill_null(encoding, ""))
    ct = pc.utf8_lower(pc.fill_null(content_type, ""))
    failed: dict[int, tuple[str, str]] = {}
    is_b64 = _mask(pc.equal(enc, "BASE64")) & present
    text = data
    if is_b64.any():
        decoded = pl.Series(data).str.decode("base64", strict=False).to_arrow()
        bad64 = is_b64 & ~_mask(pc.is_valid(decoded))
        for i in np.flatnonzero(bad64).tolist():
            failed[i] = ("invalid_base64", f"the {side} body is not valid base64")
        as_text, not_utf8 = _text(decoded)
        binary_text = pc.if_else(pa.array(is_b64), as_text, data)
        text = binary_text
    else:
        decoded, not_utf8 = None, []
    is_csv_ct = _mask(pc.match_substring(ct, "csv"))
    is_jsonl_ct = _mask(pc.match_substring_regex(ct, r"jsonl|jsonlines|ndjson"))
    is_json_ct = _mask(pc.match_substring(ct, "json"))
    is_csv_enc = _mask(pc.equal(enc, "CSV")) & present
    is_json_enc = _mask(pc.equal(enc, "JSON")) & present
    ok = present & ~np.isin(np.arange(n), np.fromiter(failed, dtype=np.int64, count=len(failed)))
    csv = ok & (is_csv_enc | (is_b64 & is_csv_ct))
    jsonl = ok & ((is_json_enc | is_b64) & is_jsonl_ct) & ~csv
    json = ok & (is_json_enc | (is_b64 & is_json_ct)) & ~csv & ~jsonl
    binary = ok & is_b64 & ~csv & ~json & ~jsonl
    for i in np.flatnonzero(ok & ~csv & ~json & ~jsonl & ~binary).tolist():
        failed[i] = ("unknown_encoding", f"{side} encoding {enc[i].as_py()!r} is not CSV, JSON or BASE64")
    for i in not_utf8:
        if csv[i] or json[i] or jsonl[i]:
            failed[i] = ("invalid_utf8", f"the base64-decoded {side} body is not UTF-8 text")
            csv[i] = json[i] = jsonl[i] = False

    side_spec: SideSpec = spec.side(side)
    parts = [SideRecords(np.empty(0, dtype=np.int64), pa.table({}), failed)]
    for mask, kind in ((csv, "csv"), (json, "json"), (jsonl, "jsonl")):
        idx = np.flatnonzero(mask)
        if not len(idx):
            continue
        bodies = text.take(pa.array(idx))
        if kind == "csv":
            got = decode_csv_bodies(bodies, side=side, spec=side_spec)
        else:
            got = decode_json_bodies(bodies, lines=kind == "jsonl", side=side, spec=side_spec, arrays=spec.arrays)
        parts.append(SideRecords(idx[got.event], got.table, {int(idx[k]): v for k, v in got.failed.items()}))
    idx = np.flatnonzero(binary)
    if len(idx) and decoded is not None:
        parts.append(SideRecords(idx, pa.table({f"{side}_data": decoded.take(pa.array(idx))})))
    return _concat(parts)


def _groups(batch: pa.RecordBatch) -> Iterator[np.ndarray]:
    """Row indices of each (endpoint, variant) in the batch (batch transform rows: one group)."""
    if "endpoint" not in batch.schema.names:
        yield np.arange(batch.num_rows)
        return
    e = pc.dictionary_encode(batch.column("endpoint"), null_encoding="encode").indices
    v = pc.dictionary_encode(batch.column("variant"), null_encoding="encode").indices
    key = _np(e).astype(np.int64) * (int(pc.max(v).as_py() or 0) + 1) + _np(v).astype(np.int64)
    for k in np.unique(key):
        yield np.flatnonzero(key == k)


def _positions(counts: np.ndarray, has: np.ndarray, rec_event: np.ndarray, rec_index: np.ndarray) -> pa.Array:
    """Row of each output record in a side's table (ordered by event), null where the side is absent."""
    start = np.concatenate([[0], np.cumsum(counts)[:-1]])
    pos = start[rec_event] + rec_index
    return pa.array(pos, pa.int64(), mask=~has[rec_event])


def decode_sides(
    carried: pa.RecordBatch, inp: Body, out: Body, spec: ColumnSpec
) -> tuple[pa.RecordBatch | None, list[PayloadFailure]]:
    """Decode the input and output bodies of one group of events (one schema: one endpoint and variant).

    Returns one row per payload record: `carried`'s columns repeated per record, ``record_index``, the decoded
    columns of both sides and ``prediction``; plus the failures, by row of `carried`.
    """
    n = carried.num_rows
    ins = decode_side(inp.data, inp.encoding, inp.content_type, side="input", spec=spec)
    outs = decode_side(out.data, out.encoding, out.content_type, side="output", spec=spec)
    has_in = _mask(pc.is_valid(inp.data))
    has_out = _mask(pc.is_valid(out.data))
    in_counts = np.bincount(ins.event, minlength=n)
    out_counts = np.bincount(outs.event, minlength=n)

    failures: list[PayloadFailure] = []
    bad = np.zeros(n, dtype=bool)
    for records, body in ((ins, inp), (outs, out)):
        for row, (reason, detail) in sorted(records.failed.items()):
            if not bad[row]:
                bad[row] = True
                failures.append(PayloadFailure(row, reason, detail, _raw(body.data, row)))
    mismatch = has_in & has_out & ~bad & (in_counts != out_counts)
    for row in np.flatnonzero(mismatch).tolist():
        detail = f"input has {in_counts[row]} records, output has {out_counts[row]}"
        failures.append(PayloadFailure(row, "record_count_mismatch", detail, _raw(out.data, row)))
    good = np.flatnonzero(~bad & ~mismatch)
    # An event with neither side captured still is one record (of envelope columns only).
    counts = np.where(has_in, in_counts, np.where(has_out, out_counts, 1))
    if not len(good):
        return None, failures

    per = counts[good]
    rec_event = np.repeat(good, per)
    firsts = np.repeat(np.cumsum(per) - per, per)
    rec_index = np.arange(len(rec_event), dtype=np.int64) - firsts
    take = pa.array(rec_event)
    # The carried columns (the capture envelope, or batch provenance) go onto every record row.
    columns: dict[str, pa.Array] = {c: carried.column(c).take(take) for c in carried.schema.names}
    columns["record_index"] = pa.array(rec_index, pa.int64())
    output_keys: dict[str, str] = {}  # output column name -> its key among the row's columns
    for records, has, counts_side, prefix in ((ins, has_in, in_counts, ""), (outs, has_out, out_counts, "output.")):
        if not records.table.num_columns:
            continue
        pos = _positions(counts_side, has, rec_event, rec_index)
        picked = records.table.take(pos)
        for name in picked.column_names:
            key = f"{prefix}{name}" if name in columns else name
            columns[key] = picked.column(name).combine_chunks()
            if records is outs:
                output_keys[name] = key
    _add_prediction(columns, output_keys, spec.output.prediction, len(rec_event))
    return pa.RecordBatch.from_pydict(columns), failures


# Output fields that name the prediction itself, in order of preference, when the output has several
# (SageMaker's built-in algorithms answer {"predicted_label": 1, "score": 0.98}).
PREDICTION_FIELDS = ("predicted_label", "label", "score", "prediction_0", "probability")


def _add_prediction(columns: dict[str, pa.Array], output: dict[str, str], marked: str | None, n: int) -> None:
    """Give every decoded row one ``prediction`` column, so that monitoring code never guesses its name.

    Per row, the first non-null of: the spec's marked prediction, the output's own ``prediction`` column,
    the fields of `PREDICTION_FIELDS` in that order, then the output's other scalar columns by name; nulls
    when no output was captured. Per row, so that a record's prediction never depends on the other
    records of its batch (a batch that also holds CSV outputs, whose column is ``prediction``, must not
    empty the prediction of a JSON output). Several candidates of numbers give float64, else text. The
    original columns stay.
    """
    if "prediction" in columns and "prediction" not in output.values():
        return  # a column of that name that is not the output's: left alone
    scalar = {name: key for name, key in output.items() if not pa.types.is_nested(columns[key].type)}
    order = [marked] if marked is not None and marked in scalar else []
    order += [f for f in ("prediction", *PREDICTION_FIELDS) if f in scalar and f not in order]
    order += sorted(name for name in scalar if name not in order)
    if not order:
        columns["prediction"] = pa.nulls(n, pa.float64())
        return
    arrays = [columns[scalar[name]] for name in order]
    if len(arrays) > 1 and any(not _is_binary(a) for a in arrays):
        # A binary body (BASE64 of no text type) is no prediction next to text ones, and may not be UTF-8.
        arrays = [a for a in arrays if not _is_binary(a)]
    if len(arrays) == 1:
        columns["prediction"] = arrays[0]
        return
    numeric = all(
        pa.types.is_integer(a.type) or pa.types.is_floating(a.type) or pa.types.is_null(a.type) for a in arrays
    )
    target = pa.float64() if numeric else pa.string()
    columns["prediction"] = pc.coalesce(*(a.cast(target) for a in arrays))


def _is_binary(a: pa.Array) -> bool:
    return bool(pa.types.is_binary(a.type) or pa.types.is_large_binary(a.type))


def _raw(data: pa.Array, row: int) -> bytes | None:
    value = data[row].as_py()
    return value.encode() if isinstance(value, str) else value


def decode_payloads(
    batch: pa.RecordBatch, spec: ColumnSpec | None = None
) -> tuple[list[pa.RecordBatch], list[tuple[pa.RecordBatch, list[PayloadFailure]]]]:
    """Decode the payloads of a batch of capture rows (`spec` None: the default naming rules).

    Returns one record batch per (endpoint, variant) present (each with its own payload columns, plus one
    ``prediction`` column), and the rejected events with the envelope rows they came from.
    """
    spec = spec if spec is not None else ColumnSpec()
    records: list[pa.RecordBatch] = []
    rejected: list[tuple[pa.RecordBatch, list[PayloadFailure]]] = []
    if batch.num_rows == 0:
        return records, rejected
    for rows in _groups(batch):
        group = batch if len(rows) == batch.num_rows else batch.take(pa.array(rows))
        inp, out = (
            Body(*(group.column(f"{side}_{c}") for c in ("data", "encoding", "content_type"))) for side in SIDES
        )
        decoded, failures = decode_sides(group.drop_columns(["input_data", "output_data"]), inp, out, spec)
        if decoded is not None and decoded.num_rows:
            records.append(decoded)
        if failures:
            rejected.append((group, failures))
    return records, rejected


def payload_rejects(rejected: list[tuple[pa.RecordBatch, list[PayloadFailure]]]) -> pa.RecordBatch:
    """The `_rejects` rows of events that payload decoding rejected."""
    from engine.io.listing import describe_key
    from engine.tables import rejects_schema

    rows = []
    for batch, failures in rejected:
        files = batch.column("source_file")
        lines = batch.column("source_line")
        endpoints = batch.column("endpoint")
        variants = batch.column("variant")
        for f in failures:
            uri = files[f.row].as_py()
            rows.append(
                {
                    "endpoint": endpoints[f.row].as_py(),
                    "variant": variants[f.row].as_py(),
                    "source_hour": describe_key(uri)[2],
                    "source_file": uri,
                    "source_line": lines[f.row].as_py(),
                    "reason": f.reason,
                    "detail": f.detail[:500],
                    "raw": f.raw,
                }
            )
    return pa.RecordBatch.from_pylist(rows, schema=rejects_schema())
