"""Sink: hive-partitioned Parquet part files under a run's `_temporary/` folder, one open file per partition.

The commit protocol that turns them into the dataset is in `engine.sinks.commit`.
"""

from __future__ import annotations

import copy
import logging
import os
from collections import OrderedDict, deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from engine import interrupts
from engine.io.storage import Location, translate_errors
from engine.kernels.partition import PartitionKey, partition_path, split_by_hour
from engine.tables import TableSpec

__all__ = ["SUCCESS", "TEMPORARY", "DatasetWriter", "parquet_writer", "widen_schemas"]

logger = logging.getLogger(__name__)

TEMPORARY = "_temporary"
SUCCESS = "_SUCCESS"
# Low-cardinality columns; payloads and ids are unique per row, where dictionaries only cost time.
_DICTIONARY = {
    "event_version",
    "input_content_type",
    "input_encoding",
    "output_content_type",
    "output_encoding",
    "source_file",
    "manifest_file",
    "input_file",
    "output_file",
    "reason",
    "detail",
    "label_encoding",
    "label_file",
}
_NO_STATISTICS = {"input_data", "output_data", "custom_attributes", "raw", "detail"}


def parquet_writer(f: Any, schema: pa.Schema, compression: str | None) -> pq.ParquetWriter:
    return pq.ParquetWriter(
        f,
        schema,
        compression=compression,
        use_dictionary=[c for c in schema.names if c in _DICTIONARY],
        # Min/max of payload strings cost time and prune nothing; ids and times do prune.
        write_statistics=[c for c in schema.names if c not in _NO_STATISTICS],
    )


@dataclass
class _Open:
    writer: pq.ParquetWriter
    handle: Any
    path: str
    last: Future[None] | None = None  # its latest row group in the write pool (row groups go in order)


def _default_write_threads() -> int:
    return max(1, min(4, os.cpu_count() or 1))


@dataclass
class _Partition:
    rel: str  # relative directory under DEST
    hour: int | None = None  # hours since the epoch of its time column (None: no time)
    schema: pa.Schema | None = None  # of its current part file
    rows: int = 0
    files: list[str] = field(default_factory=list)  # temporary paths
    buffer: list[pa.RecordBatch] = field(default_factory=list)
    buffered: int = 0
    parts: int = 0


def widen_schemas(old: pa.Schema, new: pa.Schema) -> pa.Schema:
    """The narrowest schema holding both: new columns added, numbers widened, any other type conflict text.

    A payload field that is a number in one unit and a string in a later one (no spec fixes its type) makes
    its column text for the partition, as a field with mixed types inside one unit does; never a failed run.
    """
    try:
        return pa.unify_schemas([old, new], promote_options="permissive")
    except (pa.ArrowTypeError, pa.ArrowInvalid):
        pass
    fields = {f.name: f for f in old}
    for f in new:
        have = fields.get(f.name)
        if have is None:
            fields[f.name] = f
            continue
        try:
            fields[f.name] = pa.unify_schemas([pa.schema([have]), pa.schema([f])], promote_options="permissive").field(
                0
            )
        except (pa.ArrowTypeError, pa.ArrowInvalid):
            logger.warning(
                "column %r is %s in some rows and %s in others; its column is text", f.name, have.type, f.type
            )
            fields[f.name] = pa.field(f.name, pa.string())
    return pa.schema(list(fields.values()))


def _cast_column(col: pa.Array, target: pa.DataType) -> pa.Array:
    """Cast for schema widening: a value widened to text is its Arrow cast (a number as its shortest
    round-trip text); a nested value Arrow cannot cast (a list) becomes its JSON text."""
    if col.type == target:
        return col
    try:
        return col.cast(target)
    except (pa.ArrowNotImplementedError, pa.ArrowInvalid):
        if not pa.types.is_string(target):
            raise
        # Rare (a list in one unit, a scalar in another): one value at a time.
        return pa.array([None if v is None else orjson.dumps(v).decode() for v in col.to_pylist()], pa.string())


