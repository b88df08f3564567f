"""Bad input: each case gets a clear outcome and loses nothing (records = rows + rejects + outside)."""

from __future__ import annotations

import gzip
from pathlib import Path

import pyarrow.dataset as ds
import pytest

from engine import NoDataError, RealtimeOptions, RejectLimitError, RunReport, SourceError, run_realtime
from tests.conftest import QUOTED_CSV, WriteCapture, record

H = "2026-11-01T10:15:00Z"
HOUR = "2026/11/01/10"


def _run(tmp_path: Path, **kw: object) -> tuple[RunReport, list[dict[str, object]], list[dict[str, object]]]:
    kw.setdefault("max_reject_ratio", 1.0)
    report = run_realtime(str(tmp_path / "capture"), str(tmp_path / "out"), options=RealtimeOptions(**kw))  # type: ignore[arg-type]
    assert report.balanced, report.to_dict()
    out = tmp_path / "out"
    rows = (
        ds.dataset(out, partitioning="hive", exclude_invalid_files=True).to_table().to_pylist()
        if any(out.glob("endpoint=*"))
        else []
    )
    rej_dir = out / "_rejects"
    rejects = ds.dataset(rej_dir, partitioning="hive").to_table().to_pylist() if rej_dir.exists() else []
    assert report.rows_written == len(rows)
    assert report.rejected == len(rejects)
    return report, rows, rejects


def test_invalid_json_line_is_rejected_and_the_rest_kept(tmp_path: Path, write_capture: WriteCapture) -> None:
    write_capture(HOUR, [record("a", H), "{not json", record("b", H)])
    report, rows, rejects = _run(tmp_path)
    assert sorted(r["event_id"] for r in rows) == ["a", "b"]
    (rej,) = rejects
    assert rej["reason"] == "invalid_json"
    assert rej["source_line"] == 2
    assert rej["raw"] == b"{not json"
    assert str(rej["source_file"]).endswith("/capture/ep/AllTraffic/2026/11/01/10/00-00-000-a.jsonl")
    assert report.records == 3


def test_truncated_last_line(tmp_path: Path, write_capture: WriteCapture) -> None:
    write_capture(HOUR, (record("a", H) + "\n" + record("b", H)[:50]).encode())
    _report, rows, rejects = _run(tmp_path)
    assert [r["event_id"] for r in rows] == ["a"]
    assert [(r["reason"], r["source_line"]) for r in rejects] == [("invalid_json", 2)]


def test_blank_lines_are_not_records_and_line_numbers_stay_true(tmp_path: Path, write_capture: WriteCapture) -> None:
    write_capture(HOUR, ["", record("a", H), "   ", "", record("b", H), ""])
    report, rows, rejects = _run(tmp_path)
    assert sorted((r["event_id"], r["source_line"]) for r in rows) == [("a", 2), ("b", 5)]
    assert report.records == 2 and report.blank_lines == 4 and not rejects


def test_crlf_line_endings(tmp_path: Path, write_capture: WriteCapture) -> None:
    write_capture(HOUR, (record("a", H) + "\r\n\r\n" + record("b", H) + "\r\n").encode())
    _report, rows, rejects = _run(tmp_path)
    assert sorted((r["event_id"], r["source_line"]) for r in rows) == [("a", 1), ("b", 3)]
    assert rows[0]["output_data"] == "0.5"  # no stray \r in values
    assert not rejects


def test_utf8_bom(tmp_path: Path, write_capture: WriteCapture) -> None:
    write_capture(HOUR, b"\xef\xbb\xbf" + (record("a", H) + "\n" + record("b", H) + "\n").encode())
    _report, rows, rejects = _run(tmp_path)
    assert sorted((r["event_id"], r["source_line"]) for r in rows) == [("a", 1), ("b", 2)]
    assert not rejects


