"""Fetch: capture objects to newline-aligned pieces of bytes, many objects concurrently, gzip transparently.

A piece holds whole lines of one object, so the decoder can name every line by object and number.
Small objects are fetched whole by a thread pool (object stores are latency-bound); large ones are
streamed in blocks so memory stays bounded by the block size, not by the object.
"""

from __future__ import annotations

import gzip
import logging
import queue
import threading
import zlib
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import IO, Any, TypeVar

from engine.layout import CaptureObject
from engine.storage import Location, translate_errors

__all__ = ["Piece", "group_units", "iter_pieces", "ordered_map", "prefetch"]

logger = logging.getLogger(__name__)

_GZIP_MAGIC = b"\x1f\x8b"
_BOM = b"\xef\xbb\xbf"

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class Piece:
    """Whole lines of one object: `data` ends with a newline; `first_line` is 1-based.

    `error` marks bytes that could not be read (corrupt gzip): the rest of the object is lost and
    becomes one reject.
    """

    obj: CaptureObject
    data: bytes
    first_line: int
    lines: int  # newlines in `data`, i.e. its number of lines
    error: str | None = None


def ordered_map(fn: Callable[[T], R], items: Iterable[T], *, workers: int, lookahead: int) -> Iterator[R]:
    """`map(fn, items)` on a thread pool, in order, with at most `lookahead` items in flight.

    The bound is what keeps memory proportional to the work in flight rather than to the input.
    """
    if workers <= 1:
        yield from map(fn, items)
        return
    with ThreadPoolExecutor(max_workers=workers) as pool:
        pending: deque[Future[R]] = deque()
        try:
            for item in items:
                pending.append(pool.submit(fn, item))
                if len(pending) >= lookahead:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for f in pending:
                f.cancel()


_END = object()


class _Failure:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


