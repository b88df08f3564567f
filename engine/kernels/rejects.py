"""Reject rows built column by column from a unit's lines: provenance by numpy, raw bytes as Arrow slices of the
unit's buffer, and one row per stretch of bytes that could not be read.

A unit of a million tiny bad lines is a million rejects, so a unit's rejects are kept compact while they travel
from the decoding worker to the sink: the string columns that repeat (endpoint, variant, file, reason, detail) are
dictionary-encoded, which makes a reject cost about 40 bytes instead of the 190 of its plain row, and
`plain_batches` gives them back in the ``_rejects`` schema a bounded slice at a time, as the sink writes them.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from engine.io.fetch import Piece
from engine.kernels.lines import Lines
from engine.tables import rejects_schema

_RAW_LIMIT = 1 << 20  # raw bytes kept per reject for over-long lines
_SLICE_ROWS = 65_536  # rows per plain batch handed to a sink
_DICTIONARY = ("endpoint", "variant", "source_file", "reason", "detail")

__all__ = [
    "LineReject",
    "Rejected",
    "compact",
    "compact_schema",
    "concat_rejects",
    "line_rejects",
    "lost_rejects",
    "plain_batches",
    "unit_rejects",
]

# (line index in the unit, reason, detail[, raw bytes to keep instead of the line: one element of an array line])
LineReject = tuple[int, str, str] | tuple[int, str, str, bytes | None]


@dataclass(frozen=True)
class Rejected:
    """Many lines of a unit rejected for one reason with one detail (found by a vectorized check)."""

    lines: np.ndarray  # line indices in the unit
    reason: str
    detail: str


def compact_schema() -> pa.Schema:
    """The ``_rejects`` schema with its repeating string columns dictionary-encoded."""
    schema = rejects_schema()
    for name in _DICTIONARY:
        i = schema.get_field_index(name)
        schema = schema.set(i, schema.field(i).with_type(pa.dictionary(pa.int32(), pa.string())))
    return schema


def compact(batch: pa.RecordBatch) -> pa.RecordBatch:
    """A plain (or already compact) reject batch in the compact schema."""
    schema = compact_schema()
    if batch.schema.equals(schema):
        return batch
    cols = [
        batch.column(f.name).dictionary_encode()
        if f.name in _DICTIONARY and not pa.types.is_dictionary(batch.schema.field(f.name).type)
        else batch.column(f.name)
        for f in schema
    ]
    return pa.RecordBatch.from_arrays([c.cast(f.type) for c, f in zip(cols, schema, strict=True)], schema=schema)


def concat_rejects(parts: Sequence[pa.RecordBatch | pa.Table]) -> pa.Table:
    """Reject batches or tables, plain or compact, as one compact table (its chunks are not copied)."""
    batches = [compact(b) for p in parts for b in (p.to_batches() if isinstance(p, pa.Table) else [p]) if b.num_rows]
    return pa.Table.from_batches(batches, schema=compact_schema())


def plain_batches(rejects: pa.RecordBatch | pa.Table, rows: int = _SLICE_ROWS) -> Iterator[pa.RecordBatch]:
    """The rejects in the ``_rejects`` schema, at most `rows` at a time (memory: one slice, not the unit)."""
    schema = rejects_schema()
    table = rejects if isinstance(rejects, pa.Table) else pa.Table.from_batches([rejects])
    for part in table.to_batches(max_chunksize=rows):
        if part.num_rows:
            yield part if part.schema.equals(schema) else part.cast(schema)


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


def unit_rejects(
    lines: Lines, bad: Sequence[LineReject], failed: list[Piece], bulk: Sequence[Rejected] = ()
) -> pa.Table:
    """The rejects of a unit as a compact table: its rejected lines in line order, then what could not be read.

    `bad` are rejects one by one (each with its own message); `bulk` are groups of lines sharing a reason and
    a detail, found by vectorized checks, which cost no Python object per line.
    """
    batches = []
    if bad or any(len(b.lines) for b in bulk):
        batches.append(line_rejects(lines, bad, bulk))
    if failed:
        batches.append(pa.RecordBatch.from_pylist(lost_rejects(failed), schema=rejects_schema()))
    return concat_rejects(batches)


def _texts(one: list[str], bulk: Sequence[Rejected], field: str, order: np.ndarray, limit: int = 0) -> pa.Array:
    """A dictionary column in line order: one value per reject of `one`, then one per line of each bulk group."""
    values = pa.array(one + [getattr(b, field) for b in bulk], pa.string())
    if limit:
        values = pc.utf8_slice_codeunits(values, 0, limit)
    counts = np.asarray([1] * len(one) + [len(b.lines) for b in bulk], dtype=np.int64)
    which = np.repeat(np.arange(len(counts), dtype=np.int32), counts)[order]
    encoded = values.dictionary_encode()  # nulls stay in the indices: concatenation cannot unify null values
    return pa.DictionaryArray.from_arrays(encoded.indices.take(pa.array(which)), encoded.dictionary)


def line_rejects(lines: Lines, bad: Sequence[LineReject], bulk: Sequence[Rejected] = ()) -> pa.RecordBatch:
    """Compact rejects of lines of the unit, in line order: (index, reason, detail[, raw bytes to keep instead])."""
    schema = compact_schema()
    idx = np.concatenate(
        [np.fromiter((b[0] for b in bad), dtype=np.int64, count=len(bad))]
        + [np.asarray(b.lines, dtype=np.int64) for b in bulk]
    )
    order = np.argsort(idx, kind="stable")
    idx = idx[order]
    piece, line_no = lines.provenance(idx)
    pieces = lines.pieces
    codes = pa.array(np.asarray(piece, dtype=np.int32), pa.int32())

    def per_piece(values: list[Any], type_: pa.DataType) -> pa.Array:
        encoded = pa.array(values, type_).dictionary_encode()
        return pa.DictionaryArray.from_arrays(encoded.indices.take(codes), encoded.dictionary)

    endpoint = per_piece([p.obj.endpoint for p in pieces], pa.string())
    variant = per_piece([p.obj.variant for p in pieces], pa.string())
    uri = per_piece([p.obj.uri for p in pieces], pa.string())
    hour = pa.array([p.obj.hour for p in pieces], schema.field("source_hour").type).take(codes)
    reason = _texts([b[1] for b in bad], bulk, "reason", order)
    detail = _texts([b[2] for b in bad], bulk, "detail", order, limit=500)
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
    position = np.empty(len(order), dtype=np.int64)
    position[order] = np.arange(len(order))
    own = [(int(position[k]), b[3]) for k, b in enumerate(bad) if len(b) > 3 and b[3] is not None]
    if own:  # elements of an array line keep their own JSON, not the whole line (rare: a loop over those only)
        values = raw.to_pylist()
        for k, value in own:
            values[k] = value[:_RAW_LIMIT]
        raw = pa.array(values, pa.binary())
    return pa.RecordBatch.from_arrays(
        [endpoint, variant, hour, uri, pa.array(line_no, pa.int64()), reason, detail, raw], schema=schema
    )
