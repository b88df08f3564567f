"""Splitting one input object into records and mini-batches, as batch transform does (reference 5.1).

``SplitType``: ``None`` sends the whole object in one request; ``Line`` splits after each ``\\n`` (a record
keeps its line ending, as SageMaker's SDK local mode sends it); ``RecordIO`` splits MXNet RecordIO framing
(magic ``0xced7230a``, a length word whose top three bits mark multi-part records, data padded to 4 bytes).
TFRecord is not emulated.

``BatchStrategy``: ``MultiRecord`` puts as many whole records in a request as fit in ``MaxPayloadInMB``;
``SingleRecord`` one record per request (RecordIO: the record's data without its header and padding, which
SageMaker removes only for ``SingleRecord``). A record larger than the payload limit fails its file. Mini-
batches never span objects.

The object is streamed (gzip inflated on the way with ``CompressionType=Gzip``): memory follows the payload
limit, not the object. Line batches are cut with numpy over the newline positions (one step per mini-batch,
not per record).
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO

import numpy as np

__all__ = ["Batch", "RecordError", "iter_batches", "recordio_frame"]

_READ = 2**20
_MAGIC = 0xCED7230A
_MAGIC_BYTES = struct.pack("<I", _MAGIC)
_LENGTH_MASK = (1 << 29) - 1


class RecordError(ValueError):
    """The object cannot be split as asked (a record over the payload limit, broken framing, corrupt gzip)."""


@dataclass(frozen=True)
class Batch:
    """One request's worth of records of one object, as read (line endings or RecordIO framing kept)."""

    first_record: int  # 1-based number of its first record in the object
    data: bytes
    count: int  # records in it (0 only for the one empty batch of an empty object)
    last: bool  # the object's last batch


class _Reader:
    """An object's bytes in chunks, inflated when the job says the input is gzip."""

    def __init__(self, handle: IO[bytes], gzip: bool) -> None:
        self.handle = handle
        self.inflate = zlib.decompressobj(wbits=31) if gzip else None
        self.eof = False

    def read(self) -> bytes:
        while not self.eof:
            raw = self.handle.read(_READ)
            if not raw:
                self.eof = True
                if self.inflate is not None and not self.inflate.eof:
                    raise RecordError("corrupt gzip: the object ends before its gzip trailer")
                return b""
            if self.inflate is None:
                return raw
            try:
                data = self.inflate.decompress(raw)
                while self.inflate.eof and self.inflate.unused_data:  # concatenated gzip members
                    rest = self.inflate.unused_data
                    self.inflate = zlib.decompressobj(wbits=31)
                    data += self.inflate.decompress(rest)
            except zlib.error as exc:
                raise RecordError(f"corrupt gzip ({exc}); is the input really gzip (--compression)?") from None
            if data:
                return data
        return b""


def iter_batches(handle: IO[bytes], *, split: str, strategy: str, max_payload: int, gzip: bool) -> Iterator[Batch]:
    """The mini-batches of one object, in order; the last one has ``last=True``.

    Raises:
        RecordError: a record is larger than `max_payload`, the RecordIO framing is broken, or gzip is corrupt.
    """
    reader = _Reader(handle, gzip)
    if split == "None":
        yield _whole(reader, max_payload)
    elif split == "Line":
        yield from _lines(reader, strategy, max_payload)
    elif split == "RecordIO":
        yield from _recordio(reader, strategy, max_payload)
    else:
        raise RecordError(f"split type {split!r} is not emulated (None, Line or RecordIO)")


def _whole(reader: _Reader, max_payload: int) -> Batch:
    parts, size = [], 0
    while chunk := reader.read():
        size += len(chunk)
        if size > max_payload:
            raise RecordError(
                f"the object is larger than the payload limit ({max_payload:,} bytes) with SplitType=None"
            )
        parts.append(chunk)
    data = b"".join(parts)
    return Batch(1, data, 1 if data else 0, True)


def _too_large(record: int, size: int, max_payload: int) -> RecordError:
    return RecordError(f"record {record} ({size:,} bytes) is larger than the payload limit ({max_payload:,} bytes)")