def test_missing_event_id_and_unparseable_time(tmp_path: Path, write_capture: WriteCapture) -> None:
    no_id = record("x", H).replace('"eventId":"x",', "")
    empty_id = record("", H)
    bad_time = record("c", "yesterday")
    no_time = record("d", H).replace(f',"inferenceTime":"{H}"', "")
    write_capture(HOUR, [record("a", H), no_id, empty_id, bad_time, no_time])
    report, rows, rejects = _run(tmp_path)
    assert [r["event_id"] for r in rows] == ["a"]
    got = sorted((r["source_line"], r["reason"]) for r in rejects)
    assert got == [
        (2, "missing_event_id"),
        (3, "missing_event_id"),
        (4, "invalid_inference_time"),
        (5, "missing_inference_time"),
    ]
    assert "yesterday" in str(next(r["detail"] for r in rejects if r["source_line"] == 4))
    assert report.rejects_by_reason == {"missing_event_id": 2, "invalid_inference_time": 1, "missing_inference_time": 1}


def test_input_only_and_output_only_records(tmp_path: Path, write_capture: WriteCapture) -> None:
    meta = f'"eventMetadata":{{"eventId":"{{}}","inferenceTime":"{H}"}},"eventVersion":"0"'
    input_only = (
        '{"captureData":{"endpointInput":{"observedContentType":"text/csv","mode":"INPUT","data":"1,2",'
        '"encoding":"CSV"}},' + meta.replace("{}", "in") + "}"
    )
    output_only = (
        '{"captureData":{"endpointOutput":{"observedContentType":"text/csv","mode":"OUTPUT","data":"0.9",'
        '"encoding":"CSV"}},' + meta.replace("{}", "out") + "}"
    )
    write_capture(HOUR, [input_only, output_only])
    _, rows, rejects = _run(tmp_path)
    by_id = {r["event_id"]: r for r in rows}
    assert by_id["in"]["input_data"] == "1,2" and by_id["in"]["output_data"] is None
    assert by_id["in"]["output_encoding"] is None
    assert by_id["out"]["output_data"] == "0.9" and by_id["out"]["input_data"] is None
    assert not rejects


def test_extra_fields_and_reordered_keys(tmp_path: Path, write_capture: WriteCapture) -> None:
    reordered = (
        f'{{"eventVersion":"0","eventMetadata":{{"inferenceTime":"{H}","eventId":"r","invocationSource":'
        '"ShadowExperiment","future":{"nested":[1,2]}},"captureData":{"endpointOutput":{"encoding":"CSV",'
        '"data":"0.1","mode":"OUTPUT","observedContentType":"text/csv"},"endpointInput":{"encoding":"CSV",'
        '"data":"9,9","mode":"INPUT","observedContentType":"text/csv"}},"somethingNew":{"a":[{"b":null}]}}'
    )
    write_capture(HOUR, [reordered, record("a", H)])
    report, rows, rejects = _run(tmp_path)
    r = {x["event_id"]: x for x in rows}["r"]
    assert (r["input_data"], r["output_data"], r["event_version"]) == ("9,9", "0.1", "0")
    assert not rejects and report.fallback_units == 0  # handled on the fast path


def test_custom_attributes_as_array_becomes_json_text(tmp_path: Path, write_capture: WriteCapture) -> None:
    line = record("a", H).replace('"eventId"', '"customAttributes":["k=v","x"],"eventId"')
    write_capture(HOUR, [line, record("b", H).replace('"eventId"', '"customAttributes":"plain","eventId"')])
    _, rows, _ = _run(tmp_path)
    got = {r["event_id"]: r["custom_attributes"] for r in rows}
    assert got == {"a": '["k=v","x"]', "b": "plain"}


def test_fractional_second_times(tmp_path: Path, write_capture: WriteCapture) -> None:
    write_capture(HOUR, [record("a", "2026-11-01T10:15:00.999Z"), record("b", "2026-11-01T10:59:59.999999")])
    _, rows, _ = _run(tmp_path)
    times = {r["event_id"]: r["inference_time"] for r in rows}
    assert times["a"].microsecond == 999000 and times["b"].second == 59  # type: ignore[attr-defined]


