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


def _gunzip(obj: CaptureObject, raw: bytes) -> tuple[bytes, str | None]:
    """Decompress what can be decompressed; report corruption instead of raising."""
    d = zlib.decompressobj(wbits=31)
    out = []
    try:
        out.append(d.decompress(raw))
        while d.unused_data.startswith(_GZIP_MAGIC):  # concatenated gzip members
            rest = d.unused_data
            d = zlib.decompressobj(wbits=31)
            out.append(d.decompress(rest))
        if not d.eof:
            return b"".join(out), "corrupt_gzip: stream ends before the gzip trailer"
    except zlib.error as exc:
        return b"".join(out), f"corrupt_gzip: {exc}"
    return b"".join(out), None


def read_object(loc: Location, obj: CaptureObject, block: int) -> list[Piece]:
    """Fetch one object whole and cut it into pieces."""
    with translate_errors(obj.uri):
        raw = loc.fs.cat_file(obj.path)
    error = None
    if raw[:2] == _GZIP_MAGIC:
        raw, error = _gunzip(obj, raw)
    # Keep only whole lines from a damaged stream; the remainder is the reject.
    if error is not None:
        raw = raw[: raw.rfind(b"\n") + 1]
    pieces = _split_lines(obj, raw, block)
    if error is not None:
        line = pieces[-1].first_line + pieces[-1].lines if pieces else 1
        pieces.append(Piece(obj, b"", line, 0, error))
    return pieces


def stream_object(loc: Location, obj: CaptureObject, block: int) -> Iterator[Piece]:
    """Read a large object in blocks, carrying the partial last line into the next block."""
    with translate_errors(obj.uri):
        f: IO[bytes] = loc.fs.open(obj.path, "rb", block_size=max(block, 5 * 2**20))
    with f:
        head = f.read(2)
        f.seek(0)
        stream: IO[bytes] | gzip.GzipFile = gzip.GzipFile(fileobj=f, mode="rb") if head == _GZIP_MAGIC else f
        carry, line, first = b"", 1, True
        while True:
            try:
                chunk = stream.read(block)
            except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
                yield Piece(obj, b"", line, 0, f"corrupt_gzip: {exc}")
                return
            except OSError as exc:
                with translate_errors(obj.uri):
                    raise exc
            if not chunk:
                break
            data = carry + chunk
            if first and data.startswith(_BOM):
                data = data[len(_BOM) :]
            first = False
            cut = data.rfind(b"\n") + 1
            carry = data[cut:]
            if cut:
                count = data.count(b"\n", 0, cut)
                yield Piece(obj, data[:cut], line, count)
                line += count
        if carry:
            yield Piece(obj, carry + b"\n", line, carry.count(b"\n") + 1)


def iter_pieces(loc: Location, objects: list[CaptureObject], *, block: int, concurrency: int) -> Iterator[Piece]:
    """Pieces of every object, in object order; small objects fetched concurrently."""
    large = 4 * block

    def fetch(obj: CaptureObject) -> list[Piece]:
        return [] if obj.size > large else read_object(loc, obj, block)

    fetched = ordered_map(fetch, objects, workers=concurrency, lookahead=2 * concurrency)
    for obj, pieces in zip(objects, fetched, strict=False):
        if obj.size > large:
            yield from stream_object(loc, obj, block)
        else:
            yield from pieces


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
