"""File formats of part files: how buffered rows become bytes in one file, apart from where files go.

`engine.sinks.dataset.DatasetWriter` buffers rows per partition and hands a format whole buffers; a format
says how much a buffer weighs, opens a `PartFile`, writes tables into it and closes or discards it.

- `Parquet`: one file stays open across flushes, each flush one row group (encoded on the writer's pool).
- `JsonLines`: a column of rendered lines (each ending in a newline), one whole file per flush written in one
  put, as object stores cannot append.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from engine.io.storage import Location, translate_errors

__all__ = ["FileFormat", "JsonLines", "Parquet", "PartFile", "parquet_writer"]

logger = logging.getLogger(__name__)

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


class PartFile(Protocol):
    """One part file being written."""

    def write(self, table: pa.Table) -> None:
        """Append `table` (one flush of a partition's buffer)."""

    def close(self) -> None:
        """Finish the file: after this it is complete on the storage."""

    def discard(self) -> None:
        """Drop the file unfinished (after a failure); may raise, callers treat it as best effort."""


class FileFormat(Protocol):
    """How a partitioned writer's buffers become part files of one format."""

    @property
    def extension(self) -> str:
        """File name suffix, with its dot."""

    @property
    def appends(self) -> bool:
        """True: a file stays open and takes every flush until rolled over; False: one file per flush."""

    def keep(self, rows: pa.RecordBatch) -> pa.RecordBatch:
        """What a partition buffers of `rows` (the columns the file holds)."""

    def measure(self, rows: pa.RecordBatch) -> int:
        """The bytes `rows` (as `keep` returned them) count for in the writer's buffer budget."""

    def open(self, loc: Location, path: str, schema: pa.Schema) -> PartFile:
        """Start the file `path` of `loc`, for rows of `schema`."""


def parquet_writer(f: Any, schema: pa.Schema, compression: str | None) -> pq.ParquetWriter:
    return pq.ParquetWriter(
        f,
        schema,
        compression=compression,
        use_dictionary=[c for c in schema.names if c in _DICTIONARY],
        # Min/max of payload strings cost time and prune nothing; ids and times do prune.
        write_statistics=[c for c in schema.names if c not in _NO_STATISTICS],
    )


def _makedirs(loc: Location, path: str) -> None:
    if loc.is_local:
        loc.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)


@dataclass
class _ParquetFile:
    loc: Location
    path: str
    handle: Any
    writer: pq.ParquetWriter

    def write(self, table: pa.Table) -> None:
        with translate_errors(self.loc.uri(self.path), sink=True):
            self.writer.write_table(table, row_group_size=max(table.num_rows, 1))

    def close(self) -> None:
        with translate_errors(self.loc.uri(self.path), sink=True):
            self.writer.close()
            self.handle.close()

    def discard(self) -> None:
        # An object-store upload is aborted rather than completed, and the writer is marked closed so that
        # garbage collection does not try to write a footer to a dead connection.
        self.writer.is_open = False
        if self.loc.is_local:
            self.handle.close()
            return
        try:
            self.handle.discard()
        finally:
            self.handle.closed = True


@dataclass(frozen=True)
class Parquet:
    """Parquet part files; `compression` as pyarrow names it (None: uncompressed)."""

    compression: str | None = "zstd"
    extension: ClassVar[str] = ".parquet"
    appends: ClassVar[bool] = True

    def keep(self, rows: pa.RecordBatch) -> pa.RecordBatch:
        return rows

    def measure(self, rows: pa.RecordBatch) -> int:
        return int(rows.nbytes)

    def open(self, loc: Location, path: str, schema: pa.Schema) -> PartFile:
        with translate_errors(loc.uri(path), sink=True):
            _makedirs(loc, path)
            # Locally, Arrow's own file: a Python file object takes the GIL for every page the write pool
            # writes, and the pool's writes then wait on the threads decoding (reading, for the batch job).
            f: Any = pa.OSFile(path, "wb") if loc.is_local else loc.fs.open(path, "wb")
            writer = parquet_writer(f, schema, self.compression)
        return _ParquetFile(loc, path, f, writer)


def _text_range(lines: pa.Array) -> tuple[int, int]:
    """First and last offset of a string array (slice) in its data buffer: its values' bytes, concatenated."""
    offsets = np.frombuffer(lines.buffers()[1], dtype=np.int32)[lines.offset : lines.offset + len(lines) + 1]
    return int(offsets[0]), int(offsets[-1])


def _text(lines: pa.Array) -> pa.Buffer:
    """The concatenated values of a string array slice: its data buffer between the first and last offset,
    a view (no copy)."""
    data = lines.buffers()[2]
    if data is None or not len(lines):
        return pa.py_buffer(b"")
    start, end = _text_range(lines)
    return data.slice(start, end - start)


@dataclass
class _JsonLinesFile:
    loc: Location
    path: str
    parts: list[pa.Buffer] = field(default_factory=list)  # views of the buffered lines, joined once at close

    def write(self, table: pa.Table) -> None:
        for lines in table.column(0).chunks:
            self.parts.append(_text(lines))

    def close(self) -> None:
        with translate_errors(self.loc.uri(self.path), sink=True):
            _makedirs(self.loc, self.path)
            self.loc.fs.pipe_file(self.path, b"".join(self.parts))  # one put: no partial object is ever seen
        self.parts = []

    def discard(self) -> None:
        self.parts = []  # nothing is on the storage before `close`


@dataclass(frozen=True)
class JsonLines:
    """JSON Lines part files of the string column `column`, whose values are whole lines (newline included)."""

    column: str = "line"
    extension: ClassVar[str] = ".jsonl"
    appends: ClassVar[bool] = False

    def keep(self, rows: pa.RecordBatch) -> pa.RecordBatch:
        # A copy of just these lines: a slice would keep the whole rendered batch alive while it waits.
        lines = pa.concat_arrays([rows.column(self.column)])
        return pa.RecordBatch.from_arrays([lines], names=[self.column])

    def measure(self, rows: pa.RecordBatch) -> int:
        lines = rows.column(0)
        if not len(lines):
            return 0
        start, end = _text_range(lines)
        return end - start

    def open(self, loc: Location, path: str, schema: pa.Schema) -> PartFile:
        return _JsonLinesFile(loc, path)
