"""One accounting path: every reader hands its counts back, and records = rows + rejects + outside, for every job.

The figures are checked against what the test itself wrote (lines, bad lines, lines outside the window), not
against another count of the engine's.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from engine import (
    BatchOptions,
    MergeOptions,
    RealtimeOptions,
    RunReport,
    iter_capture,
    read_batch,
    read_capture,
    read_ground_truth,
)
from engine.report import Counts
from engine.synth import BatchSynthOptions, synth_batch
from tests.conftest import WriteCapture, record

H = "2026/11/01/00"


def _label(event_id: str) -> str:
    return '{"groundTruthData":{"data":"1","encoding":"CSV"},"eventMetadata":{"eventId":"' + event_id + '"}}'


def _capture(write_capture: WriteCapture) -> None:
    write_capture(
        H,
        [
            record("a", "2026-11-01T00:10:00Z"),
            "not json",
            "",
            record("b", "2026-11-01T00:20:00Z"),
            record("late", "2026-11-01T00:50:00Z"),  # outside [00:00, 00:30)
            record("c", "2026-11-01T00:29:59.999999Z", data="1,2"),
        ],
    )


def test_read_capture_hands_its_counts_back(tmp_path: Path, write_capture: WriteCapture) -> None:
    _capture(write_capture)
    report = RunReport(command="read", source="", dest=None, options={})
    rejected: list[pa.RecordBatch] = []
    options = RealtimeOptions(start="2026-11-01T00:00", end="2026-11-01T00:30")
    table = read_capture(str(tmp_path / "capture"), options=options, report=report, on_rejects=rejected.append)
    rows = table.read_all()
    assert sorted(rows.column("event_id").to_pylist()) == ["a", "b", "c"]
    assert (report.records, report.events_written, report.rejected, report.out_of_window) == (5, 3, 1, 1)
    assert report.blank_lines == 1 and report.objects == 1
    assert sum(b.num_rows for b in rejected) == report.rejected == 1
    assert dict(report.rejects_by_reason) == {"invalid_json": 1}
    assert report.balanced


def test_iter_capture_decoded_counts_events_not_payload_records(tmp_path: Path, write_capture: WriteCapture) -> None:
    _capture(write_capture)
    report = RunReport(command="read", source="", dest=None, options={})
    options = RealtimeOptions(start="2026-11-01T00:00", end="2026-11-01T00:30", decode=True)
    batches = list(iter_capture(str(tmp_path / "capture"), options=options, report=report, on_rejects=lambda _: None))
    # "c" sends two CSV values where its endpoint's other events send three: a payload reject, not a row.
    assert sum(b.num_rows for b in batches) == 2
    assert (report.records, report.events_written, report.rejected, report.out_of_window) == (5, 2, 2, 1)
    assert report.rejects_by_reason["invalid_json"] == 1
    assert report.balanced


def test_read_ground_truth_hands_its_counts_back(tmp_path: Path) -> None:
    gt = tmp_path / "gt" / H / "l.jsonl"
    gt.parent.mkdir(parents=True)
    gt.write_text(_label("a") + "\n{bad\n\n" + _label("b") + "\n" + _label("c") + "\n")
    report = RunReport(command="read", source="", dest=None, options={})
    rejected: list[pa.RecordBatch] = []
    reader = read_ground_truth(str(tmp_path / "gt"), options=MergeOptions(), report=report, on_rejects=rejected.append)
    assert sorted(reader.read_all().column("event_id").to_pylist()) == ["a", "b", "c"]
    assert (report.records, report.events_written, report.rejected, report.blank_lines) == (4, 3, 1, 1)
    assert sum(b.num_rows for b in rejected) == 1 and report.objects == 1
    assert report.balanced


def test_read_batch_hands_its_counts_back_and_they_balance_against_the_files(tmp_path: Path) -> None:
    summary = synth_batch(str(tmp_path), BatchSynthOptions(jobs=2, files_per_job=2, records_per_file=40, seed=3))
    report = RunReport(command="read", source="", dest=None, options={})
    rejected: list[pa.RecordBatch] = []
    reader = read_batch(
        str(tmp_path / "batch-capture"), options=BatchOptions(), report=report, on_rejects=rejected.append
    )
    rows = reader.read_all().num_rows
    rejects = sum(b.num_rows for b in rejected)
    assert rows > 0 and report.events_written == rows and report.rejected == rejects
    assert report.records == rows + rejects + report.out_of_window
    # From the tree itself: every line of every .out file written is a record; so is each missing output.
    out_lines = sum(len(p.read_bytes().splitlines()) for p in Path(summary.transform_output_root).rglob("*.out"))
    assert out_lines == summary.records
    assert report.records == out_lines + summary.missing_outputs
    assert report.rejects_by_reason.get("missing_output", 0) == summary.missing_outputs
    assert report.balanced


def test_counts_round_trip_as_a_dict_and_add_up_in_one_place() -> None:
    c = Counts(records=7, kept=4, rejected=2, out_of_window=1, blank_lines=3, bytes=99, fallback_units=1)
    c.reasons.update({"invalid_json": 2})
    again = Counts.from_dict(c.to_dict())
    assert again == c
    report = RunReport(command="x", source="", dest=None, options={})
    report.add(c)
    report.add(again)
    assert (report.records, report.events_written, report.rejected, report.out_of_window) == (14, 8, 4, 2)
    assert report.bytes_read == 198 and report.blank_lines == 6 and report.fallback_units == 2
    assert report.rejects_by_reason == {"invalid_json": 4}
    assert report.balanced
