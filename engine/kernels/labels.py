"""Ground-truth decoder: a unit of label JSONL to rows of the "labels" table and rejects.

Decoding follows the envelope decoder: a whole unit goes to `pyarrow.json` in one call with an explicit schema
and rows map back to (object, line) with numpy. A unit with anything pyarrow cannot take record by record (an
array line, invalid JSON, a field of another type, invalid UTF-8, an over-long line) is decoded line by line
with orjson instead; both paths meet in the same vectorized validation. Records = label rows + rejects.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj

from engine.formats.ground_truth import FIELD_PATHS, PARSE_SCHEMA
from engine.io.fetch import Piece
from engine.kernels.lines import (
    FieldError,
    Lines,
    field_text,
    parse_line,
    read_flat,
    unverified_lines,
    value_at,
)
from engine.kernels.rejects import LineReject, concat_rejects, unit_rejects
from engine.kernels.result import UnitResult
from engine.tables import table_spec
from engine.times import TIME_TYPE, parse_inference_times

__all__ = ["decode_labels", "labels_schema"]

logger = logging.getLogger(__name__)

_RAW_LIMIT = 1 << 20
_HOUR_KEY = re.compile(r"(?:^|/)(\d{4})/(\d{2})/(\d{2})/(\d{2})/[^/]+$")
_PARSE = pj.ParseOptions(explicit_schema=PARSE_SCHEMA, unexpected_field_behavior="ignore")
_FLAT = list(FIELD_PATHS)
_PATHS = list(FIELD_PATHS.values())


def labels_schema() -> pa.Schema:
    """Arrow schema of the labels `read_ground_truth` streams (schemas/tables.json "labels")."""
    return table_spec("labels").schema


def _slow(lines: Lines, max_line_bytes: int) -> tuple[pa.Table, np.ndarray, list[LineReject], int]:
    """orjson per line: records (an array line gives one per element), their line indices, rejects, blanks.

    The table has a ``_raw`` column: an array element's own JSON, so that its reject (if validation
    rejects it) shows that element rather than the whole line.
    """
    values: dict[str, list[str | None]] = {c: [] for c in _FLAT}
    raws: list[bytes | None] = []
    good: list[int] = []
    bad: list[LineReject] = []
    blank = int(lines.blank.sum())
    for i in np.flatnonzero(~lines.blank).tolist():
        if lines.lengths[i] > max_line_bytes:
            bad.append((i, "line_too_long", f"line of {int(lines.lengths[i])} bytes exceeds {max_line_bytes}", None))
            continue
        parsed, error = parse_line(lines.line(i), _PARSE)
        if error is not None:
            bad.append((i, "invalid_json", error, None))
            continue
        if isinstance(parsed, list):
            if not parsed:
                blank += 1  # "[]" holds no record
                continue
            records, whole = parsed, False
        else:
            records, whole = [parsed], True
        for rec in records:
            raw = None if whole else _dumps_or_none(rec)
            if not isinstance(rec, dict):
                bad.append((i, "not_an_object", f"a JSON {type(rec).__name__} is not a ground-truth record", raw))
                continue
            event_id = value_at(rec, _PATHS[0])
            if isinstance(event_id, int) and not isinstance(event_id, bool):
                event_id = str(event_id)  # an id written as a number means its digits
            if event_id is not None and not isinstance(event_id, str):
                bad.append((i, "missing_event_id", "eventMetadata.eventId is not a string", raw))
                continue
            try:
                row = [event_id, *(field_text(value_at(rec, p)) for p in _PATHS[1:])]
            except FieldError as exc:
                bad.append((i, "invalid_field", f"a field cannot be kept as JSON text: {exc}", raw))
                continue
            for c, v in zip(_FLAT, row, strict=True):
                values[c].append(v)
            raws.append(raw)
            good.append(i)
    table = pa.table({**{c: pa.array(values[c], pa.string()) for c in _FLAT}, "_raw": pa.array(raws, pa.binary())})
    return table, np.asarray(good, dtype=np.int64), bad, blank


def _validate(flat: pa.Table, idx: np.ndarray) -> tuple[np.ndarray, list[LineReject]]:
    """Mask of valid records and rejects by line, vectorized."""
    event_id = flat.column("event_id")
    data = flat.column("label_data")

    def mask(a: pa.Array | pa.ChunkedArray) -> np.ndarray:
        return np.asarray(a.to_numpy(zero_copy_only=False), dtype=bool)

    no_id = mask(pc.fill_null(pc.or_(pc.is_null(event_id), pc.equal(event_id, "")), True))
    no_data = mask(pc.is_null(data)) & ~no_id
    raw = flat.column("_raw") if "_raw" in flat.column_names else None

    def element(j: int) -> bytes | None:
        value = None if raw is None else raw[j].as_py()
        return value if isinstance(value, bytes) else None

    # Loops over rejected records only: they are rare, and each needs its own message.
    bad: list[LineReject] = [
        (int(idx[j]), "missing_event_id", "eventMetadata.eventId is missing or empty", element(j))
        for j in np.flatnonzero(no_id).tolist()
    ]
    bad += [
        (int(idx[j]), "missing_label_data", "groundTruthData.data is missing: the record carries no label", element(j))
        for j in np.flatnonzero(no_data).tolist()
    ]
    return ~(no_id | no_data), bad


def decode_labels(pieces: list[Piece], *, max_line_bytes: int) -> UnitResult:
    """Decode one unit of ground-truth pieces into label rows and rejects."""
    failed = [p for p in pieces if p.error is not None and not p.data]
    lines = Lines([p for p in pieces if p.error is None])
    fast = read_flat(lines, _PARSE, FIELD_PATHS, max_line_bytes)
    if fast is not None:
        flat, idx = fast
        unreadable: list[LineReject] = []
        blank_lines = lines.total - len(idx)
    else:
        flat, idx, unreadable, blank_lines = _slow(lines, max_line_bytes)
    valid, invalid = _validate(flat, idx)
    bad = unreadable + invalid
    reasons = Counter(b[1] for b in bad)
    reasons.update(p.error.reason for p in failed if p.error)
    rejects = unit_rejects(lines, bad, failed)
    # Lines inflated from a gzip stream that failed verification: a reject each, never a label.
    unverified, suspect, suspect_blank = unverified_lines(pieces)
    if suspect:
        why = "line inflated from a gzip stream that failed verification"
        rejects = concat_rejects(
            [rejects, unit_rejects(unverified, [(i, "corrupt_gzip", why, None) for i in suspect], [])]
        )
        reasons["corrupt_gzip"] += len(suspect)
    return UnitResult(
        rows=_rows(lines, flat, idx, valid),
        rejects=rejects,
        records=len(idx) + len(unreadable) + len(failed) + len(suspect),
        blank_lines=blank_lines + suspect_blank,
        bytes=len(lines.buf),
        fallback=fast is None,
        reasons=reasons,
    )


def _compact_schema() -> pa.Schema:
    """The labels schema with label_file dictionary-encoded: a unit's rows share a few objects' URIs."""
    schema = labels_schema()
    i = schema.get_field_index("label_file")
    return schema.set(i, schema.field(i).with_type(pa.dictionary(pa.int32(), pa.string())))


def _rows(lines: Lines, flat: pa.Table, idx: np.ndarray, keep: np.ndarray) -> pa.RecordBatch:
    schema = _compact_schema()
    sel = np.flatnonzero(keep)
    if not len(sel):
        return pa.RecordBatch.from_pylist([], schema=schema)
    piece, line_no = lines.provenance(idx[sel])
    take = pa.array(piece, pa.int32())
    picked = flat if sel.size == flat.num_rows else flat.take(pa.array(sel))
    hours = pa.array([p.obj.hour for p in lines.pieces], TIME_TYPE)
    cols: dict[str, Any] = {c: picked.column(c).combine_chunks() for c in _FLAT}
    cols["label_inference_time"] = parse_inference_times(cols["label_inference_time"])
    cols["label_hour"] = hours.take(take)
    cols["label_file"] = pa.DictionaryArray.from_arrays(take, pa.array([p.obj.uri for p in lines.pieces], pa.string()))
    cols["label_line"] = pa.array(line_no, pa.int64())
    return pa.RecordBatch.from_arrays([cols[f.name] for f in schema], schema=schema)


def _dumps_or_none(rec: Any) -> bytes | None:
    """An array element's own JSON for its reject; None (the whole line is kept) when it is too deep to write."""
    try:
        return orjson.dumps(rec)
    except orjson.JSONEncodeError:
        return None
