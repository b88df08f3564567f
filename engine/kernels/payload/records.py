"""What a payload decoder returns for one side (input or output) of a batch of capture events."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

__all__ = ["SideRecords"]


@dataclass
class SideRecords:
    """Records decoded from a column of payload bodies.

    Attributes:
        event: for each record (row of `table`), the index of the body it came from; non-decreasing,
            records of one body in their order in the body.
        table: the typed record columns, one row per record.
        failed: bodies that could not be decoded, by index: (reason, detail). None of their records is
            in `table`; the caller rejects the whole event.
    """

    event: np.ndarray
    table: pa.Table
    failed: dict[int, tuple[str, str]] = field(default_factory=dict)

    @staticmethod
    def empty() -> SideRecords:
        return SideRecords(np.empty(0, dtype=np.int64), pa.table({}))
