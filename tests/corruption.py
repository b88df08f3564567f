"""Random damage to valid capture and ground-truth trees, and the oracle that says which lines stayed intact.

A damaged object is rebuilt from chunks that remember which original line they are (or that they are
damage). After damage, an output line is *intact* when it is exactly one intact chunk: the same bytes as
an original line, at a known new line number. The tests then require that every intact line comes out
with exactly the values the clean run gave its original line, and that every non-blank line of every
object is accounted for once, as rows or as a reject.
"""

from __future__ import annotations

import gzip
import random
import zlib
from dataclasses import dataclass, field
from pathlib import Path

_WS = b" \t\r\n\x0b\x0c"

LINE_DAMAGE = (
    "flip",
    "truncate",
    "garbage",
    "nul",
    "merge",
    "duplicate",
    "invalid_utf8",
    "deep",
    "blank",
    "cr",
    "bom",
)
GZIP_DAMAGE = ("gz_flip", "gz_truncate", "gz_append", "gz_lines")


@dataclass
class Damaged:
    """What became of one object: its intact lines (new 1-based line -> original 1-based line)."""

    path: Path
    kind: str
    intact: dict[int, int] = field(default_factory=dict)
    # Non-blank lines of the object as a reader sees it (None: the gzip stream is broken, lines unknown).
    nonblank: set[int] | None = None
    # With a broken gzip stream: how many leading lines come from members whose trailer checked.
    verified_lines: int = 0
    lines: list[bytes] = field(default_factory=list)  # the object's lines as a reader sees them


def _gunzip_members(raw: bytes) -> tuple[bytes, bytes | None, bool]:
    """(content of the members whose trailer checked, plain bytes after the last member, whether all is valid).

    Trailing bytes that start no member are returned (a reader rejects their lines); a member that fails
    or ends early makes the stream broken from there on.
    """
    out = []
    data = raw
    while True:
        d = zlib.decompressobj(wbits=31)
        try:
            chunk = d.decompress(data)
        except zlib.error:
            return b"".join(out), None, False
        if not d.eof:
            return b"".join(out), None, False
        out.append(chunk)
        rest = d.unused_data.lstrip(b"\0")
        if not rest:
            return b"".join(out), None, True
        if not rest.startswith(b"\x1f\x8b") or len(rest) != len(d.unused_data):
            return b"".join(out), d.unused_data, False
        data = rest


Chunks = list[tuple[bytes, int | None]]  # a line's bytes without its newline, its original 0-based line or None


def _rebuild(chunks: Chunks, rng: random.Random, kind: str) -> tuple[Chunks, bool]:
    """One damage of `kind` to the chunks; whether a final newline still ends them."""
    chunks = list(chunks)
    final_newline = True
    n = len(chunks)
    i = rng.randrange(n)
    if kind == "flip":
        line = bytearray(chunks[i][0] or b" ")
        pos = rng.randrange(len(line))
        line[pos] ^= 1 << rng.randrange(8)
        chunks[i] = (bytes(line), None)
    elif kind == "truncate":
        keep = rng.randrange(1, max(2, len(chunks[i][0])))
        chunks = [*chunks[:i], (chunks[i][0][:keep], None)]
        final_newline = False
    elif kind == "garbage":
        junk = bytes(rng.choice(b'abc{}[]":,0123 \xff\x00') for _ in range(rng.randrange(1, 80)))
        chunks.insert(i, (junk.replace(b"\n", b""), None))
    elif kind == "nul":
        chunks.insert(i, (b"\0" * rng.randrange(1, 64), None))
    elif kind == "merge" and n > 1:
        j = min(i, n - 2)
        chunks[j : j + 2] = [(chunks[j][0] + chunks[j + 1][0], None)]
    elif kind == "duplicate":
        chunks.insert(i, (chunks[i][0], chunks[i][1]))
    elif kind == "invalid_utf8":
        line = chunks[i][0]
        pos = rng.randrange(len(line) + 1)
        chunks[i] = (line[:pos] + b"\xff\xfe" + line[pos:], None)
    elif kind == "deep":
        depth = rng.choice((300, 2000))
        chunks.insert(i, (b'{"eventMetadata":{"eventId":"deep","x":' + b"[" * depth + b"]" * depth + b"}}", None))
    elif kind == "blank":
        chunks.insert(i, (rng.choice((b"", b"   ", b"\t", b"\r")), None))
    elif kind == "cr":
        chunks = [(c + b"\r", o) for c, o in chunks]  # CRLF endings throughout
    elif kind == "bom":
        chunks[0] = (b"\xef\xbb\xbf" + chunks[0][0], chunks[0][1])
    return chunks, final_newline


