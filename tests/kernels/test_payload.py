"""Payload decoding (--decode): every payload shape of the formats reference, bad payloads, round trips."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pyarrow.dataset as ds
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine import RealtimeOptions, read_capture, run_realtime
from engine.kernels.payload import ColumnSpec, decode_payloads, parse_column_spec
from tests.conftest import QUOTED_CSV, QUOTED_JSONLINES, QUOTED_MIXED, WriteCapture

T = "2026-11-01T10:15:00Z"


def event(
    event_id: str,
    inp: tuple[str, str, str] | None,
    out: tuple[str, str, str] | None,
    *,
    time: str = T,
) -> str:
    """A capture line; each side is (content type, encoding, data) or None (not captured)."""
    cap: dict[str, Any] = {}
    for key, side in (("endpointInput", inp), ("endpointOutput", out)):
        if side is not None:
            ct, enc, data = side
            cap[key] = {"observedContentType": ct, "mode": "INPUT", "data": data, "encoding": enc}
    return json.dumps({"captureData": cap, "eventMetadata": {"eventId": event_id, "inferenceTime": time}})


def _decode(lines: list[str], spec: ColumnSpec | None = None) -> tuple[list[dict[str, Any]], list[Any]]:
    from engine.io.fetch import _split_lines
    from engine.io.listing import CaptureObject
    from engine.kernels.envelope import decode_unit

    obj = CaptureObject("/c/ep/v/2026/11/01/10/x.jsonl", "file:///c/ep/v/2026/11/01/10/x.jsonl", 0, "ep", "v", None)
    d = decode_unit(_split_lines(obj, "\n".join(lines).encode(), 1 << 20), max_line_bytes=1 << 20)
    assert d.rejects.num_rows == 0
    records, rejected = decode_payloads(d.rows, spec or ColumnSpec())
    rows = [r for b in records for r in b.to_pylist()]
    failures = [(batch.column("event_id")[f.row].as_py(), f.reason, f.detail) for batch, fs in rejected for f in fs]
    return rows, failures


CSV_IN = ("text/csv", "CSV")
CSV_OUT = ("text/csv; charset=utf-8", "CSV")


def test_single_csv_record() -> None:
    rows, failures = _decode([event("a", (*CSV_IN, "1,2.5,3"), (*CSV_OUT, "0.036397725343704224"))])
    assert not failures
    (r,) = rows
    assert (r["f0"], r["f1"], r["f2"], r["prediction"], r["record_index"]) == (1.0, 2.5, 3.0, 0.036397725343704224, 0)
    assert r["event_id"] == "a" and "input_data" not in r


def test_quoted_csv_record_is_rejected_for_its_ellipsis_then_decoded_as_text() -> None:
    # The formats reference truncated the real input with "…": not a number, so by default the event is rejected.
    rows, failures = _decode([QUOTED_CSV])
    assert not rows
    assert failures == [
        ("09e668ab-172a-4ef1-9dc3-696d52879010", "invalid_value", "input column 'f5': '…' is not double")
    ]
    spec = parse_column_spec({"input": {"columns": [{"name": f"c{i}", "type": "string"} for i in range(13)]}})
    rows, failures = _decode([QUOTED_CSV], spec)
    assert not failures
    expected = ["132", "10", "182.9", "54", "292.4", "…", "0", "1", "0", "1", "0", "0", "1"]
    assert [rows[0][f"c{i}"] for i in range(13)] == expected
    assert rows[0]["prediction"] == 0.036397725343704224


def test_quoted_mixed_encodings_csv_in_json_out() -> None:
    rows, failures = _decode([QUOTED_MIXED])
    assert not failures
    (r,) = rows
    assert (r["f0"], r["f1"], r["f2"]) == (0.5629733055182888, 0.3018707225866159, 0.5824503894753207)
    assert (r["score"], r["predicted_label"]) == (0.012620825320482254, 0)


def test_quoted_json_lines_two_records() -> None:
    rows, failures = _decode([QUOTED_JSONLINES])
    assert not failures
    assert [r["record_index"] for r in rows] == [0, 1]
    assert rows[0]["features"] == [28, 2, 133937, 9, 13, 2, 0, 0, 4, 1, 15024, 0, 55, 37]
    assert rows[1]["features"][:3] == [43, 2, 72338]
    assert [(r["predicted_label"], r["score"]) for r in rows] == [(1, 0.989977359771728), (1, 0.504138827323913)]


def test_multi_row_csv_with_trailing_newline() -> None:
    rows, failures = _decode([event("m", (*CSV_IN, "1,2\n3,4\n"), (*CSV_OUT, "0.1\n0.9"))])
    assert not failures
    assert [(r["record_index"], r["f0"], r["f1"], r["prediction"]) for r in rows] == [
        (0, 1.0, 2.0, 0.1),
        (1, 3.0, 4.0, 0.9),
    ]


def test_instances_and_predictions_lists() -> None:
    body_in = json.dumps({"instances": [{"features": [1.5, 2.0]}, {"features": [3.0, 4.5]}]})
    body_out = json.dumps({"predictions": [{"score": 0.2, "predicted_label": 0}, {"score": 0.8, "predicted_label": 1}]})
    rows, failures = _decode(
        [event("j", ("application/json", "JSON", body_in), ("application/json", "JSON", body_out))]
    )
    assert not failures
    assert [(r["features"], r["score"], r["predicted_label"]) for r in rows] == [
        ([1.5, 2.0], 0.2, 0),
        ([3.0, 4.5], 0.8, 1),
    ]


def test_pretty_printed_json_is_not_split_on_newlines() -> None:
    out = '{\n    "predictions": [3.5, 4.0, 5.5\n    ]\n}'
    inp = json.dumps({"instances": [[1, 2], [3, 4], [5, 6]]}, indent=4)
    rows, failures = _decode([event("p", ("application/json", "JSON", inp), ("application/json", "JSON", out))])
    assert not failures
    assert [r["prediction"] for r in rows] == [3.5, 4.0, 5.5]
    assert [(r["f0"], r["f1"]) for r in rows] == [(1, 2), (3, 4), (5, 6)]


def test_base64_bodies_are_decoded_by_content_type() -> None:
    b64 = lambda s: base64.b64encode(s.encode()).decode()  # noqa: E731
    rows, failures = _decode(
        [
            event("c", ("text/csv", "BASE64", b64("1,2\n3,4")), ("text/csv", "BASE64", b64("0.5\n0.7\n"))),
            event("j", ("application/json", "BASE64", b64('{"x": 1}')), ("application/json", "JSON", '{"y": 2}')),
            event("i", ("image/jpeg", "BASE64", b64("\xff\xd8 not text")), ("application/json", "JSON", '{"y": 3}')),
        ]
    )
    assert not failures
    by = {(r["event_id"], r["record_index"]): r for r in rows}
    assert (by["c", 1]["f0"], by["c", 1]["prediction"]) == (3.0, 0.7)
    assert (by["j", 0]["x"], by["j", 0]["y"]) == (1, 2)
    assert by["i", 0]["input_data"] == "\xff\xd8 not text".encode()  # stays binary
    assert by["i", 0]["y"] == 3


def test_input_only_and_output_only_events() -> None:
    rows, failures = _decode([event("in", (*CSV_IN, "1,2\n3,4"), None), event("out", None, (*CSV_OUT, "0.25"))])
    assert not failures
    got = [(r["event_id"], r["record_index"], r["f0"], r["prediction"]) for r in rows]
    assert got == [("in", 0, 1.0, None), ("in", 1, 3.0, None), ("out", 0, None, 0.25)]


@pytest.mark.parametrize(
    ("inp", "out", "reason"),
    [
        ((*CSV_IN, "1,2\n3"), (*CSV_OUT, "0.1\n0.2"), "csv_column_count"),
        ((*CSV_IN, "1,abc"), (*CSV_OUT, "0.1"), "invalid_value"),
        ((*CSV_IN, "1,2\n3,4"), (*CSV_OUT, "0.1"), "record_count_mismatch"),
        (("text/csv", "BASE64", "!!not base64!!"), (*CSV_OUT, "0.1"), "invalid_base64"),
        (("application/json", "JSON", '{"a": '), (*CSV_OUT, "0.1"), "invalid_json"),
        ((*CSV_IN, ""), (*CSV_OUT, "0.1"), "empty_payload"),
        (("text/csv", "GZIP", "x"), (*CSV_OUT, "0.1"), "unknown_encoding"),
        (("text/csv", "BASE64", base64.b64encode(b"\xff\xfe,1").decode()), (*CSV_OUT, "0.1"), "invalid_utf8"),
    ],
)
def test_bad_payloads_reject_the_event_only(inp: tuple[str, str, str], out: tuple[str, str, str], reason: str) -> None:
    good = event("good", (*CSV_IN, "7,8"), (*CSV_OUT, "0.3"))
    rows, failures = _decode([good, event("bad", inp, out), good.replace('"good"', '"good2"')])
    assert [f[:2] for f in failures] == [("bad", reason)]
    assert sorted(r["event_id"] for r in rows) == ["good", "good2"]
    assert all((r["f0"], r["f1"], r["prediction"]) == (7.0, 8.0, 0.3) for r in rows)


def test_column_spec_names_types_and_header() -> None:
    spec = parse_column_spec(
        {
            "input": {
                "columns": [{"name": "age", "type": "int64"}, {"name": "state", "type": "string"}],
                "header": True,
            },
            "output": {"columns": [{"name": "churn", "type": "float64"}], "prediction": "churn"},
        }
    )
    rows, failures = _decode([event("s", (*CSV_IN, "age,state\n42,KS\n7,OH"), (*CSV_OUT, "0.1\n0.2"))], spec)
    assert not failures
    assert [(r["age"], r["state"], r["churn"]) for r in rows] == [(42, "KS", 0.1), (7, "OH", 0.2)]


def test_decode_job_on_synthetic_capture(tmp_path: Path) -> None:
    from engine.synth import SynthOptions, synth

    summary = synth(str(tmp_path / "s"), SynthOptions(records=3000, hours=2, base64_share=0.2, multi_record_share=0.2))
    out = tmp_path / "out"
    report = run_realtime(summary.capture_root, str(out), options=RealtimeOptions(decode=True))
    assert report.balanced and report.rejected == 0
    assert report.events_written == summary.events
    assert report.rows_written == summary.records
    # Each (endpoint, variant) subtree has its own columns; read one with pyarrow.
    first = sorted(out.glob("endpoint=*/variant=*"))[0]
    table = ds.dataset(first, partitioning="hive").to_table()
    assert {"event_id", "record_index", "inference_time"} <= set(table.column_names)
    envelope = read_capture(summary.capture_root).read_all()
    assert envelope.num_rows == summary.events


@settings(max_examples=60, deadline=None)
@given(
    bodies=st.lists(
        st.lists(
            st.lists(st.floats(allow_nan=False, allow_infinity=False, width=64), min_size=3, max_size=3),
            min_size=1,
            max_size=4,
        ),
        min_size=1,
        max_size=8,
    ),
    trailing=st.booleans(),
)
def test_csv_values_round_trip(bodies: list[list[list[float]]], trailing: bool) -> None:
    lines = []
    for i, rows in enumerate(bodies):
        text = "\n".join(",".join(repr(v) for v in row) for row in rows) + ("\n" if trailing else "")
        preds = "\n".join(repr(row[0] / 2) for row in rows)
        lines.append(event(f"e{i}", (*CSV_IN, text), (*CSV_OUT, preds)))
    rows, failures = _decode(lines)
    assert not failures
    want = [(f"e{i}", k, *row, row[0] / 2) for i, rs in enumerate(bodies) for k, row in enumerate(rs)]
    got = [(r["event_id"], r["record_index"], r["f0"], r["f1"], r["f2"], r["prediction"]) for r in rows]
    assert got == want


def test_decode_job_rejects_bad_payload_events_and_balances(tmp_path: Path, write_capture: WriteCapture) -> None:
    lines = [
        event("ok1", (*CSV_IN, "1,2\n3,4"), (*CSV_OUT, "0.1\n0.2")),
        event("short", (*CSV_IN, "1,2\n3,4"), (*CSV_OUT, "0.1")),
        event("ok2", (*CSV_IN, "5,6"), (*CSV_OUT, "0.3")),
        event("b64", ("text/csv", "BASE64", "%%%"), (*CSV_OUT, "0.3")),
    ]
    write_capture("2026/11/01/10", lines)
    out = tmp_path / "out"
    report = run_realtime(str(tmp_path / "capture"), str(out), options=RealtimeOptions(decode=True, max_reject_ratio=1))
    assert report.balanced
    assert (report.records, report.events_written, report.rows_written, report.rejected) == (4, 2, 3, 2)
    assert report.rejects_by_reason == {"record_count_mismatch": 1, "invalid_base64": 1}
    rejects = ds.dataset(out / "_rejects", partitioning="hive").to_table().to_pylist()
    assert sorted((r["source_line"], r["reason"]) for r in rejects) == [
        (2, "record_count_mismatch"),
        (4, "invalid_base64"),
    ]
    rows = (
        ds.dataset(out, partitioning="hive")
        .to_table()
        .sort_by([("event_id", "ascending"), ("record_index", "ascending")])
    )
    assert rows.column("prediction").to_pylist() == [0.1, 0.2, 0.3]
