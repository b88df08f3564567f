"""The few names `engine.monitor` takes from the rest of the engine, in one place.

Everything the monitoring package needs of the decoding, merging, storage and time helpers is imported here
and nowhere else, so a move of those modules is re-pointed in this file alone.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Literal

import pyarrow as pa

from engine.jobs.batch import iter_batch
from engine.jobs.merge import iter_merge
from engine.options import BatchOptions, MergeOptions, RealtimeOptions, parse_time
from engine.jobs.realtime import iter_capture
from engine.tables import table_spec
from engine.io.storage import open_location, translate_errors
from engine.times import in_window

__all__ = [
    "capture_batches",
    "in_window",
    "open_location",
    "parse_time",
    "table_spec",
    "translate_errors",
]


def capture_batches(
    source: str,
    kind: Literal["capture", "batch"],
    start: datetime | None,
    end: datetime | None,
    storage_options: dict[str, object],
    ground_truth: str | None,
) -> Iterator[pa.RecordBatch]:
    """Decoded payload records of raw capture (real-time or batch), merged with `ground_truth` when given."""
    if ground_truth is not None:
        options = MergeOptions(start=start, end=end, storage_options=storage_options, decode=True)
        if kind == "batch":
            return iter_merge(ground_truth=ground_truth, batch=source, options=options)
        return iter_merge(ground_truth=ground_truth, captures=source, options=options)
    if kind == "batch":
        return iter_batch(
            source, options=BatchOptions(start=start, end=end, storage_options=storage_options, decode=True)
        )
    return iter_capture(
        source, options=RealtimeOptions(start=start, end=end, storage_options=storage_options, decode=True)
    )
