"""Transform objects: each input object and its ``.out`` read in step, as units of aligned lines.

SageMaker writes one output record per input record, in order (formats reference 4.3), so line i
of the output belongs to line i of the input. Objects are streamed in blocks of about `unit_bytes`
of output and the same number of input lines, so memory follows the block, not the object. A file
whose output is one record
(``SplitType=None``: one JSON document, perhaps pretty-printed, perhaps for many ``instances``) is read
whole on both sides.

Gzip: the CRC is checked only at the end of a member, so bytes inflated before a corruption is detected
can already be wrong. A gzip object is therefore verified first, by inflating it once through a second
handle and keeping nothing (every member's trailer, no truncation, no bytes after the last member but
NUL padding), before any of its lines is paired or released; then it is streamed as usual. When it is
corrupt or truncated, every record of the file (every output line, or every input line read without an
output) becomes a reject with its own line number and raw bytes, ``corrupt_gzip``. The run goes on with
the next file. Memory stays at the block size; a gzip object costs a second read.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO

import numpy as np
import orjson

from engine.io.concurrency import ordered_map
from engine.io.fetch import Inflater
from engine.io.storage import Location, translate_errors
from engine.sources.manifests import TransformFile

__all__ = ["Unit", "iter_units"]

logger = logging.getLogger(__name__)

_GZIP_MAGIC = b"\x1f\x8b"
_BOM = b"\xef\xbb\xbf"
# Reads are this size, so a unit ends up at most this much larger than `unit_bytes`.
_READ = 2**20


@dataclass(frozen=True)
class Unit:
    """Aligned lines of one transform file: output line k goes with input line k.

    `output` / `input` hold whole lines (each ending with a newline) or are None when that side is
    not read (no manifest for it, or its object is missing). `whole` marks a file read as one record.
    `extra` is set on the last unit of a file whose sides have different line counts: it holds
    the lines of the longer side past the end of the shorter one, which cannot be paired.
    """

    file: TransformFile
    first_line: int  # 1-based number of the unit's first line
    output: bytes | None
    input: bytes | None
    whole: bool = False
    last: bool = False
    bytes_read: int = 0
    missing: str | None = None  # "output" or "input": that side's object does not exist
    extra: tuple[str, bytes] | None = None  # ("output" | "input", unpaired lines)
    # Every line of the leading side of this unit is a reject for that reason (its gzip
    # object, or its partner's, is corrupt): the lines are there for their numbers and bytes.
    reject: tuple[str, str, str] | None = None  # (reason, URI of the object at fault, detail)


_COUNT_SLICE = 2**20
_scratch = threading.local()


def _count_newlines(data: bytes) -> int:
    """Newlines in `data`: numpy compares slices into one scratch mask per thread (no mask the size of the
    data, and the GIL is released while it compares)."""
    view = np.frombuffer(data, dtype=np.uint8)
    mask: np.ndarray | None = getattr(_scratch, "mask", None)
    if mask is None:
        mask = _scratch.mask = np.empty(_COUNT_SLICE, dtype=bool)
    total = 0
    for start in range(0, len(view), _COUNT_SLICE):
        part = view[start : start + _COUNT_SLICE]
        hit = mask[: len(part)]
        np.equal(part, 10, out=hit)
        total += int(np.count_nonzero(hit))
    return total


class _Stream:
    """Blocks of whole lines from one object, gunzipped when it starts with the gzip magic.

    Reads are kept as a list of chunks with their newline counts and joined once per block, so a block
    costs one copy, not one per read. Newlines are counted by numpy (``bytes.count`` held the GIL over
    every byte read, which stalled the decode threads), and a block is cut inside the one chunk holding
    its last line, never by joining everything and slicing that.
    """

    def __init__(self, handle: IO[bytes], uri: str, block: int, reopen: Callable[[], IO[bytes]]) -> None:
        self.handle = handle
        self.reopen = reopen  # a second handle on the same object, for verifying a gzip stream first
        self.uri = uri
        self.block = block
        self.chunks: list[bytes] = []
        self.counts: list[int] = []  # newlines in each chunk
        self.size = 0
        self.newlines = 0
        self.counted = 0  # newlines in what the last lines / take / rest returned
        self.eof = False
        # The one gzip reader of every source (members, truncation, bytes after the stream): fetch's Inflater.
        self.inflate: Inflater | None = None
        self.pending: Iterator[bytes] | None = None  # inflated pieces of the last read, at most a block each
        self.started = False
        self.leading = True  # no byte of the object's content handed on yet (a BOM there is dropped)
        self.raw_bytes = 0

    def _fill(self) -> None:
        """Add at most about one block of the object's bytes (inflated, for gzip) to the buffer."""
        if self.pending is not None:
            for data in self.pending:
                self._content(data)
                return
            self.pending = None
            assert self.inflate is not None
            if self.inflate.dead:  # what was inflated so far stays buffered (as lines, for their rejects)
                self._end()
                raise _Corrupt(str(self.inflate.error or "corrupt_gzip"))
        with translate_errors(self.uri):
            raw = self.handle.read(min(self.block, _READ))
        self.raw_bytes += len(raw)
        if not self.started:
            self.started = True
            if raw[:2] == _GZIP_MAGIC:
                self.inflate = Inflater()
        if not raw:
            self._end()
            if self.inflate is not None:
                self.inflate.finish()
                if self.inflate.error is not None and self.inflate.lost:
                    raise _Corrupt(str(self.inflate.error))
            return
        if self.inflate is None:
            self._content(raw)
        else:
            self.pending = self.inflate.feed(raw, self.block)

    def _content(self, data: bytes) -> None:
        if self.leading and data:
            self.leading = False
            if data.startswith(_BOM):
                data = data[len(_BOM) :]
        if data:
            self._add(data)

    def _end(self) -> None:
        self.eof = True
        if self.size and not self.chunks[-1].endswith(b"\n"):
            self._add(b"\n")  # a last line without newline is still a line

    @property
    def gzip(self) -> bool:
        """Whether the object is gzip (looks at its first bytes)."""
        if not self.started:
            self._fill()
        return self.inflate is not None

    def verify(self) -> tuple[str, str] | None:
        """Inflate the whole gzip object once, keeping nothing, before any line is used; None when it is sound.

        Else ("corrupt_gzip", detail); this stream is untouched, so its lines can still be read for their
        rejects (up to where inflating fails).
        """
        inflater = Inflater()
        with translate_errors(self.uri):
            handle = self.reopen()
        with handle:
            while not inflater.dead:
                with translate_errors(self.uri):
                    raw = handle.read(_READ)
                if not raw:
                    break
                for _ in inflater.feed(raw, _READ):
                    pass
        inflater.finish()
        return None if inflater.error is None else (inflater.error.reason, f"{self.uri}: {inflater.error.detail}")

    def _add(self, data: bytes) -> None:
        self.chunks.append(data)
        self.size += len(data)
        n = _count_newlines(data)
        self.counts.append(n)
        self.newlines += n

    def _joined(self) -> bytes:
        if len(self.chunks) > 1:
            self.chunks = [b"".join(self.chunks)]
            self.counts = [self.newlines]
        return self.chunks[0] if self.chunks else b""

    def _cut(self, j: int, p: int, newlines: int) -> bytes:
        """The buffer up to byte `p` of chunk `j` (inclusive), holding `newlines` newlines; the rest stays.

        One copy: the chunks before `j` joined with a view of the head of chunk `j` (a whole single chunk is
        handed on as it is); only the tail of chunk `j` is copied again, to stay buffered.
        """
        chunk = self.chunks[j]
        if p + 1 == len(chunk):
            out = b"".join(self.chunks[: j + 1]) if j else chunk
            rest, counts = self.chunks[j + 1 :], self.counts[j + 1 :]
        else:
            out = b"".join([*self.chunks[:j], memoryview(chunk)[: p + 1]]) if j else chunk[: p + 1]
            tail = chunk[p + 1 :]
            rest = [tail, *self.chunks[j + 1 :]]
            counts = [sum(self.counts[: j + 1]) - newlines, *self.counts[j + 1 :]]
        self.chunks, self.counts = rest, counts
        self.size -= len(out)
        self.newlines -= newlines
        self.counted = newlines
        return out

    def _split_all(self) -> bytes:
        """Everything buffered."""
        out = self._joined()
        self.chunks, self.counts, self.size = [], [], 0
        self.counted, self.newlines = self.newlines, 0
        return out

    def _split_at_last_newline(self) -> bytes:
        """Every whole line buffered (joining everything first, then cutting, copied the block twice)."""
        j = len(self.chunks) - 1
        while j >= 0 and not self.counts[j]:
            j -= 1
        if j < 0:
            self.counted = 0
            return b""
        return self._cut(j, self.chunks[j].rfind(b"\n"), self.newlines)

    def first_line(self) -> bytes:
        """The first buffered line (or all that is buffered, without a newline), without consuming it."""
        if self.chunks and (end := self.chunks[0].find(b"\n")) >= 0:
            return self.chunks[0][:end]
        data = self._joined()
        end = data.find(b"\n")
        return data if end < 0 else data[:end]

    def read_all(self, limit: int) -> bytes | None:
        """Everything, if it is at most `limit` bytes; else None (and what was read stays buffered)."""
        while not self.eof and self.size <= limit:
            self._fill()
        return self._joined() if self.eof and self.size <= limit else None

    def lines(self) -> bytes:
        """About one block of whole lines; b"" at the end. `counted` is then their number."""
        while not self.eof and (self.size < self.block or not self.newlines):
            self._fill()
        return self._split_at_last_newline()

    def take(self, n: int) -> bytes:
        """The next `n` whole lines (fewer at the end of the object). `counted` is then their number."""
        while not self.eof and self.newlines < n:
            self._fill()
        if self.newlines < n:  # the object ended first
            return self._split_all()
        if self.newlines == n:  # whatever follows the last newline belongs to the next lines
            return self._split_at_last_newline()
        # The chunk holding the n-th newline, and that newline's place in it: only that chunk is searched.
        j, before = 0, 0
        while before + self.counts[j] < n:
            before += self.counts[j]
            j += 1
        nl = np.flatnonzero(np.frombuffer(self.chunks[j], dtype=np.uint8) == 10)
        return self._cut(j, int(nl[n - before - 1]), n)

    def rest(self) -> bytes:
        """Everything not read yet."""
        while not self.eof:
            self._fill()
        return self._split_all()

    @property
    def done(self) -> bool:
        return self.eof and not self.size


