"""Exactness on real-world damage: every record accounted, every value and its provenance its own line's.

Each test here reproduces a defect that once gave silent wrong data or failed a whole run.
"""

from __future__ import annotations

import random
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds
import pytest

from engine import RealtimeOptions, RunReport, run_realtime
from engine.io.fetch import Piece
from engine.io.listing import CaptureObject
from engine.kernels.envelope import decode_unit
from engine.kernels.labels import decode_labels
from tests.conftest import WriteCapture, record

H = "2026-11-01T10:15:00Z"
HOUR = "2026/11/01/10"
UTC = timezone.utc


def _obj(name: str, endpoint: str | None = "ep") -> CaptureObject:
    return CaptureObject(name, f"file:///{name}", 0, endpoint, "v", datetime(2026, 11, 1, 10, tzinfo=UTC))


def _piece(name: str, lines: list[str], endpoint: str | None = "ep") -> Piece:
    data = "".join(line + "\n" for line in lines).encode()
    return Piece(_obj(name, endpoint), data, 1, data.count(b"\n"))


def _run(tmp_path: Path, **kw: Any) -> tuple[RunReport, list[dict[str, Any]], list[dict[str, Any]]]:
    kw.setdefault("max_reject_ratio", 1.0)
    report = run_realtime(str(tmp_path / "capture"), str(tmp_path / "out"), options=RealtimeOptions(**kw))
    out = tmp_path / "out"
    rows = ds.dataset(out, partitioning="hive").to_table().to_pylist() if any(out.glob("endpoint=*")) else []
    rej = out / "_rejects"
    rejects = ds.dataset(rej, partitioning="hive").to_table().to_pylist() if rej.exists() else []
    # The balance from the files themselves, not only the report.
    assert report.records == len(rows) + len(rejects) + report.out_of_window, report.to_dict()
    return report, rows, rejects


# 1. Two records on one line plus a blank line in one unit: once shifted every later row by one line.
def test_two_records_on_a_line_and_a_blank_line_keep_every_row_on_its_own_line() -> None:
    a = _piece("a.jsonl", [record("a1", H), record("a2", H) + record("a3", H), record("a4", H)], endpoint="epA")
    b = _piece("b.jsonl", ["", record("b1", H), record("b2", H)], endpoint="epB")
    d = decode_unit([a, b], max_line_bytes=1 << 20)
    got = sorted(
        zip(
            d.rows["event_id"].to_pylist(),
            d.rows["endpoint"].to_pylist(),
            d.rows["source_line"].to_pylist(),
            strict=False,
        )
    )
    assert got == [("a1", "epA", 1), ("a4", "epA", 3), ("b1", "epB", 2), ("b2", "epB", 3)]
    (rej,) = d.rejects.to_pylist()
    assert (rej["reason"], rej["source_file"], rej["source_line"]) == ("invalid_json", "file:///a.jsonl", 2)
    assert d.records == 5 and d.blank_lines == 1  # the double line is one record: a reject


def test_two_labels_on_a_line_and_a_blank_line_keep_label_provenance() -> None:
    def label(i: str) -> str:
        return (
            '{"groundTruthData":{"data":"1","encoding":"CSV"},"eventMetadata":{"eventId":"'
            + i
            + '"},"eventVersion":"0"}'
        )

    a = _piece("a.jsonl", [label("a1"), label("a2") + label("a3"), label("a4")], endpoint=None)
    b = _piece("b.jsonl", ["", label("b1")], endpoint=None)
    d = decode_labels([a, b], max_line_bytes=1 << 20)
    rows = d.rows.to_pylist()
    got = sorted((r["event_id"], str(r["label_file"]), r["label_line"]) for r in rows)
    assert got == [("a1", "file:///a.jsonl", 1), ("a4", "file:///a.jsonl", 3), ("b1", "file:///b.jsonl", 2)]
    assert [(r["reason"], r["source_line"]) for r in d.rejects.to_pylist()] == [("invalid_json", 2)]


# 8. A record's fate depends on that record alone, not on whether another line of its unit is bad.
@pytest.mark.parametrize(
    "extra",
    [
        '"note":NaN',
        '"deep":' + "[" * 2000 + "]" * 2000,
    ],
    ids=["nan-in-unknown-field", "2000-deep-array"],
)
def test_a_line_is_a_row_or_a_reject_whatever_its_neighbours(extra: str) -> None:
    line = record("odd", H)[:-1] + "," + extra + "}"
    alone = decode_unit([_piece("a.jsonl", [record("x", H), line])], max_line_bytes=1 << 22)
    with_bad = decode_unit([_piece("a.jsonl", [record("x", H), line, "{broken"])], max_line_bytes=1 << 22)
    assert alone.rows["event_id"].to_pylist() == ["x", "odd"]
    assert with_bad.rows["event_id"].to_pylist() == ["x", "odd"]
    assert alone.rows.to_pylist() == with_bad.rows.to_pylist()
    assert [r["source_line"] for r in with_bad.rejects.to_pylist()] == [3]


