"""Payload decoding, exact under real-world damage: no value shifts onto another event, no run fails for one body."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from engine import RealtimeOptions, run_realtime
from engine.kernels.payload import parse_column_spec
from tests.conftest import WriteCapture
from tests.kernels.test_payload import CSV_IN, CSV_OUT, _decode, event

JSON = ("application/json", "JSON")
HOUR = "2026/11/01/10"


def _csv_events(bodies: list[str]) -> list[str]:
    outs = ["\n".join("0.5" for _ in b.replace("\r\n", "\n").replace("\r", "\n").split("\n") if _) for b in bodies]
    return [event(f"e{i}", (*CSV_IN, b), (*CSV_OUT, o)) for i, (b, o) in enumerate(zip(bodies, outs, strict=True))]


# 2. A bare CR inside one CSV body once shifted the values of every later event.
def test_a_bare_cr_in_one_csv_body_shifts_nothing() -> None:
    lines = [
        event("a", (*CSV_IN, "1,2"), (*CSV_OUT, "0.1")),
        event("b", (*CSV_IN, "3,4\r5,6"), (*CSV_OUT, "0.2")),  # a bare CR ends a line: two records, one output
        event("c", (*CSV_IN, "7,8"), (*CSV_OUT, "0.3")),
        event("d", (*CSV_IN, "9,10\r\n11,12"), (*CSV_OUT, "0.4\r\n0.5")),
    ]
    rows, failures = _decode(lines)
    got = [(r["event_id"], r["record_index"], r["f0"], r["f1"], r["prediction"]) for r in rows]
    assert got == [
        ("a", 0, 1.0, 2.0, 0.1),
        ("c", 0, 7.0, 8.0, 0.3),
        ("d", 0, 9.0, 10.0, 0.4),
        ("d", 1, 11.0, 12.0, 0.5),
    ]
    assert [(e, r) for e, r, _ in failures] == [("b", "record_count_mismatch")]


# 12. An unbalanced quote, or a blank line inside a multi-record body: a reject or a rule, never a failed run.
def test_unbalanced_quote_fails_its_body_only() -> None:
    lines = [
        event("a", (*CSV_IN, "1,2"), (*CSV_OUT, "0.1")),
        event("b", (*CSV_IN, '3,"4'), (*CSV_OUT, "0.2")),
        event("c", (*CSV_IN, "5,6\n7,8"), (*CSV_OUT, "0.3\n0.4")),
        event("q", (*CSV_IN, '"9","1""0"'), (*CSV_OUT, "0.5")),
    ]
    spec = parse_column_spec({"input": {"columns": [{"name": "x", "type": "string"}, {"name": "y", "type": "string"}]}})
    rows, failures = _decode(lines, spec)
    assert [(r["event_id"], r["x"], r["y"]) for r in rows] == [
        ("a", "1", "2"),
        ("c", "5", "6"),
        ("c", "7", "8"),
        ("q", "9", '1"0'),
    ]
    assert [(e, r) for e, r, _ in failures] == [("b", "invalid_csv")]


def test_blank_lines_inside_a_csv_body_are_not_records() -> None:
    lines = [
        event("a", (*CSV_IN, "1,2\n\n3,4\n"), (*CSV_OUT, "0.1\n0.2")),
        event("b", (*CSV_IN, "\n5,6"), (*CSV_OUT, "0.3\n\n")),
        event("c", (*CSV_IN, "7,8"), (*CSV_OUT, "0.4")),
    ]
    rows, failures = _decode(lines)
    assert not failures
    got = [(r["event_id"], r["record_index"], r["f0"], r["prediction"]) for r in rows]
    assert got == [("a", 0, 1.0, 0.1), ("a", 1, 3.0, 0.2), ("b", 0, 5.0, 0.3), ("c", 0, 7.0, 0.4)]


# 14. A bool or timestamp spec column with one value that fails to convert: a reject, never exit 70.
@pytest.mark.parametrize(
    ("arrow_type", "good", "bad", "value"),
    [
        ("bool", "true", "maybe", True),
        ("timestamp[us, tz=UTC]", "2021-05-18T00:29:02Z", "yesterday", "2021-05-18 00:29:02+00:00"),
    ],
)
def test_bool_and_timestamp_columns_reject_bad_values(arrow_type: str, good: str, bad: str, value: Any) -> None:
    spec = parse_column_spec(
        {"input": {"columns": [{"name": "n", "type": "int64"}, {"name": "v", "type": arrow_type}]}}
    )
    lines = [
        event("a", (*CSV_IN, f"1,{good}"), (*CSV_OUT, "0.1")),
        event("b", (*CSV_IN, f"2,{bad}"), (*CSV_OUT, "0.2")),
        event("c", (*CSV_IN, f"3,{good}"), (*CSV_OUT, "0.3")),
    ]
    rows, failures = _decode(lines, spec)
    assert [(r["event_id"], r["n"]) for r in rows] == [("a", 1), ("c", 3)]
    got = rows[0]["v"]
    assert (str(got) if arrow_type.startswith("timestamp") else got) == value
    assert [(e, r) for e, r, _ in failures] == [("b", "invalid_value")]
    assert bad in failures[0][2]


# 15. A bare JSON array request body is one instance (TF Serving), a list of lists is many.
def test_a_list_of_scalars_request_is_one_instance() -> None:
    tf = "[0.19539, 0.0, 10.81, 0.0, 0.413, 6.245, 6.2, 5.2873, 4.0, 305.0, 19.2, 377.17, 7.54]"
    lines = [
        event("tf", (*JSON, tf), (*JSON, '{"predictions": [[33.4771194]]}')),
        event("many", (*JSON, "[[1, 2], [3, 4]]"), (*JSON, '{"predictions": [[0.1], [0.2]]}')),
        event("objs", (*JSON, '[{"a": 1}, {"a": 2}]'), (*JSON, "[0.7, 0.8]")),
    ]
    rows, failures = _decode(lines)
    assert not failures
    tf_row = next(r for r in rows if r["event_id"] == "tf")
    assert [tf_row[f"f{i}"] for i in range(13)] == json.loads(tf)
    assert tf_row["prediction_0"] == 33.4771194
    assert [(r["event_id"], r["record_index"]) for r in rows if r["event_id"] != "tf"] == [
        ("many", 0),
        ("many", 1),
        ("objs", 0),
        ("objs", 1),
    ]


def _dataset(tmp_path: Path, **kw: Any) -> tuple[Any, pa.Table]:
    kw.setdefault("max_reject_ratio", 1.0)
    report = run_realtime(str(tmp_path / "capture"), str(tmp_path / "out"), options=RealtimeOptions(decode=True, **kw))
    return report, ds.dataset(tmp_path / "out", partitioning="hive", exclude_invalid_files=True).to_table()


# 9. A JSON output field that is a number in some records and a string in others: text, exactly as written.
def test_a_field_mixing_numbers_and_strings_keeps_every_value_exactly(
    tmp_path: Path, write_capture: WriteCapture
) -> None:
    outs = ['{"score": 0.9899773597717285}', '{"score": "high"}', '{"score": 1e5}', '{"score": 7}']
    write_capture(HOUR, [event(f"e{i}", (*CSV_IN, "1"), (*JSON, o)) for i, o in enumerate(outs)])
    report, table = _dataset(tmp_path)
    assert report.rejected == 0
    by_id = dict(zip(table.column("event_id").to_pylist(), table.column("score").to_pylist(), strict=True))
    assert by_id == {"e0": "0.9899773597717285", "e1": "high", "e2": "1e5", "e3": "7"}


# 13. A number in one unit, a string in a later unit of the same partition: one text column, no failed run.
def test_a_type_change_between_units_widens_to_text(tmp_path: Path, write_capture: WriteCapture) -> None:
    numbers = [event(f"n{i}", (*CSV_IN, "1"), (*JSON, f'{{"score": {i + 1}.5}}')) for i in range(200)]
    strings = [event(f"s{i}", (*CSV_IN, "1"), (*JSON, '{"score": "high"}')) for i in range(200)]
    write_capture(HOUR, numbers, name="00-00-000-a.jsonl")
    write_capture(HOUR, strings, name="00-00-001-b.jsonl")
    report = run_realtime(
        str(tmp_path / "capture"),
        str(tmp_path / "out"),
        options=RealtimeOptions(decode=True, unit_bytes=16 * 1024, max_reject_ratio=1.0),
    )
    assert report.rejected == 0 and report.rows_written == 400
    files = sorted((tmp_path / "out").glob("endpoint=*/**/*.parquet"))
    parts = [pq.read_table(f) for f in files]
    scores: dict[str, str] = {}
    for t in parts:
        text = t.column("score").cast(pa.string()).to_pylist()
        scores.update(zip(t.column("event_id").to_pylist(), text, strict=True))
    assert len(scores) == 400
    assert scores["n0"] == "1.5" and scores["n199"] == "200.5" and scores["s5"] == "high"
    assert parts[-1].schema.field("score").type == pa.string()


def test_a_records_prediction_column_does_not_depend_on_its_neighbours() -> None:
    """Found by the corruption campaign: a CSV output in the same batch emptied a JSON output's prediction."""
    json_event = event("j", (*CSV_IN, "1,2"), (*JSON, '{"predicted_label": 1, "score": 0.9}'))
    csv_event = event("c", (*CSV_IN, "3,4"), (*CSV_OUT, "0.25"))
    alone, _ = _decode([json_event])
    mixed, _ = _decode([json_event, csv_event])
    by_id = {r["event_id"]: r["prediction"] for r in mixed}
    assert alone[0]["prediction"] == by_id["j"] == 1
    assert by_id["c"] == 0.25
