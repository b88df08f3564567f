"""Fixtures of the kernel benchmarks: one small synth tree per session, cut and decoded the engine's way.

The tree is generated into pytest's tmp folder rather than the ``.data`` cache so the kernels file runs the same
on a fresh clone and never depends on what an earlier end-to-end run left behind.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pytest

from engine.io.fetch import Piece, _split_lines, group_units
from engine.io.listing import list_capture_objects
from engine.io.storage import open_location
from engine.kernels.envelope import decode_unit
from engine.kernels.result import UnitResult
from engine.options import RealtimeOptions
from engine.synth import SynthOptions, synth

KERNEL_BYTES = 6_000_000  # small enough for the whole file to run in seconds, large enough for a full unit


@dataclass(frozen=True)
class KernelData:
    """What the kernels read: the tree, its decode units (as the engine cuts them) and the decoded rows."""

    capture_root: Path
    capture_bytes: int
    options: RealtimeOptions
    units: list[list[Piece]]
    decoded: list[UnitResult]

    @property
    def batches(self) -> list[pa.RecordBatch]:
        return [d.rows for d in self.decoded]

    @property
    def rows(self) -> pa.RecordBatch:
        """All decoded rows as one batch, in read order (grouped by endpoint, variant and hour)."""
        return pa.concat_batches(self.batches)


@pytest.fixture(scope="session")
def kernel_data(tmp_path_factory: pytest.TempPathFactory) -> KernelData:
    root = tmp_path_factory.mktemp("kernels")
    summary = synth(
        str(root / "tree"), SynthOptions(target_bytes=KERNEL_BYTES, hours=6, endpoints=3, variants=2, seed=1)
    )
    capture_root = root / "tree" / "capture"
    options = RealtimeOptions()
    objects = list_capture_objects(open_location(str(capture_root)), hours=None)
    # Read whole objects and cut them like engine.io.fetch.read_object does for objects below 4 units.
    pieces = [p for o in objects for p in _split_lines(o, Path(o.path).read_bytes(), options.unit_bytes)]
    units = list(group_units(pieces, options.unit_bytes))
    decoded = [decode_unit(u, max_line_bytes=options.max_line_bytes) for u in units]
    assert sum(d.rows.num_rows for d in decoded) == summary.events, "the kernel input must decode cleanly"
    return KernelData(capture_root, summary.capture_bytes, options, units, decoded)
