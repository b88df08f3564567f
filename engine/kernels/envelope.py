"""Envelope decoder: pieces of capture JSONL to Arrow record batches of the capture table, plus rejects.

The fast path hands a whole unit (many objects, ~16 MB) to `pyarrow.json` with an explicit schema
and maps rows back to (object, line) with numpy: no Python work per record. Any anomaly that
pyarrow cannot take record by record (invalid JSON, a non-object line, a field of an unexpected
type, an over-long line) sends just that unit through a per-line orjson path, which rejects the bad
lines with reasons and keeps the good ones. Both paths meet in the same vectorized validation.
"""

from __future__ import annotations

import itertools
from collections import Counter
from datetime import datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj

from engine.formats.capture import FIELD_PATHS, parse_schema
from engine.io.fetch import Piece, ReadFailure
from engine.kernels.lines import (
    NOT_JSON,
    FieldError,
    Lines,
    field_text,
    not_json,
    parse_line,
    read_flat,
    unverified_lines,
    value_at,
)
from engine.kernels.rejects import LineReject, Rejected, concat_rejects, unit_rejects
from engine.kernels.result import UnitResult
from engine.tables import capture_schema
from engine.times import in_window, parse_inference_times

__all__ = ["decode_unit"]

_PARSE = pj.ParseOptions(explicit_schema=parse_schema(), unexpected_field_behavior="ignore")
# Flat columns both decode paths produce, in this order; where each comes from is the wire format's.
_FLAT = list(FIELD_PATHS)
_PATHS = list(FIELD_PATHS.values())


def _slow(lines: Lines, max_line_bytes: int) -> tuple[pa.Table, np.ndarray, list[LineReject], list[Rejected]]:
    """The per-line path: orjson per line; returns good records, their line indices and rejects."""
    values: dict[str, list[str | None]] = {c: [] for c in _FLAT}
    good: list[int] = []
    bad: list[LineReject] = []
    candidates = np.flatnonzero(~lines.blank)
    garbage = not_json(lines, candidates) & (lines.lengths[candidates] <= max_line_bytes)
    bulk = [Rejected(candidates[garbage], "invalid_json", NOT_JSON)]
    for i in candidates[~garbage].tolist():
        if lines.lengths[i] > max_line_bytes:
            bad.append((i, "line_too_long", f"line of {int(lines.lengths[i])} bytes exceeds {max_line_bytes}"))
            continue
        rec, error = parse_line(lines.line(i), _PARSE)
        if error is not None:
            bad.append((i, "invalid_json", error))
            continue
        if not isinstance(rec, dict):
            bad.append((i, "not_an_object", f"a JSON {type(rec).__name__} is not a capture record"))
            continue
        event_id = value_at(rec, _PATHS[0])
        if event_id is not None and not isinstance(event_id, str):
            bad.append((i, "missing_event_id", "eventMetadata.eventId is not a string"))
            continue
        try:
            row = [event_id, *(field_text(value_at(rec, p)) for p in _PATHS[1:])]
        except FieldError as exc:
            bad.append((i, "invalid_field", f"a field cannot be kept as JSON text: {exc}"))
            continue
        for c, v in zip(_FLAT, row, strict=False):
            values[c].append(v)
        good.append(i)
    table = pa.table({c: pa.array(values[c], pa.string()) for c in _FLAT})
    return table, np.asarray(good, dtype=np.int64), bad, bulk


def _validate(flat: pa.Table, idx: np.ndarray) -> tuple[pa.Array, np.ndarray, list[LineReject], list[Rejected]]:
    """Parse times and check ids, vectorized: (times, mask of valid records, rejects by line)."""
    event_id = flat.column("event_id").combine_chunks()
    time_text = flat.column("inference_time").combine_chunks()
    times = parse_inference_times(time_text)

    def mask(a: pa.Array | pa.ChunkedArray) -> np.ndarray:
        return np.asarray(a.to_numpy(zero_copy_only=False), dtype=bool)

    no_id = mask(pc.fill_null(pc.or_(pc.is_null(event_id), pc.equal(event_id, "")), True))
    no_time = mask(pc.is_null(time_text)) & ~no_id
    bad_time = mask(pc.is_null(times)) & ~no_id & ~no_time
    bulk = [
        Rejected(idx[no_id], "missing_event_id", "eventMetadata.eventId is missing or empty"),
        Rejected(idx[no_time], "missing_inference_time", "eventMetadata.inferenceTime is missing"),
    ]
    # A loop over records with unreadable times only: each message quotes its own text.
    bad: list[LineReject] = []
    for j in np.flatnonzero(bad_time).tolist():
        text = time_text[j].as_py()
        bad.append(
            (
                int(idx[j]),
                "invalid_inference_time",
                f"eventMetadata.inferenceTime is not an ISO-8601 time in years 1-9999: {text!r}",
            )
        )
    return times, ~(no_id | no_time | bad_time), bad, bulk


