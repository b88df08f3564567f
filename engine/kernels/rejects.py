"""Reject rows built column by column from a unit's lines: provenance by numpy, raw bytes as Arrow slices of the
unit's buffer (no Python object per reject), and one row per stretch of bytes that could not be read."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from engine.io.fetch import Piece
from engine.kernels.lines import Lines

_RAW_LIMIT = 1 << 20  # raw bytes kept per reject for over-long lines

__all__ = ["line_rejects", "lost_rejects"]


def lost_rejects(failed: list[Piece]) -> list[dict[str, Any]]:
    """One reject row per marker of bytes that could not be read at all (no line, no raw bytes)."""
    rows = []
    for p in failed:
        reason, _, detail = (p.error or "").partition(": ")
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


def line_rejects(lines: Lines, bad: list[tuple[int, str, str]], schema: pa.Schema) -> pa.RecordBatch:
    idx = np.fromiter((i for i, _, _ in bad), dtype=np.int64, count=len(bad))
    piece, line_no = lines.provenance(idx)
    take = pa.array(piece)
    pieces = lines.pieces
    endpoint = pa.array([p.obj.endpoint for p in pieces], pa.string()).take(take)
    variant = pa.array([p.obj.variant for p in pieces], pa.string()).take(take)
    hour = pa.array([p.obj.hour for p in pieces], schema.field("source_hour").type).take(take)
    uri = pa.array([p.obj.uri for p in pieces], pa.string()).take(take)
    reason = pa.array([r for _, r, _ in bad], pa.string())
    detail = pc.utf8_slice_codeunits(pa.array([d for _, _, d in bad], pa.string()), 0, 500)
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
    return pa.RecordBatch.from_arrays(
        [endpoint, variant, hour, uri, pa.array(line_no, pa.int64()), reason, detail, raw], schema=schema
    )