def prefetch(items: Iterable[T], depth: int) -> Iterator[T]:
    """Iterate `items` in a background thread, at most `depth` ahead of the consumer.

    For producers that do I/O in the iterating thread (streamed objects): the consumer's thread is
    then free for its own work (decoding, writing) while the next items are read.
    """
    q: queue.Queue[Any] = queue.Queue(maxsize=max(1, depth))
    stop = threading.Event()

    def run() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        q.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(_END)
        except BaseException as exc:  # handed to the consumer, which raises it in its own thread
            q.put(_Failure(exc))

    thread = threading.Thread(target=run, name="engine-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is _END:
                return
            if isinstance(item, _Failure):
                raise item.exc
            yield item
    finally:
        stop.set()
        thread.join(timeout=5)


def _split_lines(obj: CaptureObject, data: bytes, block: int) -> list[Piece]:
    """Cut decoded object bytes into newline-aligned pieces of about `block` bytes."""
    if data.startswith(_BOM):
        # A BOM is not part of the first record; dropping it keeps line numbers unchanged.
        data = data[len(_BOM) :]
    if data and not data.endswith(b"\n"):
        data += b"\n"  # a truncated last line still gets decoded (and rejected) on its own
    pieces: list[Piece] = []
    line, start = 1, 0
    while start < len(data):
        end = len(data) if len(data) - start <= block else data.rfind(b"\n", start, start + block) + 1
        if end <= start:  # one line longer than the block: keep it whole
            end = data.index(b"\n", start + block) + 1
        chunk = data[start:end] if (start, end) != (0, len(data)) else data
        count = chunk.count(b"\n")
        pieces.append(Piece(obj, chunk, line, count))
        line += count
        start = end
    return pieces


def read_object(loc: Location, obj: CaptureObject, block: int) -> list[Piece]:
    """Fetch one object whole and cut it into pieces (a gzip object is decompressed whole: see `_fetch`)."""
    with translate_errors(obj.uri):
        raw = loc.fs.cat_file(obj.path)
    if raw[:2] == _GZIP_MAGIC:
        return list(_chunk_pieces(obj, _gunzip_chunks(raw, block), None))
    return _split_lines(obj, raw, block)


def _gunzip_chunks(raw: bytes, block: int) -> Iterator[bytes]:
    """Decompress `raw` (gzip, possibly several members) at most `block` bytes at a time.

    A 5 MB gzip of zeros is 5 GB of output: decompressing it in one call would hold all of it.
    """
    d = zlib.decompressobj(wbits=31)
    data = raw
    while True:
        out = d.decompress(data, block)
        if out:
            yield out
        data = d.unconsumed_tail
        if d.eof:
            rest = d.unused_data
            if not rest.startswith(_GZIP_MAGIC):  # concatenated gzip members
                return
            d, data = zlib.decompressobj(wbits=31), rest
        elif not data and not out:
            raise EOFError("stream ends before the gzip trailer")


def _chunk_pieces(obj: CaptureObject, chunks: Iterator[bytes], max_line: int | None) -> Iterator[Piece]:
    """Newline-aligned pieces from bounded chunks of an object's bytes, in linear time and bounded memory.

    The partial last line is carried in a growing buffer (appending is amortised linear; re-joining it
    to every chunk was quadratic). A line longer than `max_line` is cut: its first ``max_line + 1``
    bytes go on as one line (which the decoder rejects as ``line_too_long``) and the rest is skipped
    up to its newline, so memory stays bounded by the limit, not by the line.
    """
    carry = bytearray()
    line, first, skipping = 1, True, False
    try:
        for chunk in chunks:
            if first and chunk:
                first = False
                if chunk.startswith(_BOM):
                    # A BOM is not part of the first record; dropping it keeps line numbers unchanged.
                    chunk = chunk[len(_BOM) :]
            pos = 0
            if skipping:
                nl = chunk.find(b"\n")
                if nl == -1:
                    continue
                skipping, pos = False, nl + 1
            last = chunk.rfind(b"\n", pos)
            if last == -1:
                carry += memoryview(chunk)[pos:]
                if max_line is not None and len(carry) > max_line:
                    yield Piece(obj, bytes(carry[: max_line + 1]) + b"\n", line, 1)
                    line += 1
                    carry.clear()
                    skipping = True
                continue
            if carry:
                carry += memoryview(chunk)[pos : last + 1]
                data = bytes(carry)
                carry.clear()
            else:
                data = chunk[pos : last + 1] if (pos, last + 1) != (0, len(chunk)) else chunk
            carry += memoryview(chunk)[last + 1 :]
            count = data.count(b"\n")
            yield Piece(obj, data, line, count)
            line += count
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        # Keep the whole lines before the damage; the unreadable rest of the object is one reject.
        yield Piece(obj, b"", line, 0, f"corrupt_gzip: {exc}")
        return
    if carry and not skipping:
        yield Piece(obj, bytes(carry) + b"\n", line, 1)  # a truncated last line is decoded (and rejected)


def stream_object(loc: Location, obj: CaptureObject, block: int, max_line: int | None = None) -> Iterator[Piece]:
    """Read a large object in blocks, carrying the partial last line into the next block."""
    with translate_errors(obj.uri):
        f: IO[bytes] = loc.fs.open(obj.path, "rb", block_size=max(block, 5 * 2**20))
    with f:
        head = f.read(2)
        f.seek(0)
        stream: IO[bytes] | gzip.GzipFile = gzip.GzipFile(fileobj=f, mode="rb") if head == _GZIP_MAGIC else f

        def chunks() -> Iterator[bytes]:
            while True:
                try:
                    chunk = stream.read(block)
                except (gzip.BadGzipFile, EOFError, zlib.error):
                    raise
                except OSError as exc:
                    with translate_errors(obj.uri):
                        raise exc
                if not chunk:
                    return
                yield chunk

        yield from _chunk_pieces(obj, chunks(), max_line)


def iter_pieces(
    loc: Location, objects: list[CaptureObject], *, block: int, concurrency: int, max_line_bytes: int | None = None
) -> Iterator[Piece]:
    """Pieces of every object, in object order; small objects fetched concurrently.

    Memory per object is bounded by `block` (and `max_line_bytes`) for every shape of input: large
    objects are streamed, a small gzip object is decompressed block by block as its pieces are consumed.
    """
    large = 4 * block

    def fetch(obj: CaptureObject) -> list[Piece] | bytes:
        if obj.size > large:
            return []
        with translate_errors(obj.uri):
            raw = loc.fs.cat_file(obj.path)
        return raw if raw[:2] == _GZIP_MAGIC else _split_lines(obj, raw, block)

    fetched = ordered_map(fetch, objects, workers=concurrency, lookahead=2 * concurrency)
    for obj, got in zip(objects, fetched, strict=False):
        if obj.size > large:
            yield from stream_object(loc, obj, block, max_line_bytes)
        elif isinstance(got, bytes):
            yield from _chunk_pieces(obj, _gunzip_chunks(got, block), max_line_bytes)
        else:
            yield from got


def group_units(pieces: Iterable[Piece], unit_bytes: int) -> Iterator[list[Piece]]:
    """Group pieces into decode units of about `unit_bytes`."""
    unit: list[Piece] = []
    size = 0
    for p in pieces:
        unit.append(p)
        size += len(p.data)
        if size >= unit_bytes:
            yield unit
            unit, size = [], 0
    if unit:
        yield unit