def decode_unit(
    pieces: list[Piece],
    *,
    max_line_bytes: int,
    start: datetime | None = None,
    end: datetime | None = None,
) -> UnitResult:
    """Decode one unit of pieces into capture rows (within [start, end)) and rejects."""
    failed = [p for p in pieces if p.error is not None and not p.data]
    lines = Lines([p for p in pieces if p.error is None])
    fast = read_flat(lines, _PARSE, FIELD_PATHS, max_line_bytes)
    if fast is None and lines.total > SLOW_LINES:
        # The per-line path holds Python objects per line: a unit of a million tiny lines is decoded in
        # groups of lines instead, so memory follows the group, and groups without anomalies go fast.
        parts = [
            decode_unit(group, max_line_bytes=max_line_bytes, start=start, end=end)
            for group in _line_groups(pieces, SLOW_LINES)
        ]
        return _combined(parts)
    if fast is not None:
        flat, idx = fast
        unreadable: list[LineReject] = []
        unparsed: list[Rejected] = []
        blank_lines = lines.total - len(idx)
    else:
        flat, idx, unreadable, unparsed = _slow(lines, max_line_bytes)
        blank_lines = int(lines.blank.sum())

    times, valid, invalid, missing = _validate(flat, idx)
    keep = valid & in_window(times, start, end)
    bad = unreadable + invalid
    bulk = unparsed + missing
    reasons = Counter(b[1] for b in bad)
    reasons.update({g.reason: len(g.lines) for g in bulk if len(g.lines)})
    reasons.update(p.error.reason for p in failed if p.error)
    unverified, suspect, suspect_blank = _unverified(pieces)
    reasons.update(r for _, r, _ in suspect)
    rejects = unit_rejects(lines, bad, failed, bulk)
    if suspect:
        rejects = concat_rejects([rejects, unit_rejects(unverified, suspect, [])])
    return UnitResult(
        rows=_rows(lines, flat, times, idx, keep),
        rejects=rejects,
        records=lines.total - blank_lines + len(failed) + len(suspect),
        blank_lines=blank_lines + suspect_blank,
        out_of_window=int(valid.sum() - keep.sum()),
        bytes=len(lines.buf),
        fallback=fast is None,
        reasons=reasons,
    )


SLOW_LINES = 65_536


def _line_groups(pieces: list[Piece], limit: int) -> list[list[Piece]]:
    """The pieces cut at line boundaries into groups of at most `limit` lines, in order."""
    groups: list[list[Piece]] = [[]]
    count = 0
    for p in pieces:
        parts = [p]
        if p.lines > limit and p.data:
            ends = np.flatnonzero(np.frombuffer(p.data, dtype=np.uint8) == 10)
            cuts = [0, *(int(ends[k]) + 1 for k in range(limit - 1, len(ends) - 1, limit)), len(p.data)]
            parts = []
            line = p.first_line
            for a, b in itertools.pairwise(cuts):
                n = p.data.count(b"\n", a, b)
                parts.append(Piece(p.obj, p.data[a:b], line, n, p.error))
                line += n
        for part in parts:
            if count and count + part.lines > limit:
                groups.append([])
                count = 0
            groups[-1].append(part)
            count += part.lines
    return [g for g in groups if g]


def _combined(parts: list[UnitResult]) -> UnitResult:
    return UnitResult(
        rows=pa.concat_batches([d.rows for d in parts]),
        rejects=concat_rejects([d.rejects for d in parts]),
        records=sum(d.records for d in parts),
        blank_lines=sum(d.blank_lines for d in parts),
        out_of_window=sum(d.out_of_window for d in parts),
        bytes=sum(d.bytes for d in parts),
        fallback=True,
        reasons=sum((d.reasons for d in parts), Counter()),
    )


def _unverified(pieces: list[Piece]) -> tuple[Lines, list[tuple[int, str, str]], int]:
    lines, nonblank, blank = unverified_lines(pieces)
    if not nonblank:
        return lines, [], blank
    owner, _ = lines.provenance(np.asarray(nonblank, dtype=np.int64))
    errors = [p.error or ReadFailure("corrupt_gzip", "") for p in lines.pieces]
    bad = [
        (i, errors[o].reason, f"line inflated from a gzip stream that failed verification ({errors[o].detail})")
        for i, o in zip(nonblank, owner.tolist(), strict=True)
    ]
    return lines, bad, blank


def _rows(lines: Lines, flat: pa.Table, times: pa.Array, idx: np.ndarray, keep: np.ndarray) -> pa.RecordBatch:
    schema = capture_schema()
    sel = np.flatnonzero(keep)
    if not len(sel):
        return pa.RecordBatch.from_pylist([], schema=schema)
    piece, line_no = lines.provenance(idx[sel])
    take = pa.array(piece)
    uris = pa.array([p.obj.uri for p in lines.pieces], pa.string()).take(take)
    endpoints = pa.array([p.obj.endpoint for p in lines.pieces], pa.string()).take(take)
    variants = pa.array([p.obj.variant for p in lines.pieces], pa.string()).take(take)
    everything = sel.size == flat.num_rows
    picked = flat if everything else flat.take(pa.array(sel))
    cols: dict[str, Any] = {"endpoint": endpoints, "variant": variants}
    for c in _FLAT:
        cols[c] = picked.column(c).combine_chunks()
    cols["inference_time"] = times if everything else times.take(pa.array(sel))
    cols["source_file"] = uris
    cols["source_line"] = pa.array(line_no, pa.int64())
    return pa.RecordBatch.from_arrays([cols[f.name] for f in schema], schema=schema)