# 10. A time in (or normalizing to) year 10000 is a reject, never a failed run.
@pytest.mark.parametrize(
    "text", ["10000-01-01T00:00:00Z", "9999-12-31T23:59:59-01:00", "0000-01-01T00:00:00Z", "+12345-01-01T00:00:00Z"]
)
def test_times_outside_years_1_to_9999_are_rejected(tmp_path: Path, write_capture: WriteCapture, text: str) -> None:
    write_capture(HOUR, [record("a", H), record("b", text)])
    _report, rows, rejects = _run(tmp_path)
    assert [r["event_id"] for r in rows] == ["a"]
    assert [(r["reason"], r["source_line"]) for r in rejects] == [("invalid_inference_time", 2)]


# 11. A field kept as JSON text nested too deep for the serializer is a reject with a reason.
def test_custom_attributes_nested_256_deep_is_a_reject(tmp_path: Path, write_capture: WriteCapture) -> None:
    deep = "[" * 256 + "]" * 256
    line = record("deep", H).replace('"eventId":"deep"', '"eventId":"deep","customAttributes":' + deep)
    ok = record("ok", H).replace('"eventId":"ok"', '"eventId":"ok","customAttributes":{"a":[1,2]}')
    write_capture(HOUR, [record("a", H), line, ok])
    _report, rows, rejects = _run(tmp_path)
    assert sorted((r["event_id"], r["custom_attributes"]) for r in rows) == [("a", None), ("ok", '{"a":[1,2]}')]
    assert [(r["reason"], r["source_line"]) for r in rejects] == [("invalid_field", 2)]


# 19. Times before 1970 get their own hour partition; microseconds are kept.
def test_times_before_1970_and_microseconds(tmp_path: Path, write_capture: WriteCapture) -> None:
    write_capture(
        "1969/12/31/23",
        [
            record("old", "1969-12-31T23:59:59.5Z"),
            record("older", "1969-07-20T20:17:40Z"),
            record("us", "2020-12-03T19:08:02.123456"),
        ],
    )
    _report, rows, rejects = _run(tmp_path)
    assert not rejects
    by_id = {r["event_id"]: r for r in rows}
    assert (by_id["old"]["year"], by_id["old"]["month"], by_id["old"]["day"], by_id["old"]["hour"]) == (
        1969,
        12,
        31,
        23,
    )
    assert (by_id["older"]["year"], by_id["older"]["month"], by_id["older"]["day"], by_id["older"]["hour"]) == (
        1969,
        7,
        20,
        20,
    )
    assert by_id["old"]["inference_time"] == datetime(1969, 12, 31, 23, 59, 59, 500000, tzinfo=UTC)
    assert by_id["us"]["inference_time"] == datetime(2020, 12, 3, 19, 8, 2, 123456, tzinfo=UTC)
    assert not list((tmp_path / "out").glob("**/*__HIVE_DEFAULT_PARTITION__*"))
    assert pa.types.is_timestamp(ds.dataset(tmp_path / "out", partitioning="hive").schema.field("inference_time").type)


def _body(n: int, prefix: str) -> bytes:
    # Seeded random values: the gzip stays large enough to take the streaming path.
    rng = random.Random(prefix)
    return "".join(
        record(f"{prefix}{i}", H, data=",".join(f"{rng.random():.6f}" for _ in range(40))) + "\n" for i in range(n)
    ).encode()


def _flip(raw: bytes, at: float) -> bytes:
    i = int(len(raw) * at)
    return raw[:i] + bytes([raw[i] ^ 0x10]) + raw[i + 1 :]