def _lines(reader: _Reader, strategy: str, max_payload: int) -> Iterator[Batch]:
    buf = b""
    record = 1
    pending: Batch | None = None  # held back one step, so the object's last batch can say so
    while True:
        chunk = reader.read()
        buf += chunk
        if not chunk and not buf:
            break
        nl = np.flatnonzero(np.frombuffer(buf, dtype=np.uint8) == 10)
        ends = nl + 1
        if not chunk and (not len(ends) or ends[-1] != len(buf)):
            ends = np.append(ends, len(buf))  # a last line without its newline is still a record
        if not len(ends):
            if len(buf) > max_payload:
                raise _too_large(record, len(buf), max_payload)
            continue
        sizes = np.diff(np.concatenate([[0], ends]))
        if (sizes > max_payload).any():
            at = int(np.argmax(sizes > max_payload))
            raise _too_large(record + at, int(sizes[at]), max_payload)
        start, i = 0, 0
        while i < len(ends):
            if strategy == "SingleRecord":
                j = i + 1
            else:  # as many whole records as fit
                j = int(np.searchsorted(ends, start + max_payload, side="right"))
                if j == len(ends) and chunk:
                    break  # the next chunk may add records to this batch
            end = int(ends[j - 1])
            if pending is not None:
                yield pending
            pending = Batch(record, buf[start:end], j - i, False)
            record += j - i
            start, i = end, j
        buf = buf[start:]
        if not chunk:
            break
    if pending is None:
        yield Batch(1, b"", 0, True)
    else:
        yield Batch(pending.first_record, pending.data, pending.count, True)


def _recordio(reader: _Reader, strategy: str, max_payload: int) -> Iterator[Batch]:
    buf = b""
    pos = 0
    record = 1
    eof = False
    batch: list[bytes] = []
    batch_size = 0
    batch_first = 1
    pending: Batch | None = None

    def need(n: int) -> bool:
        nonlocal buf, pos, eof
        while len(buf) - pos < n and not eof:
            chunk = reader.read()
            if not chunk:
                eof = True
            buf = buf[pos:] + chunk
            pos = 0
        return len(buf) - pos >= n

    while need(1):
        # One logical record: parts until a full (cflag 0) or an end part (cflag 3).
        framed_start, payload = pos, []
        while True:
            if not need(8):
                raise RecordError(f"RecordIO record {record}: the object ends inside a record header")
            magic, word = struct.unpack_from("<II", buf, pos)
            if magic != _MAGIC:
                raise RecordError(f"RecordIO record {record}: bad magic number at byte {pos} of the current block")
            flag, length = word >> 29, word & _LENGTH_MASK
            padded = length + (-length % 4)
            if padded + 8 > max_payload:
                raise _too_large(record, length, max_payload)
            if not need(8 + padded):
                raise RecordError(f"RecordIO record {record}: the object ends inside a record")
            payload.append(buf[pos + 8 : pos + 8 + length])
            pos += 8 + padded
            if flag in (0, 3):
                break
        framed = buf[framed_start:pos]
        # A record split around the magic number is joined back with it (as MXNet's reader does).
        data = _MAGIC_BYTES.join(payload) if strategy == "SingleRecord" else framed
        if len(data) > max_payload:
            raise _too_large(record, len(data), max_payload)
        if strategy != "SingleRecord" and batch and batch_size + len(data) > max_payload:
            if pending is not None:
                yield pending
            pending = Batch(batch_first, b"".join(batch), len(batch), False)
            batch, batch_size, batch_first = [], 0, record
        batch.append(data)
        batch_size += len(data)
        record += 1
        if strategy == "SingleRecord":
            if pending is not None:
                yield pending
            pending = Batch(batch_first, data, 1, False)
            batch, batch_size, batch_first = [], 0, record
    if batch:
        if pending is not None:
            yield pending
        pending = Batch(batch_first, b"".join(batch), len(batch), False)
    if pending is None:
        yield Batch(1, b"", 0, True)
    else:
        yield Batch(pending.first_record, pending.data, pending.count, True)


def recordio_frame(payloads: list[bytes]) -> bytes:
    """RecordIO framing of whole records (for tests and tools): header, data, padding to 4 bytes."""
    return b"".join(struct.pack("<II", _MAGIC, len(p)) + p + b"\0" * (-len(p) % 4) for p in payloads)
