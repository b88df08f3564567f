"""The one result type of the line-decoding kernels (capture envelopes, ground truth): rows, rejects, counts."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import pyarrow as pa

from engine.kernels.rejects import plain_batches
from engine.report import Counts

__all__ = ["UnitResult"]


@dataclass
class UnitResult:
    """The result of one unit: its rows, its rejects, and the counts the run report adds up (`counts`)."""

    rows: pa.RecordBatch
    rejects: pa.Table  # compact (see engine.kernels.rejects); `reject_batches` gives the _rejects schema
    records: int = 0
    blank_lines: int = 0
    out_of_window: int = 0
    bytes: int = 0
    fallback: bool = False
    reasons: Counter[str] = field(default_factory=Counter)
    # Set by payload decoding: events kept, and their records (one batch per endpoint and variant).
    events: int | None = None
    records_out: list[pa.RecordBatch] | None = None

    def outputs(self) -> list[pa.RecordBatch]:
        """What the unit writes: its payload records when they were decoded, else its envelope rows."""
        return self.records_out if self.records_out is not None else [self.rows]

    def reject_batches(self) -> Iterator[pa.RecordBatch]:
        """The unit's rejects in the ``_rejects`` schema, a bounded slice at a time."""
        return plain_batches(self.rejects)

    def counts(self) -> Counts:
        return Counts(
            records=self.records,
            kept=self.rows.num_rows if self.events is None else self.events,
            rejected=self.rejects.num_rows,
            out_of_window=self.out_of_window,
            blank_lines=self.blank_lines,
            bytes=self.bytes,
            fallback_units=int(self.fallback),
            reasons=self.reasons,
        )