# 3. A corrupt gzip object read in streaming mode: nothing decoded from it before the CRC check is a row.
@pytest.mark.parametrize("unit", [16 * 1024, 8 << 20], ids=["streamed", "whole"])
@pytest.mark.parametrize("damage", ["flip-early", "flip-late", "crc", "truncated"])
def test_no_row_comes_from_an_unverified_gzip_stream(
    tmp_path: Path, write_capture: WriteCapture, unit: int, damage: str
) -> None:
    import gzip

    good = _body(3000, "g")
    write_capture(HOUR, gzip.compress(good), name="00-00-000-g.jsonl.gz")
    raw = gzip.compress(_body(3000, "b"))
    broken = {
        "flip-early": _flip(raw, 0.25),
        "flip-late": _flip(raw, 0.75),
        "crc": raw[:-8] + bytes([raw[-8] ^ 1]) + raw[-7:],
        "truncated": raw[: len(raw) * 2 // 3],
    }[damage]
    write_capture(HOUR, broken, name="00-00-001-b.jsonl.gz")
    report, rows, rejects = _run(tmp_path, unit_bytes=unit)
    # The intact object: every row exactly its line.
    g = sorted((r["source_line"], r["event_id"]) for r in rows if r["source_file"].endswith("g.jsonl.gz"))
    assert g == [(i + 1, f"g{i}") for i in range(3000)]
    assert not [r for r in rows if r["source_file"].endswith("b.jsonl.gz")]
    assert rejects and {r["reason"] for r in rejects} == {"corrupt_gzip"}
    lined = sorted(r["source_line"] for r in rejects if r["source_line"] is not None)
    assert lined == list(range(1, len(lined) + 1))
    assert report.records == 3000 + len(rejects)


# 4. Bytes after a gzip member's trailer are rejects with their line numbers, never dropped unseen.
def test_bytes_after_the_gzip_trailer_are_rejected_not_dropped(tmp_path: Path, write_capture: WriteCapture) -> None:
    import gzip

    appended = (record("p1", H) + "\n" + record("p2", H) + "\n").encode()
    write_capture(HOUR, gzip.compress(_body(10, "g")) + appended, name="00-00-000-a.jsonl.gz")
    write_capture(HOUR, gzip.compress(_body(5, "z")) + b"\0" * 512, name="00-00-001-padded.jsonl.gz")
    report, rows, rejects = _run(tmp_path)
    a = sorted((r["source_line"], r["event_id"]) for r in rows if r["source_file"].endswith("a.jsonl.gz"))
    assert a == [(i + 1, f"g{i}") for i in range(10)]
    assert len([r for r in rows if r["source_file"].endswith("padded.jsonl.gz")]) == 5  # NUL padding is allowed
    assert [(r["reason"], r["source_line"], r["raw"]) for r in sorted(rejects, key=lambda r: r["source_line"])] == [
        ("corrupt_gzip", 11, record("p1", H).encode()),
        ("corrupt_gzip", 12, record("p2", H).encode()),
    ]
    assert report.records == 17


def test_labels_after_a_gzip_trailer_are_rejected(tmp_path: Path) -> None:
    import gzip

    from engine.jobs.labels import read_ground_truth

    def label(i: str) -> str:
        return (
            '{"groundTruthData":{"data":"1","encoding":"CSV"},"eventMetadata":{"eventId":"'
            + i
            + '"},"eventVersion":"0"}'
        )

    path = tmp_path / "gt" / "2026" / "11" / "01" / "10" / "labels.jsonl.gz"
    path.parent.mkdir(parents=True)
    path.write_bytes(gzip.compress((label("a") + "\n").encode()) + (label("b") + "\n").encode())
    rejected: list[pa.RecordBatch] = []
    table = read_ground_truth(str(tmp_path / "gt"), on_rejects=rejected.append).read_all()
    assert table.column("event_id").to_pylist() == ["a"]
    (rej,) = pa.Table.from_batches(rejected).to_pylist()
    assert (rej["reason"], rej["source_line"], rej["raw"]) == ("corrupt_gzip", 2, label("b").encode())


# Issue "Commit, kill, concurrency, security, memory", item 15: a unit of a million tiny bad lines.
def test_a_unit_of_many_tiny_bad_lines_is_decoded_in_line_groups_with_exact_provenance() -> None:
    from engine.kernels import envelope

    lines = [record(f"e{i}", H) if i % 7 else "x" for i in range(3 * envelope.SLOW_LINES + 11)]
    a = _piece("a.jsonl", lines)
    d = decode_unit([a], max_line_bytes=1 << 20)
    bad = [i + 1 for i in range(len(lines)) if i % 7 == 0]
    assert d.rejects.column("source_line").to_pylist() == bad
    assert set(d.rejects.column("reason").to_pylist()) == {"invalid_json"}
    assert d.rejects.column("raw").to_pylist() == [b"x"] * len(bad)
    got = sorted(zip(d.rows["source_line"].to_pylist(), d.rows["event_id"].to_pylist(), strict=True))
    assert got == [(i + 1, f"e{i}") for i in range(len(lines)) if i % 7]
    assert d.records == len(lines)