class _Corrupt(Exception):
    """A gzip stream that cannot be decompressed."""


def _open(loc: Location, uri: str, block: int) -> _Stream | None:
    path = loc.fs._strip_protocol(uri)

    def handle() -> IO[bytes]:
        opened: IO[bytes] = loc.fs.open(path, "rb", block_size=max(block, 5 * 2**20))
        return opened

    with translate_errors(uri):
        try:
            first = handle()
        except FileNotFoundError:
            return None
    return _Stream(first, uri, block, handle)


def _starts_document(line: bytes) -> bool:
    """The first line opens a JSON document it does not close (a pretty-printed SplitType=None record)."""
    first = line.strip()
    if first[:1] not in (b"{", b"["):
        return False
    try:
        orjson.loads(first)
    except orjson.JSONDecodeError:
        return True
    return False


_CONTENT = re.compile(rb"\S")
_SPACE = b" \t\n\r\x0b\x0c"  # what bytes.strip() strips, and what \s matches in a bytes pattern


def _single_record(text: bytes) -> bool:
    """One record: one non-blank line, or one JSON document spread over lines (pretty-printed).

    Asked of every object that fits in one unit, most of them many lines: the text is not stripped (a copy)
    nor counted, only searched from the first content to the first newline after it.
    """
    first = _CONTENT.search(text)
    if first is None:
        return False
    end = len(text)
    while text[end - 1] in _SPACE:  # the trailing whitespace only: a few bytes
        end -= 1
    if text.find(b"\n", first.start(), end) < 0:
        return True
    if text[first.start() : first.start() + 1] not in (b"{", b"["):
        return False
    try:
        orjson.loads(memoryview(text)[first.start() : end])  # a JSON Lines text fails at its first line's end
    except orjson.JSONDecodeError:
        return False
    return True