def test_not_an_object_and_wrong_types(tmp_path: Path, write_capture: WriteCapture) -> None:
    numeric_id = record("a", H).replace('"eventId":"a"', '"eventId":17')
    write_capture(HOUR, ["[1,2,3]", '"just a string"', numeric_id, record("ok", H)])
    _, rows, rejects = _run(tmp_path)
    assert [r["event_id"] for r in rows] == ["ok"]
    assert sorted((r["source_line"], r["reason"]) for r in rejects) == [
        (1, "not_an_object"),
        (2, "not_an_object"),
        (3, "missing_event_id"),
    ]


def test_huge_line_is_rejected_by_max_line_bytes(tmp_path: Path, write_capture: WriteCapture) -> None:
    big = record("big", H, data="9," * 5000)
    write_capture(HOUR, [record("a", H), big])
    _, rows, rejects = _run(tmp_path, max_line_bytes=4096)
    assert [r["event_id"] for r in rows] == ["a"]
    assert [(r["reason"], r["source_line"]) for r in rejects] == [("line_too_long", 2)]


def test_invalid_utf8_is_rejected(tmp_path: Path, write_capture: WriteCapture) -> None:
    write_capture(HOUR, (record("a", H) + "\n").encode() + b'{"eventMetadata":{"eventId":"\xff\xfe"}}\n')
    _, rows, rejects = _run(tmp_path)
    assert [r["event_id"] for r in rows] == ["a"]
    assert [r["reason"] for r in rejects] == ["invalid_json"]


def test_gzip_objects_and_corrupt_gzip(tmp_path: Path, write_capture: WriteCapture) -> None:
    body = "".join(record(f"g{i}", H) + "\n" for i in range(50)).encode()
    write_capture(HOUR, gzip.compress(body), name="00-00-000-a.jsonl.gz")
    write_capture(HOUR, gzip.compress(body)[:-30], name="00-00-001-b.jsonl.gz")
    _report, rows, rejects = _run(tmp_path)
    assert len([r for r in rows if r["source_file"].endswith("a.jsonl.gz")]) == 50  # type: ignore[union-attr]
    # Nothing from an unverified gzip stream is a row: each inflated line is a reject with its line
    # number and bytes, and one more reject stands for what could not be inflated at all.
    assert not [r for r in rows if r["source_file"].endswith("b.jsonl.gz")]  # type: ignore[union-attr]
    assert {r["reason"] for r in rejects} == {"corrupt_gzip"}
    assert all(r["source_file"].endswith("b.jsonl.gz") for r in rejects)  # type: ignore[union-attr]
    lined = [r for r in rejects if r["source_line"] is not None]
    assert sorted(r["source_line"] for r in lined) == list(range(1, len(lined) + 1))  # type: ignore[type-var]
    raws = [r["raw"] for r in sorted(lined, key=lambda r: r["source_line"])]  # type: ignore[arg-type,return-value]
    lines = body.split(b"\n")
    assert raws[:-1] == lines[: len(lined) - 1] and lines[len(lined) - 1].startswith(raws[-1])  # type: ignore[arg-type]
    assert len(rejects) == len(lined) + 1


def test_empty_file(tmp_path: Path, write_capture: WriteCapture) -> None:
    write_capture(HOUR, b"", name="00-00-000-empty.jsonl")
    write_capture(HOUR, [record("a", H)], name="00-00-001-b.jsonl")
    report, rows, rejects = _run(tmp_path)
    assert report.objects == 2 and report.records == 1 and len(rows) == 1 and not rejects


def test_window_with_no_captures_is_an_empty_report(tmp_path: Path, write_capture: WriteCapture) -> None:
    write_capture(HOUR, [record("a", H)])
    report, rows, _rejects = _run(tmp_path, start="2026-12-01T00", end="2026-12-01T05")
    assert report.status == "committed" and report.records == 0 and not rows
    assert (tmp_path / "out" / "_SUCCESS").exists()
    assert "no capture records" in report.message


