"""Fetch: large objects are streamed in newline-aligned blocks with true line numbers; gzip either way."""

from __future__ import annotations

import gzip
from pathlib import Path

import pyarrow.dataset as ds

from engine import RealtimeOptions, read_capture, run_realtime
from engine.io.fetch import _split_lines, stream_object
from engine.io.listing import list_capture_objects
from engine.io.storage import open_location
from tests.conftest import WriteCapture, record

H = "2026-11-01T10:15:00Z"


def _body(n: int, prefix: str = "s") -> bytes:
    return "".join(record(f"{prefix}{i}", H, data="3.14," * 40) + "\n" for i in range(n)).encode()


def test_large_object_is_streamed_with_true_line_numbers(tmp_path: Path, write_capture: WriteCapture) -> None:
    body = _body(3000)  # ~1 MB, far above 4 x the 16 KiB unit: takes the streaming path
    path = write_capture("2026/11/01/10", b"\xef\xbb\xbf" + body)
    loc = open_location(str(path))
    (obj,) = list_capture_objects(loc, hours=None)
    pieces = list(stream_object(loc, obj, 16 * 1024))
    assert len(pieces) > 10
    assert all(p.data.endswith(b"\n") for p in pieces)
    assert b"".join(p.data for p in pieces) == body  # BOM dropped, nothing else changed
    assert [p.first_line for p in pieces] == [1 + sum(q.lines for q in pieces[:i]) for i in range(len(pieces))]
    table = read_capture(str(path), options=RealtimeOptions(unit_bytes=16 * 1024)).read_all()
    assert table.column("source_line").to_pylist() == list(range(1, 3001))
    assert table.column("event_id").to_pylist() == [f"s{i}" for i in range(3000)]


def test_large_gzip_object_streamed_and_corrupt_tail_rejected(tmp_path: Path, write_capture: WriteCapture) -> None:
    write_capture("2026/11/01/10", gzip.compress(_body(3000, "g")), name="00-00-000-g.jsonl.gz")
    broken = gzip.compress(_body(3000, "b"))
    write_capture("2026/11/01/10", broken[: len(broken) // 2], name="00-00-001-b.jsonl.gz")
    out = tmp_path / "out"
    report = run_realtime(
        str(tmp_path / "capture"),
        str(out),
        options=RealtimeOptions(unit_bytes=16 * 1024, max_reject_ratio=1.0),
    )
    assert report.balanced
    rows = ds.dataset(out, partitioning="hive").to_table()
    good = [e for e in rows.column("event_id").to_pylist() if e.startswith("g")]
    assert len(good) == 3000
    # Lines inflated from a stream whose trailer never checked are rejects, each with its line number.
    assert not [e for e in rows.column("event_id").to_pylist() if e.startswith("b")]
    rejects = ds.dataset(out / "_rejects", partitioning="hive").to_table().to_pylist()
    assert {r["reason"] for r in rejects} == {"corrupt_gzip"}
    lined = sorted(r["source_line"] for r in rejects if r["source_line"] is not None)
    assert lined == list(range(1, len(lined) + 1)) and 0 < len(lined) < 3000


def test_split_lines_keeps_a_line_longer_than_the_block_whole(tmp_path: Path, write_capture: WriteCapture) -> None:
    path = write_capture("2026/11/01/10", [record("a", H), record("long", H, data="x" * 5000), record("b", H)])
    loc = open_location(str(path))
    (obj,) = list_capture_objects(loc, hours=None)
    pieces = _split_lines(obj, path.read_bytes(), 1024)
    assert [p.lines for p in pieces] == [1, 1, 1]
    assert [p.first_line for p in pieces] == [1, 2, 3]