class DatasetWriter:
    """Buffers record batches per partition and writes them as row groups of bounded size.

    Row groups are encoded and written on a small thread pool (`write_threads`; pyarrow releases the GIL
    while it encodes and compresses), so the caller goes on partitioning and decoding meanwhile; one file's
    row groups are written one after the other, in order. At most `2 * write_threads` row groups wait in the
    pool (the caller waits for the oldest beyond that), so memory stays bounded. `write_threads=0` writes in
    the caller's thread. Errors of a pool write are raised by the next `write` or `close`.
    """

    def __init__(
        self,
        loc: Location,
        *,
        spec: TableSpec,
        time_column: str,
        dynamic: bool = False,
        run_id: str,
        prefix: str = "",
        compression: str = "zstd",
        row_group_bytes: int = 64 * 2**20,
        max_open: int = 64,
        write_threads: int | None = None,
    ) -> None:
        self.loc = loc
        self.spec = spec
        self.time_column = time_column
        self.run_id = run_id
        self.prefix = prefix
        self.compression = None if compression == "none" else compression
        self.row_group_bytes = row_group_bytes
        self.budget = 2 * row_group_bytes
        self.max_open = max_open
        # Fixed: every file has the table's schema. Dynamic (decoded payloads, whose columns come from
        # the data): each partition takes the schema of its first rows, and rows with new columns start
        # a new part file with the widened schema (readers merge them: union_by_name, missing_columns).
        self.schema = spec.file_schema
        self.dynamic = dynamic
        self.drop = [c for c in spec.partition_by if c in spec.schema.names]
        self.partitions: dict[PartitionKey, _Partition] = {}
        self.open: OrderedDict[PartitionKey, _Open] = OrderedDict()
        self.buffered = 0
        self.rows = 0
        # Per temporary file: rows and schema, for the dataset manifest and the commit's schema unification.
        self.file_rows: dict[str, int] = {}
        self.file_schemas: dict[str, pa.Schema] = {}
        self.write_threads = _default_write_threads() if write_threads is None else write_threads
        self._pool: ThreadPoolExecutor | None = None  # started by the first row group written
        self._inflight: deque[Future[None]] = deque()

    def touch(self, key: PartitionKey) -> None:
        """Mark a partition as part of this run even if it gets no rows (it will be replaced by nothing)."""
        self._partition(key)

    def _partition(self, key: PartitionKey) -> _Partition:
        part = self.partitions.get(key)
        if part is None:
            path = partition_path(key, with_names="endpoint" in self.spec.partition_by)
            rel = "/".join(p for p in (self.prefix, path) if p)
            part = self.partitions[key] = _Partition(rel=rel, hour=key[2])
        return part

    def time_ranges(self, start: datetime | None, end: datetime | None) -> dict[str, tuple[int, int] | None]:
        """Per partition, the part of the window [start, end) it covers, in epoch milliseconds.

        None means the whole partition (or a partition without time); an empty range (lo >= hi) means
        the window does not reach it at all.
        """
        out: dict[str, tuple[int, int] | None] = {}
        for part in self.partitions.values():
            if part.hour is None:
                out[part.rel] = None
                continue
            lo, hi = part.hour * 3_600_000, (part.hour + 1) * 3_600_000
            if start is not None:
                lo = max(lo, int(start.timestamp() * 1000))
            if end is not None:
                hi = min(hi, int(end.timestamp() * 1000))
            out[part.rel] = None if (lo, hi) == (part.hour * 3_600_000, (part.hour + 1) * 3_600_000) else (lo, hi)
        return out

    def write(self, batch: pa.RecordBatch) -> None:
        # Between batches is a safe point to stop at (see engine.interrupts); inside library calls is not.
        interrupts.check()
        for key, rows in split_by_hour(batch, self.time_column):
            part = self._partition(key)
            rows = self._conform(key, part, rows)
            part.buffer.append(rows)
            part.buffered += rows.nbytes
            part.rows += rows.num_rows
            self.buffered += rows.nbytes
            self.rows += rows.num_rows
            if part.buffered >= self.row_group_bytes:
                self._flush(key)
        while self.buffered > self.budget:
            biggest = max(self.partitions, key=lambda k: self.partitions[k].buffered)
            self._flush(biggest)
        while self._inflight and self._inflight[0].done():
            self._inflight.popleft().result()  # a failed pool write stops the run at the next batch

    def _conform(self, key: PartitionKey, part: _Partition, rows: pa.RecordBatch) -> pa.RecordBatch:
        if not self.dynamic:
            part.schema = self.schema
            return rows.select(self.schema.names)
        rows = rows.drop_columns([c for c in self.drop if c in rows.schema.names])
        if part.schema is None:
            part.schema = rows.schema
        elif rows.schema != part.schema:
            if not set(rows.schema.names) <= set(part.schema.names) or any(
                part.schema.field(f.name).type != f.type for f in rows.schema
            ):
                widened = widen_schemas(part.schema, rows.schema)
                logger.info("columns of %s widen to %s", part.rel, widened.names)
                self._flush(key)
                self._close(key)
                part.schema = widened
            if part.buffer and part.buffer[0].schema != part.schema:
                part.buffer = [self._cast(b, part.schema) for b in part.buffer]
            rows = self._cast(rows, part.schema)
        return rows

    @staticmethod
    def _cast(rows: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
        cols = [
            _cast_column(rows.column(f.name), f.type)
            if f.name in rows.schema.names
            else pa.nulls(rows.num_rows, f.type)
            for f in schema
        ]
        return pa.RecordBatch.from_arrays(cols, schema=schema)

    def _flush(self, key: PartitionKey) -> None:
        part = self.partitions[key]
        if not part.buffer:
            return
        table = pa.Table.from_batches(part.buffer, schema=part.schema)
        self.buffered -= part.buffered
        part.buffer, part.buffered = [], 0
        handle = self.open.get(key)
        if handle is None:
            handle = self._open(key, part)
        else:
            self.open.move_to_end(key)
        self.file_rows[handle.path] = self.file_rows.get(handle.path, 0) + table.num_rows
        if self.write_threads <= 0:
            _write_group(self.loc, handle, table, None)
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=self.write_threads, thread_name_prefix="parquet-write")
        while len(self._inflight) >= 2 * self.write_threads:
            self._inflight.popleft().result()  # back-pressure; raises a failed write here
        # The pool's queue is first in, first out: when this task starts, the file's previous row group
        # has started already on another thread, so waiting for it cannot deadlock the pool.
        handle.last = self._pool.submit(_write_group, self.loc, handle, table, handle.last)
        self._inflight.append(handle.last)

    def _settle(self, handle: _Open) -> None:
        """Wait for `handle`'s row groups in the pool; raises the error of a failed one."""
        if handle.last is not None:
            handle.last.result()
            handle.last = None
        while self._inflight and self._inflight[0].done():
            self._inflight.popleft().result()

    def _open(self, key: PartitionKey, part: _Partition) -> _Open:
        while len(self.open) >= self.max_open:
            # Least recently written partition: its next rows go to a new part file.
            self._close(next(iter(self.open)))
        name = f"part-{self.run_id}-{part.parts:05d}.parquet"
        part.parts += 1
        path = self.loc.join(TEMPORARY, self.run_id, part.rel, name)
        schema = part.schema or self.schema
        fs = self.loc.fs
        with translate_errors(self.loc.uri(path), sink=True):
            if self.loc.is_local:
                fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
                # Arrow's own file: a Python file object takes the GIL for every page the pool writes, and
                # the pool's writes then wait on the threads decoding (reading, for the batch job).
                f: Any = pa.OSFile(path, "wb")
            else:
                f = fs.open(path, "wb")
            writer = parquet_writer(f, schema, self.compression)
        part.files.append(path)
        self.file_schemas[path] = schema
        self.file_rows.setdefault(path, 0)
        handle = self.open[key] = _Open(writer, f, path)
        return handle

    def _close(self, key: PartitionKey) -> None:
        handle = self.open.pop(key, None)
        if handle is None:
            return
        self._settle(handle)
        with translate_errors(self.loc.uri(handle.path), sink=True):
            handle.writer.close()
            handle.handle.close()

    def abort(self) -> None:
        """Drop open files without finishing them (after a failure; nothing of them is committed).

        An object-store upload is aborted rather than completed, and the writer is marked closed so
        that garbage collection does not try to write a footer to a dead connection. Row groups waiting
        in the pool are dropped; one being written is waited for (a file cannot be dropped under it).
        """
        self._stop_pool()
        for key in list(self.open):
            handle = self.open.pop(key)
            handle.writer.is_open = False
            try:
                if self.loc.is_local:
                    handle.handle.close()
                else:
                    try:
                        handle.handle.discard()
                    finally:
                        handle.handle.closed = True
            except Exception:  # best effort: the store may be the thing that failed
                logger.debug("could not discard %s", self.loc.uri(handle.path), exc_info=True)

    def close(self) -> dict[str, tuple[int, list[str]]]:
        """Flush and close everything; returns {partition dir: (rows, temporary files)}."""
        for key in list(self.partitions):
            self._flush(key)
        for key in list(self.open):
            self._close(key)
        self._stop_pool()
        out: dict[str, tuple[int, list[str]]] = {}
        for p in self.partitions.values():  # keys of different shape may name one folder (batch: no endpoint)
            rows, files = out.get(p.rel, (0, []))
            out[p.rel] = (rows + p.rows, files + p.files)
        return out

    def _stop_pool(self) -> None:
        """Cancel what has not started, wait for what has (errors are dropped here: close settled every file)."""
        pool, self._pool = self._pool, None
        self._inflight.clear()
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


def _write_group(loc: Location, handle: _Open, table: pa.Table, after: Future[None] | None) -> None:
    """One row group into `handle`'s file, once the row group before it (`after`) is written."""
    if after is not None and (failed := after.exception()) is not None:
        # The file is broken: this row group fails with the first error. A copy, not the error itself:
        # re-raising one exception object down a chain of row groups would grow its traceback each time.
        raise copy.copy(failed).with_traceback(None) from None
    with translate_errors(loc.uri(handle.path), sink=True):
        handle.writer.write_table(table, row_group_size=max(table.num_rows, 1))
