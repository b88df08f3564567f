"""Fetch: capture objects to newline-aligned pieces of bytes, many objects concurrently, gzip transparently.

A piece holds whole lines of one object, so the decoder can name every line by object and number.
Small objects are fetched whole by a thread pool (object stores are latency-bound); large ones are
streamed in blocks so memory stays bounded by the block size, not by the object.
"""

from __future__ import annotations

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


def _split_lines(obj: CaptureObject, data: bytes, block: int, first_line: int = 1) -> list[Piece]:
    """Cut decoded object bytes into newline-aligned pieces of about `block` bytes."""
    if first_line == 1 and data.startswith(_BOM):
        # A BOM is not part of the first record; dropping it keeps line numbers unchanged.
        data = data[len(_BOM) :]
    if data and not data.endswith(b"\n"):
        data += b"\n"  # a truncated last line still gets decoded (and rejected) on its own
    pieces: list[Piece] = []
    line, start = first_line, 0
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


class _Inflater:
    """gzip members in sequence, with bounded output per call and the offset up to which output is verified.

    gzip checks a member's CRC-32 and length only at its trailer, so bytes inflated before a corruption
    is detected may already be wrong. `verified` is the end of the last member whose trailer checked;
    anything after it (an unfinished member, a corrupt one, bytes after the last member that start no
    new member) is not to be trusted, and `error` says why. NUL padding after the last member is allowed,
    as gzip(1) allows it.
    """

    def __init__(self) -> None:
        self._d: Any = zlib.decompressobj(wbits=31)
        self._between = False  # a member ended; the next bytes decide what follows
        self._head = b""  # bytes after a member's end, until they show what they are
        self._trailing = False  # bytes after the gzip stream: passed on as they are, unverified
        self.dead = False  # inflating failed: nothing more can be read
        self.total = 0  # bytes produced
        self.verified = 0
        self.error: str | None = None

    def feed(self, raw: bytes, limit: int) -> Iterator[bytes]:
        """Inflate `raw`, yielding pieces of at most `limit` bytes (a gzip bomb never inflates at once)."""
        data = raw
        while data and not self.dead:
            if self._trailing:
                self.total += len(data)
                yield data
                return
            if self._between:
                data, self._head = self._head + data, b""
                stripped = data.lstrip(b"\0")
                if not stripped:
                    return  # NUL padding so far
                if stripped == _GZIP_MAGIC[:1]:
                    self._head = data  # the next member's magic may continue in the next block
                    return
                if not stripped.startswith(_GZIP_MAGIC) or len(stripped) != len(data):
                    self.error = "corrupt_gzip: bytes after the end of the gzip stream"
                    self._trailing = True
                    continue
                self._d = zlib.decompressobj(wbits=31)
                self._between = False
            try:
                out = self._d.decompress(data, limit)
            except zlib.error as exc:
                self.error = f"corrupt_gzip: {exc}"
                self.dead = True
                return
            if out:
                self.total += len(out)
                yield out
            if self._d.eof:
                self.verified = self.total
                self._between = True
                data = self._d.unused_data
            else:
                data = self._d.unconsumed_tail

    def finish(self) -> None:
        """Called at the end of the compressed bytes: an unfinished member is a truncated stream."""
        if self.dead or self._trailing:
            return
        if self._between:
            if self._head.lstrip(b"\0"):
                self.error = "corrupt_gzip: bytes after the end of the gzip stream"
            return
        self.error = "corrupt_gzip: stream ends before the gzip trailer"

    @property
    def lost(self) -> bool:
        """Whether bytes of the stream could not be inflated at all (corrupt or cut), beyond what was produced."""
        return self.error is not None and not self._trailing


def _gunzip(raw: bytes) -> tuple[bytes, _Inflater]:
    """Inflate a whole object."""
    inflater = _Inflater()
    out = b"".join(inflater.feed(raw, 1 << 20))  # in steps: what precedes a corruption is kept for its rejects
    inflater.finish()
    return out, inflater


def _suspect(pieces: list[Piece], verified: int, error: str, offset: int = 0) -> list[Piece]:
    """Mark the lines of `pieces` that lie beyond `verified` bytes of the inflated stream as unverified.

    `offset` is where the first piece starts in the stream. A piece that straddles the verified end is cut
    at its last newline before it: lines wholly inside verified bytes stay good data.
    """
    out: list[Piece] = []
    for p in pieces:
        end = offset + len(p.data)
        if end <= verified:
            out.append(p)
        elif offset >= verified:
            out.append(Piece(p.obj, p.data, p.first_line, p.lines, error))
        else:
            cut = p.data.rfind(b"\n", 0, verified - offset) + 1
            good = p.data[:cut]
            n = good.count(b"\n")
            if good:
                out.append(Piece(p.obj, good, p.first_line, n))
            out.append(Piece(p.obj, p.data[cut:], p.first_line + n, p.lines - n, error))
        offset = end
    return out


