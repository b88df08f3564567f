"""Objects split into records and mini-batches as batch transform splits them (SplitType, BatchStrategy, payload)."""

from __future__ import annotations

import gzip
import io
import itertools
import struct

import pytest

from engine.emulate.records import Batch, RecordError, iter_batches, recordio_frame

MAGIC = struct.pack("<I", 0xCED7230A)


def _batches(
    data: bytes, split: str, strategy: str = "MultiRecord", payload: int = 2**20, gz: bool = False
) -> list[Batch]:
    return list(iter_batches(io.BytesIO(data), split=split, strategy=strategy, max_payload=payload, gzip=gz))


def test_lines_pack_whole_records_up_to_the_payload() -> None:
    lines = [f"{i},{i * 2}\r\n".encode() if i % 3 == 0 else f"{i},{i * 2}\n".encode() for i in range(1000)]
    data = b"".join(lines) + b"last,1"  # no newline at the end: still a record
    batches = _batches(data, "Line", payload=100)
    assert all(len(b.data) <= 100 for b in batches) and b"".join(b.data for b in batches) == data
    assert sum(b.count for b in batches) == 1001 and [b.last for b in batches].count(True) == 1 and batches[-1].last
    firsts = [b.first_record for b in batches]
    assert firsts == [1 + sum(b.count for b in batches[:i]) for i in range(len(batches))]
    # Each batch is as full as the next record allows.
    assert all(len(b.data) + len(lines[nxt.first_record - 1]) > 100 for b, nxt in itertools.pairwise(batches))
    single = _batches(data, "Line", "SingleRecord")
    assert [b.data for b in single] == [*lines, b"last,1"]


def test_lines_spanning_reads_and_limits() -> None:
    data = b"".join(f"{i:07d}\n".encode() for i in range(300_000))  # 2.4 MB: more than one read
    batches = _batches(data, "Line", payload=2**20)
    assert [b.count for b in batches] == [131072, 131072, 37856] and b"".join(b.data for b in batches) == data
    with pytest.raises(RecordError, match=r"record 2 .* larger than the payload limit"):
        _batches(b"1\n" + b"x" * 200 + b"\n", "Line", payload=100)
    with pytest.raises(RecordError, match="larger than the payload limit"):
        _batches(b"x" * 200, "None", payload=100)
    assert _batches(b"", "Line") == [Batch(1, b"", 0, True)]
    assert _batches(b"", "None") == [Batch(1, b"", 0, True)]
    assert _batches(b"a\nb\n", "None") == [Batch(1, b"a\nb\n", 1, True)]


def test_gzip_inflated_and_corruption_named() -> None:
    data = b"1,2\n3,4\n"
    assert _batches(gzip.compress(data) + gzip.compress(data), "Line", gz=True)[0].data == data + data
    with pytest.raises(RecordError, match="corrupt gzip"):
        _batches(gzip.compress(data)[:-6], "Line", gz=True)
    with pytest.raises(RecordError, match="corrupt gzip"):
        _batches(b"not gzip at all", "Line", gz=True)


def test_recordio_framing() -> None:
    payloads = [b"1,2", b"3,4,5,6", b"", b"x" * 9]
    framed = recordio_frame(payloads)
    multi = _batches(framed, "RecordIO")
    assert len(multi) == 1 and multi[0].data == framed and multi[0].count == 4
    single = _batches(framed, "RecordIO", "SingleRecord")
    assert [b.data for b in single] == payloads  # header and padding removed only for SingleRecord
    # A record split around the magic number (cflag 1, 2, 3) is one record, the magic put back between parts.
    parts = [(1, b"ab"), (2, b"cd"), (3, b"e")]
    split = b"".join(MAGIC + struct.pack("<I", (f << 29) | len(p)) + p + b"\0" * (-len(p) % 4) for f, p in parts)
    got = _batches(split + recordio_frame([b"z"]), "RecordIO", "SingleRecord")
    assert [b.data for b in got] == [b"ab" + MAGIC + b"cd" + MAGIC + b"e", b"z"]
    packed = _batches(framed * 40, "RecordIO", payload=64)
    assert all(len(b.data) <= 64 for b in packed) and sum(b.count for b in packed) == 160
    with pytest.raises(RecordError, match="bad magic"):
        _batches(b"\0" * 8, "RecordIO")
    with pytest.raises(RecordError, match="ends inside a record"):
        _batches(framed[:-3], "RecordIO")
