"""Bounded-memory state of a merge: labels kept in memory or hash-partitioned into spilled Arrow IPC buckets
(`LabelStore`, `BucketSpill`), and duplicate labels counted over the whole window (`DuplicateCounter`)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc as ipc

from engine.kernels.join import _COMPACT, _GOLDEN, LabelIndex, key_hash

__all__ = ["BucketSpill", "DuplicateCounter", "LabelStore"]

logger = logging.getLogger(__name__)


class BucketSpill:
    """Record batches hash-partitioned into buckets of local Arrow IPC stream files.

    A bucket is a list of segments; a batch of another schema (decoded payload columns vary) starts a new one.
    """

    def __init__(self, directory: Path, name: str, buckets: int) -> None:
        self.directory = directory
        self.name = name
        self.buckets = buckets
        self.segments: list[list[Path]] = [[] for _ in range(buckets)]
        self.open: list[tuple[pa.Schema, ipc.RecordBatchStreamWriter, Any] | None] = [None] * buckets
        self.bytes = 0
        self.rows = 0
        self._options = ipc.IpcWriteOptions(compression="lz4")

    def write(self, batch: pa.RecordBatch, hashes: np.ndarray) -> None:
        """Append the rows of `batch` to the buckets of their key `hashes`."""
        bucket = (hashes % np.uint64(self.buckets)).astype(np.int64)
        order = np.argsort(bucket, kind="stable")
        counts = np.bincount(bucket, minlength=self.buckets)
        ordered = batch.take(pa.array(order))
        start = 0
        for k, n in enumerate(counts.tolist()):
            if n:
                self._append(k, ordered.slice(start, n))
                start += n
        self.rows += batch.num_rows

    def _append(self, k: int, rows: pa.RecordBatch) -> None:
        current = self.open[k]
        if current is None or current[0] != rows.schema:
            if current is not None:
                current[1].close()
                current[2].close()
            path = self.directory / f"{self.name}-{k:04d}-{len(self.segments[k]):04d}.arrows"
            sink = pa.OSFile(str(path), "wb")
            current = (rows.schema, ipc.new_stream(sink, rows.schema, options=self._options), sink)
            self.open[k] = current
            self.segments[k].append(path)
        current[1].write_batch(rows)
        self.bytes += rows.nbytes

    def close(self) -> None:
        for k, current in enumerate(self.open):
            if current is not None:
                current[1].close()
                current[2].close()
                self.open[k] = None

    def read(self, k: int) -> Iterator[pa.RecordBatch]:
        """The batches of bucket `k`, in the order written; each segment file is removed once read."""
        self.close()
        for path in self.segments[k]:
            with pa.memory_map(str(path)) as source:
                yield from ipc.open_stream(source)
            path.unlink()
        self.segments[k] = []


class LabelStore:
    """Labels in read order in a compact form (file URIs become ids), in memory or hash-partitioned to spill."""

    def __init__(self, buckets: int, directory: Path) -> None:
        self.buckets = buckets
        self._files: dict[str, int] = {}
        self._columns: dict[str, list[pa.Array]] = {name: [] for name in _COMPACT.names}
        self._spill = BucketSpill(directory, "labels", buckets) if buckets > 1 else None
        self.labels = 0

    @property
    def files(self) -> pa.Array:
        """The label objects' URIs, by file id."""
        return pa.array(list(self._files), pa.string())

    def add(self, batch: pa.RecordBatch) -> None:
        """Add a batch of labels (`iter_labels` rows, in read order: later batches supersede earlier ones)."""
        files = batch.column("label_file")
        if not isinstance(files, pa.DictionaryArray):
            files = pc.dictionary_encode(files)
        # A loop per distinct object of the batch, not per row.
        ids = np.asarray([self._files.setdefault(u, len(self._files)) for u in files.dictionary.to_pylist()], np.int32)
        keys = batch.column("event_id")
        hashes = key_hash(keys)
        compact = pa.RecordBatch.from_arrays(
            [
                pa.array(hashes, pa.uint64()),
                keys,
                batch.column("label_data"),
                batch.column("label_encoding"),
                batch.column("label_hour"),
                pa.array(ids[np.asarray(files.indices.to_numpy(zero_copy_only=False), dtype=np.int64)], pa.int32()),
                batch.column("label_line"),
            ],
            schema=_COMPACT,
        )
        self.labels += batch.num_rows
        if self._spill is None:
            for name, column in zip(compact.schema.names, compact.columns, strict=True):
                self._columns[name].append(column)
        else:
            self._spill.write(compact, hashes)

    def index(self, k: int) -> LabelIndex:
        """The index of bucket `k` (its labels leave the store)."""
        if self._spill is None:
            columns, self._columns = self._columns, {name: [] for name in _COMPACT.names}
        else:
            columns = {name: [] for name in _COMPACT.names}
            for batch in self._spill.read(k):
                for name, column in zip(batch.schema.names, batch.columns, strict=True):
                    columns[name].append(column)
        return LabelIndex(columns, self.files)

    def close(self) -> None:
        if self._spill is not None:
            self._spill.close()


class DuplicateCounter:
    """Counts rows whose key was seen before, by 64-bit hash, in bounded memory.

    Hashes stay in memory up to `limit`; beyond that they are partitioned by their top bits into files under
    `directory` and counted one partition at a time.
    """

    def __init__(self, directory: Path, *, limit: int = 1 << 22, parts: int = 64) -> None:
        self.directory = directory
        self.limit = limit
        self.parts = parts
        self._shift = np.uint64(64 - int(np.log2(parts)))
        self._held: list[np.ndarray] = []
        self._count = 0
        self._spilled = False

    def add(self, hashes: np.ndarray, record_index: pa.Array | None = None) -> None:
        """Add the key hashes of a batch; rows of one event differ by `record_index` (decoded records)."""
        h = hashes
        if record_index is not None:
            ri = np.asarray(record_index.cast(pa.int64()).fill_null(0).to_numpy(), dtype=np.int64).astype(np.uint64)
            h = hashes + ri * _GOLDEN  # wraps modulo 2**64, as intended
        self._held.append(h)
        self._count += len(h)
        if self._count > self.limit:
            self._spill()

    def _spill(self) -> None:
        h = np.concatenate(self._held)
        self._held, self._count = [], 0
        part = (h >> self._shift).astype(np.int64)
        order = np.argsort(part, kind="stable")
        bounds = np.searchsorted(part[order], np.arange(self.parts + 1))
        for p in range(self.parts):
            lo, hi = int(bounds[p]), int(bounds[p + 1])
            if hi > lo:
                with open(self.directory / f"keys-{p:03d}.u64", "ab") as f:
                    h[order[lo:hi]].tofile(f)
        self._spilled = True

    def duplicates(self) -> int:
        if not self._spilled:
            return _repeats(np.concatenate(self._held) if self._held else np.empty(0, np.uint64))
        self._spill()
        total = 0
        for p in range(self.parts):
            path = self.directory / f"keys-{p:03d}.u64"
            if path.exists():
                total += _repeats(np.fromfile(path, dtype=np.uint64))
                path.unlink()
        return total


def _repeats(h: np.ndarray) -> int:
    """Values equal to an earlier one. A sort in place: numpy's hash-based unique is several times slower."""
    h.sort()
    return int(np.count_nonzero(h[1:] == h[:-1]))