def _verify(st: _Stream) -> tuple[str, str] | None:
    """Verify a gzip object before its lines are used (plain objects need nothing): None when sound."""
    try:
        if not st.gzip:
            return None
    except _Corrupt as exc:  # the first bytes already fail (a broken header)
        return "corrupt_gzip", f"{st.uri}: {exc}"
    return st.verify()


def _rejected(
    tf: TransformFile,
    lead: _Stream,
    output: bool,
    failure: tuple[str, str, str],
    missing: str | None,
    other: _Stream | None = None,
) -> Iterator[Unit]:
    """Every line of the leading side as units to reject (`failure`: reason, URI at fault, detail), block by block;
    `other`: the partner already read (its bytes count with the first unit)."""
    line, before = 1, -(other.raw_bytes if other is not None else 0)
    while True:
        try:
            block = lead.lines()
        except _Corrupt:  # inflating this stream fails where verifying it did: what came before still follows
            continue
        done = lead.done
        if not block and line == 1:  # nothing could be read at all: one reject names the object
            yield Unit(tf, 1, None, None, last=True, missing=f"corrupt: {failure[2]}")
            return
        o, i = (block, None) if output else (None, block)
        total = lead.raw_bytes
        yield Unit(tf, line, o, i, last=done, bytes_read=total - before, missing=missing, reject=failure)
        before, line = total, line + lead.counted
        if done:
            return


