"""Writing the generated objects: one object at a time through fsspec, ground-truth objects flushed by size."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Final

import fsspec
import numpy as np
from fsspec.implementations.local import LocalFileSystem

logger = logging.getLogger(__name__)

_LABEL_FILE_LINES: Final = 20_000  # flush a ground-truth object at this size to keep memory bounded


class _Writer:
    """Writes whole objects under a base path, creating local directories on demand."""

    def __init__(self, fs: fsspec.AbstractFileSystem, base: str) -> None:
        self.fs = fs
        self.base = base
        self.local = isinstance(fs, LocalFileSystem)
        self.made: set[str] = set()

    def write(self, key: str, data: bytes) -> None:
        """Stores ``data`` as ``{base}/{key}`` in one request."""
        path = f"{self.base}/{key}"
        if self.local:
            parent = path.rsplit("/", 1)[0]
            if parent not in self.made:
                self.fs.makedirs(parent, exist_ok=True)
                self.made.add(parent)
        self.fs.pipe_file(path, data)


class _LabelSink:
    """Buffers ground-truth lines per collection hour and writes them as bounded-size objects."""

    def __init__(
        self, writer: _Writer, rng: np.random.Generator, start: datetime, folder: str = "ground-truth"
    ) -> None:
        self.writer = writer
        self.folder = folder
        self.rng = rng
        self.start = start
        self.pending: dict[int, list[str]] = {}
        self.sequence: dict[int, int] = {}
        self.lines = 0
        self.files = 0

    def add(self, inference_hour: int, labels: list[tuple[int, str]]) -> None:
        """Queues labels of events from ``inference_hour``, each collected ``delay`` hours later."""
        for delay, line in labels:
            bucket = self.pending.setdefault(inference_hour + delay, [])
            bucket.append(line)
            if len(bucket) >= _LABEL_FILE_LINES:
                self._write(inference_hour + delay)

    def flush(self, *, through_hour: int | None) -> None:
        """Writes every pending collection hour up to ``through_hour`` (all of them if None)."""
        for hour in sorted(self.pending):
            if through_hour is None or hour <= through_hour:
                self._write(hour)

    def _write(self, hour: int) -> None:
        bucket = self.pending.pop(hour)
        seq = self.sequence.get(hour, 0) + 1
        self.sequence[hour] = seq
        minute, second = (int(v) for v in self.rng.integers(0, 60, size=2))
        when = self.start + timedelta(hours=hour)
        bucket.append("")
        data = "\n".join(bucket).encode()
        self.writer.write(f"{self.folder}/{when:%Y/%m/%d/%H}/{minute:02d}{second:02d}-{seq}.jsonl", data)
        self.lines += len(bucket) - 1
        self.files += 1