def read_object(loc: Location, obj: CaptureObject, block: int) -> list[Piece]:
    """Fetch one object whole and cut it into pieces; lines of an unverified gzip stream carry its error."""
    with translate_errors(obj.uri):
        raw = loc.fs.cat_file(obj.path)
    if raw[:2] != _GZIP_MAGIC:
        return _split_lines(obj, raw, block)
    data, inflater = _gunzip(raw)
    bom = len(_BOM) if data.startswith(_BOM) else 0
    pieces = _split_lines(obj, data, block)
    if inflater.error is None:
        return pieces
    checked = _suspect(pieces, inflater.verified - bom, inflater.error)
    return [*checked, _lost(obj, pieces, inflater.error)] if inflater.lost else checked


def _lost(obj: CaptureObject, pieces: list[Piece], error: str) -> Piece:
    """The marker for what a damaged stream held beyond its last readable line (one reject, no line)."""
    line = pieces[-1].first_line + pieces[-1].lines if pieces else 1
    return Piece(obj, b"", line, 0, error)


def _verify(loc: Location, obj: CaptureObject, block: int) -> _Inflater:
    """Inflate a streamed gzip object once without keeping its bytes; the inflater tells what verified.

    Holding a large object's rows until its trailer is checked would cost its whole size in memory;
    reading it twice costs time only, and only for gzip objects too large to fetch whole.
    """
    inflater = _Inflater()
    with translate_errors(obj.uri):
        f: IO[bytes] = loc.fs.open(obj.path, "rb", block_size=max(block, 5 * 2**20))
    with f:
        while True:
            with translate_errors(obj.uri):
                raw = f.read(block)
            if not raw:
                break
            for _ in inflater.feed(raw, block):
                pass
            if inflater.dead:
                break
    inflater.finish()
    return inflater


def _inflated(loc: Location, obj: CaptureObject, block: int) -> Iterator[bytes]:
    """The object's bytes in blocks of at most `block`, inflated when gzip, ending where inflating fails."""
    with translate_errors(obj.uri):
        f: IO[bytes] = loc.fs.open(obj.path, "rb", block_size=max(block, 5 * 2**20))
    with f:
        with translate_errors(obj.uri):
            raw = f.read(block)
        inflater = _Inflater() if raw[:2] == _GZIP_MAGIC else None
        while raw:
            if inflater is None:
                yield raw
            else:
                yield from inflater.feed(raw, block)
                if inflater.dead:
                    return
            with translate_errors(obj.uri):
                raw = f.read(block)


def stream_object(loc: Location, obj: CaptureObject, block: int) -> Iterator[Piece]:
    """Read a large object in blocks, carrying the partial last line into the next block.

    A gzip object is verified first (`_verify`): lines beyond its verified bytes are handed on marked
    with the error, so they become rejects, never rows.
    """
    verified, error, lost = None, None, False
    with translate_errors(obj.uri):
        head = loc.fs.cat_file(obj.path, start=0, end=2)
    if head == _GZIP_MAGIC:
        inflater = _verify(loc, obj, block)
        verified, error, lost = inflater.verified, inflater.error, inflater.lost
    carry: list[bytes] = []
    carried = 0
    line, offset, first = 1, 0, True
    for chunk in _inflated(loc, obj, block):
        if first:
            first = False
            if chunk.startswith(_BOM):
                chunk = chunk[len(_BOM) :]
                if verified is not None:
                    verified -= len(_BOM)
        cut = chunk.rfind(b"\n") + 1
        if not cut:
            # No line ends in this chunk: keep it aside without copying what is carried (a long line
            # is joined once, when it ends, not once per block).
            carry.append(chunk)
            carried += len(chunk)
            continue
        data = b"".join([*carry, chunk[:cut]])
        carry, carried = ([chunk[cut:]] if cut < len(chunk) else []), len(chunk) - cut
        piece = Piece(obj, data, line, data.count(b"\n"))
        yield from _checked([piece], verified, error, offset)
        offset += len(data)
        line += piece.lines
    if carried:
        data = b"".join(carry) + b"\n"
        tail = Piece(obj, data, line, 1)
        yield from _checked([tail], verified, error, offset)
        line += 1
    if error is not None and lost:
        yield Piece(obj, b"", line, 0, error)


def _checked(pieces: list[Piece], verified: int | None, error: str | None, offset: int) -> list[Piece]:
    return pieces if error is None or verified is None else _suspect(pieces, verified, error, offset)


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