def test_empty_window_with_require_data_fails(tmp_path: Path, write_capture: WriteCapture) -> None:
    write_capture(HOUR, [record("a", H)])
    with pytest.raises(NoDataError):
        run_realtime(
            str(tmp_path / "capture"),
            str(tmp_path / "out"),
            options=RealtimeOptions(start="2026-12-01T00", end="2026-12-01T05", require_data=True),  # type: ignore[arg-type]
        )
    assert not (tmp_path / "out" / "_SUCCESS").exists()


def test_missing_source(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=r"capture source not found: file://.*/nowhere"):
        run_realtime(str(tmp_path / "nowhere"), str(tmp_path / "out"))


def test_reject_ratio_exceeded_commits_rejects_but_no_data(tmp_path: Path, write_capture: WriteCapture) -> None:
    write_capture(HOUR, [record("a", H), "garbage", "more garbage"])
    with pytest.raises(RejectLimitError, match=r"2 of 3 records rejected \(66.67%\)"):
        run_realtime(str(tmp_path / "capture"), str(tmp_path / "out"), options=RealtimeOptions())
    out = tmp_path / "out"
    assert not (out / "_SUCCESS").exists()
    assert not list(out.glob("endpoint=*"))
    assert ds.dataset(out / "_rejects", partitioning="hive").count_rows() == 2
    assert not (out / "_temporary").exists()


def test_quoted_record_in_the_real_key_layout(tmp_path: Path, write_capture: WriteCapture) -> None:
    write_capture(
        "2021/05/18/00",
        [QUOTED_CSV],
        endpoint="DEMO-xgb-churn-model-quality-monitor-2021-05-18-0013",
        name="20-45-950-c13afd5c-02c6-49bb-89d3-3e725c81f9e7.jsonl",
    )
    _, rows, _ = _run(tmp_path)
    assert rows[0]["endpoint"] == "DEMO-xgb-churn-model-quality-monitor-2021-05-18-0013"
    assert (rows[0]["year"], rows[0]["month"], rows[0]["day"], rows[0]["hour"]) == (2021, 5, 18, 0)


def _reference_reject(line: bytes) -> tuple[str, str] | None:
    """What the per-line reference (orjson) says of one line: (reason, detail), or None for a kept record."""
    import orjson

    try:
        rec = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        return "invalid_json", str(exc)
    if not isinstance(rec, dict):
        return "not_an_object", f"a JSON {type(rec).__name__} is not a capture record"
    return None


def test_a_unit_of_mixed_garbage_rejects_every_line_exactly_as_the_parser_would(
    tmp_path: Path, write_capture: WriteCapture
) -> None:
    # Enough lines for the per-line path's groups (65,536 lines) and its vectorized check of lines that cannot begin
    # JSON; every kind of bad line next to good records, so that a reject on the wrong line or with another
    # message shows.
    kinds = [b"x", b"  x", b"{bad", b"[1", b"123", b'"text"', b"\xff\xfe", b"#", b"\x00", b"}", b"nul", b"\tz"]
    lines = [record(f"e{i}", H).encode() if i % 7 == 0 else kinds[i % len(kinds)] for i in range(90_000)]
    path = write_capture(HOUR, b"".join(line + b"\n" for line in lines))
    on_disk = path.read_bytes().split(b"\n")[:-1]
    report, rows, rejects = _run(tmp_path)
    expected = {n: _reference_reject(line) for n, line in enumerate(on_disk, start=1)}
    want = {n: r for n, r in expected.items() if r is not None}
    got = {int(r["source_line"]): (r["reason"], r["detail"]) for r in rejects}  # type: ignore[call-overload]
    assert got == want
    raws = {int(r["source_line"]): r["raw"] for r in rejects}  # type: ignore[call-overload]
    assert all(raws[n] == on_disk[n - 1] for n in want)
    (uri,) = {str(r["source_file"]) for r in rejects}
    assert uri.endswith(str(path.relative_to(tmp_path / "capture")))
    assert sorted(int(str(r["event_id"])[1:]) for r in rows) == [i for i in range(90_000) if i % 7 == 0]
    assert report.rejects_by_reason["invalid_json"] + report.rejects_by_reason["not_an_object"] == len(want)