def _file_units(loc: Location, tf: TransformFile, *, unit_bytes: int, max_record_bytes: int) -> Iterator[Unit]:
    """The units of one transform file, read in step (gzip objects verified first)."""
    out = _open(loc, tf.output, unit_bytes) if tf.output else None
    if tf.output and out is None:
        # SageMaker writes no .out for a file that failed: nothing was predicted, so its input is not read.
        yield Unit(tf, 1, None, None, last=True, missing="output")
        return
    inp = _open(loc, tf.input, unit_bytes) if tf.input else None
    missing = "input" if tf.input and inp is None else None
    lead = out if out is not None else inp
    if lead is None:
        yield Unit(tf, 1, None, None, last=True, missing=missing)
        return
    follow = inp if lead is out else None
    try:
        # No line of a gzip object is used before its trailers are verified: on either side, a corrupt object
        # turns every record of the file into a reject (the lines of the leading side, numbered, with their bytes).
        failed = _verify(lead)
        if failed is not None:
            yield from _rejected(tf, lead, lead is out, (failed[0], lead.uri, failed[1]), missing)
            return
        failed = _verify(follow) if follow is not None else None
        if failed is not None:
            assert follow is not None
            detail = f"the input of this output line cannot be used: {failed[1]}"
            yield from _rejected(tf, lead, True, (failed[0], follow.uri, detail), missing, follow)
            return
        # Most files are many lines: look at one block only, unless it starts a document spread over lines.
        small = lead.read_all(unit_bytes)
        if small is None and _starts_document(lead.first_line()):
            small = lead.read_all(max_record_bytes)
        if small is not None and _single_record(small):
            other = follow.read_all(max_record_bytes) if follow is not None else None
            body = small.strip() + b"\n"
            size = lead.raw_bytes + (follow.raw_bytes if follow else 0)
            if follow is not None and other is None:
                assert tf.input is not None
                detail = f"the input of this one-record output is larger than {max_record_bytes} bytes"
                yield Unit(
                    tf,
                    1,
                    body,
                    None,
                    whole=True,
                    last=True,
                    bytes_read=size,
                    reject=("line_too_long", tf.input, detail),
                )
                return
            pair = None if other is None else other.strip() + b"\n"
            o, i = (body, pair) if lead is out else (None, body)
            yield Unit(tf, 1, o, i, whole=True, last=True, bytes_read=size, missing=missing)
            return
        line, before = 1, 0
        while True:
            block = lead.lines()
            n = lead.counted
            paired = follow.take(n) if follow is not None and n else None
            done = lead.done
            extra = None
            if done and follow is not None:
                rest = follow.rest()
                if rest.strip():
                    extra = ("input", rest)
            o, i = (block, paired) if lead is out else (None, block)
            total = lead.raw_bytes + (follow.raw_bytes if follow else 0)
            yield Unit(tf, line, o, i, last=done, bytes_read=total - before, missing=missing, extra=extra)
            before, line = total, line + n
            if done:
                return
    finally:
        for st in (out, inp):
            if st is not None:
                st.handle.close()


def iter_units(
    loc: Location, files: list[TransformFile], *, unit_bytes: int, max_record_bytes: int, concurrency: int
) -> Iterator[Unit]:
    """Units of every file in order; files are opened and their first block read `concurrency` at a time.

    Small objects (the common case on S3) are thus fetched concurrently, while a large object is
    streamed block by block as the consumer asks for it.
    """

    def first(tf: TransformFile) -> tuple[Unit | None, Iterator[Unit]]:
        units = _file_units(loc, tf, unit_bytes=unit_bytes, max_record_bytes=max_record_bytes)
        return next(units, None), units

    for head, rest in ordered_map(first, files, workers=max(1, concurrency), lookahead=max(1, concurrency)):
        if head is not None:
            yield head
            yield from rest
