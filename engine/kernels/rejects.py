"""Reject rows built column by column from a unit's lines: provenance by numpy, raw bytes as Arrow slices of the
unit's buffer (no Python object per reject), and one row per stretch of bytes that could not be read."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from engine.io.fetch import Piece
from engine.kernels.lines import Lines
from engine.tables import rejects_schema

_RAW_LIMIT = 1 << 20  # raw bytes kept per reject for over-long lines

__all__ = ["LineReject", "line_rejects", "lost_rejects", "unit_rejects"]

# (line index in the unit, reason, detail[, raw bytes to keep instead of the line: one element of an array line])
LineReject = tuple[int, str, str] | tuple[int, str, str, bytes | None]


def lost_rejects(failed: list[Piece]) -> list[dict[str, Any]]:
    """One reject row per marker of bytes that could not be read at all (no line, no raw bytes)."""
    rows = []
    for p in failed:
        reason, detail = (p.error.reason, p.error.detail) if p.error else ("corrupt_gzip", "")
        rows.append(
            {
                "endpoint": p.obj.endpoint,
                "variant": p.obj.variant,
                "source_hour": p.obj.hour,
                "source_file": p.obj.uri,
                "source_line": None,
                "reason": reason,
                "detail": f"bytes from line {p.first_line} on could not be read: {detail}"[:500],
                "raw": None,
            }
        )
    return rows


def unit_rejects(lines: Lines, bad: Sequence[LineReject], failed: list[Piece]) -> pa.RecordBatch:
    """The rejects of a unit as one Arrow batch: its rejected lines, then what could not be read at all.

    A unit of a million tiny bad lines is a million rejects: provenance comes from numpy over the line
    geometry and the raw bytes are slices of the unit's buffer taken by Arrow, so memory stays near the
    size of the unit's bytes.
    """
    schema = rejects_schema()
    if not bad and not failed:
        return pa.RecordBatch.from_pylist([], schema=schema)
    batches = [line_rejects(lines, sorted(bad, key=lambda b: b[0]), schema)] if bad else []
    if failed:
        batches.append(pa.RecordBatch.from_pylist(lost_rejects(failed), schema=schema))
    return batches[0] if len(batches) == 1 else pa.concat_batches(batches)


def line_rejects(lines: Lines, bad: Sequence[LineReject], schema: pa.Schema) -> pa.RecordBatch:
    """Rejects of lines of the unit, by line index (sorted): (index, reason, detail[, raw bytes to keep instead])."""
    idx = np.fromiter((b[0] for b in bad), dtype=np.int64, count=len(bad))
    piece, line_no = lines.provenance(idx)
    take = pa.array(piece)
    pieces = lines.pieces
    endpoint = pa.array([p.obj.endpoint for p in pieces], pa.string()).take(take)
    variant = pa.array([p.obj.variant for p in pieces], pa.string()).take(take)
    hour = pa.array([p.obj.hour for p in pieces], schema.field("source_hour").type).take(take)
    uri = pa.array([p.obj.uri for p in pieces], pa.string()).take(take)
    reason = pa.array([b[1] for b in bad], pa.string())
    detail = pc.utf8_slice_codeunits(pa.array([b[2] for b in bad], pa.string()), 0, 500)
    # Every line as buffer[start, end): one binary array over the unit's bytes, then the rejected ones.
    starts = lines.starts[idx]
    ends = np.minimum(lines.ends[idx], starts + _RAW_LIMIT)
    offsets = np.empty(2 * len(idx), dtype=np.int64)
    offsets[0::2], offsets[1::2] = starts, ends
    if len(idx) > 1 and not bool(np.all(np.diff(offsets) >= 0)):  # a line named twice: slice one by one
        raw = pa.array([lines.buf[a:b] for a, b in zip(starts.tolist(), ends.tolist(), strict=True)], pa.binary())
    else:  # sorted, disjoint lines: their spans interleave with the gaps between them
        spans = pa.LargeBinaryArray.from_buffers(
            pa.large_binary(), 2 * len(idx) - 1, [None, pa.py_buffer(offsets), pa.py_buffer(lines.buf)]
        )
        raw = spans.take(pa.array(np.arange(0, 2 * len(idx), 2, dtype=np.int64))).cast(pa.binary())
    own = [(k, b[3]) for k, b in enumerate(bad) if len(b) > 3 and b[3] is not None]
    if own:  # elements of an array line keep their own JSON, not the whole line (rare: a loop over those only)
        values = raw.to_pylist()
        for k, value in own:
            values[k] = value[:_RAW_LIMIT]
        raw = pa.array(values, pa.binary())
    return pa.RecordBatch.from_arrays(
        [endpoint, variant, hour, uri, pa.array(line_no, pa.int64()), reason, detail, raw], schema=schema
    )