def _assemble(
    chunks: list[tuple[bytes, int | None]], final_newline: bool, originals: list[bytes]
) -> tuple[bytes, dict[int, int]]:
    """The object's bytes, and its intact lines (new 1-based line -> original 1-based line).

    Lines are counted as a reader sees them: a leading BOM dropped, a CR before the newline ignored.
    """
    body = b"\n".join(c for c, _ in chunks) + (b"\n" if final_newline else b"")
    bom = 3 if body.startswith(b"\xef\xbb\xbf") else 0
    starts: dict[int, int] = {}
    offset = -bom
    for data, origin in chunks:
        if origin is not None:
            starts[max(offset, 0)] = origin
        offset += len(data) + 1
    intact: dict[int, int] = {}
    pos = 0
    for number, line in enumerate(body[bom:].split(b"\n"), 1):
        o = starts.get(pos)
        if o is not None and line.rstrip(b"\r") == originals[o]:
            intact[number] = o + 1
        pos += len(line) + 1
    return body, intact


def damage_object(path: Path, rng: random.Random, kinds: tuple[str, ...]) -> Damaged:
    """Damage one object in place with one kind of damage drawn from `kinds`."""
    raw = path.read_bytes()
    gz = raw[:2] == b"\x1f\x8b"
    content = gzip.decompress(raw) if gz else raw
    originals = content.rstrip(b"\n").split(b"\n")
    kind = rng.choice(kinds if gz else tuple(k for k in kinds if not k.startswith("gz_")))
    if kind in ("gz_flip", "gz_truncate", "gz_append"):
        if kind == "gz_flip":
            b = bytearray(raw)
            pos = rng.randrange(len(b))
            b[pos] ^= 1 << rng.randrange(8)
            broken = bytes(b)
        elif kind == "gz_truncate":
            broken = raw[: rng.randrange(1, len(raw))]
        else:
            broken = raw + b'{"eventMetadata":{"eventId":"appended"}}\n'
        path.write_bytes(broken)
        verified, trailing, valid = _gunzip_members(broken)
        lines = verified.split(b"\n")[:-1] if verified.endswith(b"\n") else verified.split(b"\n")
        if not verified:
            lines = []
        intact = {i + 1: i + 1 for i, line in enumerate(lines) if i < len(originals) and line == originals[i]}
        if not valid and trailing is None:
            return Damaged(path, kind, intact, None, verified_lines=len(lines), lines=lines)
        if trailing is not None:
            extra = trailing.split(b"\n")
            lines += extra[:-1] if trailing.endswith(b"\n") else extra
        return Damaged(path, kind, intact, _nonblank(lines), lines=lines)
    # One to four damages in one object: combinations (two records on a line and a blank line) matter.
    chunks: Chunks = [(line, i) for i, line in enumerate(originals)]
    final_newline = True
    kinds_here = [kind] + [rng.choice(LINE_DAMAGE) for _ in range(rng.randrange(4))]
    for k in kinds_here:
        if not final_newline:
            break  # a truncation ends the object
        chunks, final_newline = _rebuild(chunks, rng, "flip" if k == "gz_lines" else k)
    kind = "+".join(kinds_here)
    body, intact = _assemble(chunks, final_newline, originals)
    path.write_bytes(gzip.compress(body, mtime=0) if gz else body)
    text = body[3:] if body.startswith(b"\xef\xbb\xbf") else body
    lines = text.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    return Damaged(path, kind, intact, _nonblank(lines), lines=lines)


def _nonblank(lines: list[bytes]) -> set[int]:
    return {i + 1 for i, line in enumerate(lines) if line.strip(_WS)}


def gzip_some(root: Path, rng: random.Random, share: float) -> None:
    """Replace a share of the objects under `root` by gzip copies named ``.gz`` (users compress capture)."""
    for path in sorted(p for p in root.rglob("*.jsonl")):
        if rng.random() < share:
            path.with_name(path.name + ".gz").write_bytes(gzip.compress(path.read_bytes(), mtime=0))
            path.unlink()
