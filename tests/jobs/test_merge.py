"""The merge of predictions with ground truth: join keys, label windows, duplicates, label decoding, batch IDs,
SageMaker's merged layout (field by field against the records quoted in the formats reference), rejects, the CLI,
readers, a property test against a naive join, and the synth tree end to end."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import orjson
import polars as pl
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine import (
    MergeOptions,
    OptionsError,
    RealtimeOptions,
    RejectLimitError,
    read_capture,
    read_ground_truth,
    run_merge,
)
from engine.io.storage import open_location
from engine.jobs.realtime import iter_capture, run_realtime
from engine.options import parse_duration
from engine.report import RunReport
from engine.sources.predictions import dataset_predictions, plan_dataset, scan_dataset
from engine.synth import SynthOptions, synth
from engine.tables import table_spec
from tests.conftest import QUOTED_CSV, QUOTED_MIXED, WriteCapture, record

UTC = timezone.utc

# The ground-truth records quoted in the formats reference (section 2.1), verbatim.
GT_DOCUMENTED = (
    '{"groundTruthData": {"data": "1", "encoding": "CSV"}, "eventMetadata": {"eventId": "aaaa-bbbb-cccc"}, '
    '"eventVersion": "0"}'
)
GT_SDK_FIXTURE = (
    '{"groundTruthData":{"data":"1","encoding":"CSV"},"eventMetadata":{"eventId":'
    '"74b0dd56-e7c8-368e-94b1-14a138a96000","inferenceTime":"{%s}"},"eventVersion":"0"}'
)
# The merged records quoted in the formats reference (section 2.5), verbatim ("…" included).
MERGED_ENDPOINT = (
    '{"eventVersion":"0","groundTruthData":{"data":"{\\"label\\": 0}","encoding":"JSON"},"captureData":'
    '{"endpointInput":{"data":"{\\"features\\":[42,2,222756,9,13,0,9,4,4,1,7430,0,40,37]}","encoding":"JSON",'
    '"mode":"INPUT","observedContentType":"application/jsonlines"},"endpointOutput":{"data":'
    '"{\\"predicted_label\\":1,\\"score\\":0.90517783164978}\\n","encoding":"JSON","mode":"OUTPUT",'
    '"observedContentType":"application/jsonlines"}},"eventMetadata":{"eventId":'
    '"d7f04b0c-e3f3-4a55-b0be-47c4942e9ee8","inferenceId":"95","inferenceTime":"2023-01-19T06:04:56Z"}}'
)
MERGED_BATCH_CSV = (
    '{"eventMetadata":{"eventId":"bd6c3be0-5902-4008-afc2-538b3be3bf2c"},"eventVersion":"0","groundTruthData":'
    '{"data":"1","encoding":"CSV"},"captureData":{"batchTransformOutput":{"data":'
    '"186,0.1,137.8,…,1.4,0.55,0.01584203727543354","encoding":"CSV"}}}'
)
MERGED_BATCH_JSONL = (
    '{"eventMetadata":{"eventId":"ae4ec948-edc0-4195-be9c-0b15b6ca114f"},"eventVersion":"0","groundTruthData":'
    '{"data":"{\\"label\\": 1}","encoding":"JSON"},"captureData":{"batchTransformOutput":{"data":'
    '"{\\"SageMakerOutput\\":{\\"predicted_label\\":1,\\"score\\":0.989977359771728},\\"features\\":'
    '[28,2,133937,9,13,2,0,0,4,1,15024,0,55,37]}","encoding":"JSON"}}}'
)
LABEL_COLUMNS = ["label_data", "label_encoding", "label", "label_value", "label_file", "label_hour", "label_line"]
COUNT_NAMES = [
    "predictions",
    "labels",
    "duplicate_labels",
    "matched",
    "unmatched_predictions",
    "unmatched_labels",
    "duplicate_prediction_keys",
]


def label(key: str, data: str = "1", encoding: str = "CSV", **meta: str) -> str:
    """A ground-truth line as SageMaker documents it."""
    return json.dumps(
        {
            "groundTruthData": {"data": data, "encoding": encoding},
            "eventMetadata": {"eventId": key, **meta},
            "eventVersion": "0",
        }
    )


def write_lines(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines))
    return path


@pytest.fixture
def gt(tmp_path: Path) -> Callable[..., Path]:
    """Write a ground-truth object at {tmp}/gt/{yyyy/mm/dd/hh}/{name}."""

    def write(hour: str, lines: list[str], name: str = "0000.jsonl") -> Path:
        return write_lines(tmp_path / "gt" / hour / name, lines)

    return write


def read(dest: Path) -> list[dict[str, Any]]:
    """The merged rows as a reader sees them (the SageMaker layout under merge/ is not Parquet)."""
    table = ds.dataset(dest, format="parquet", partitioning="hive", ignore_prefixes=["_", ".", "merge"]).to_table()
    rows: list[dict[str, Any]] = table.to_pylist()
    for row in rows:
        if "endpoint" in row:
            row["endpoint"], row["variant"] = str(row["endpoint"]), str(row["variant"])
    return sorted(rows, key=lambda r: (str(r.get("event_id") or r.get("inference_id")), r.get("record_index") or 0))


def merge(tmp_path: Path, out: str = "out", **kw: Any) -> tuple[RunReport, list[dict[str, Any]]]:
    sources = {k: kw.pop(k) for k in ("captures", "batch", "predictions") if k in kw}
    if not sources:
        sources["captures"] = str(tmp_path / "capture")
    report = run_merge(
        ground_truth=str(tmp_path / "gt"), dest=str(tmp_path / out), options=MergeOptions(**kw), **sources
    )
    assert report.status == "committed" and report.balanced
    return report, read(tmp_path / out)


def hour(h: str) -> datetime:
    return datetime.fromisoformat(h).replace(tzinfo=UTC)


# -- join keys ----------------------------------------------------------------------------------------------


def test_quoted_capture_with_inference_id_joins_on_inference_id(
    tmp_path: Path, write_capture: WriteCapture, gt: Callable[..., Path]
) -> None:
    write_capture("2021/05/18/00", [QUOTED_CSV], endpoint="DEMO-xgb-churn", name="28-04-146-x.jsonl")
    # The label of the inferenceId matches; one keyed by the eventId must not, since the capture has an inferenceId.
    path = gt("2021/05/18/00", [label("59", "1"), label("09e668ab-172a-4ef1-9dc3-696d52879010", "0")])
    report, rows = merge(tmp_path)
    (row,) = rows
    assert row["event_id"] == "09e668ab-172a-4ef1-9dc3-696d52879010" and row["inference_id"] == "59"
    assert row["endpoint"] == "DEMO-xgb-churn" and row["output_data"] == "0.036397725343704224"
    assert {k: row[k] for k in LABEL_COLUMNS} == {
        "label_data": "1",
        "label_encoding": "CSV",
        "label": "1",
        "label_value": 1.0,
        "label_file": path.as_uri(),
        "label_hour": datetime(2021, 5, 18, 0, tzinfo=UTC),
        "label_line": 1,
    }
    assert report.counts == {
        "predictions": 1,
        "labels": 2,
        "duplicate_labels": 0,
        "matched": 1,
        "unmatched_predictions": 0,
        "unmatched_labels": 1,
        "duplicate_prediction_keys": 0,
    }
    # records: the 2 labels and the 1 capture event this run decoded.
    assert (report.records, report.events_written, report.rows_written) == (3, 3, 1)


def test_quoted_capture_without_inference_id_joins_on_event_id(
    tmp_path: Path, write_capture: WriteCapture, gt: Callable[..., Path]
) -> None:
    write_capture("2021/11/30/04", [QUOTED_MIXED])
    gt("2021/11/30/04", [label("28cc8646-bb47-4a96-92fc-d04fc2651286", '{"label": 0}', "JSON")])
    report, rows = merge(tmp_path)
    (row,) = rows
    assert row["inference_id"] is None and row["event_id"] == "28cc8646-bb47-4a96-92fc-d04fc2651286"
    assert (row["label_data"], row["label_encoding"], row["label"], row["label_value"]) == (
        '{"label": 0}',
        "JSON",
        "0",
        0.0,
    )
    assert report.counts["matched"] == 1 and report.partitions == {
        "endpoint=ep/variant=AllTraffic/year=2021/month=11/day=30/hour=04": 1
    }


# -- the label window ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("delay", "found"),
    [("24h", ["k1", "k2"]), ("4h", ["k1"]), ("30h", ["k1", "k2", "k3"]), ("0", ["k1"])],
)
def test_labels_arrive_hours_later_in_later_hour_folders(
    tmp_path: Path, write_capture: WriteCapture, gt: Callable[..., Path], delay: str, found: list[str]
) -> None:
    write_capture(
        "2026/11/01/00",
        [
            record("e1", "2026-11-01T00:10:00Z", inference_id="k1"),
            record("e2", "2026-11-01T00:20:00Z", inference_id="k2"),
            record("e3", "2026-11-01T00:30:00Z", inference_id="k3"),
            record("e4", "2026-11-01T01:30:00Z", inference_id="k4"),  # outside the prediction window
        ],
    )
    gt("2026/11/01/00", [label("k1")])
    gt("2026/11/01/05", [label("k2", "0")])  # collected 5 hours later
    gt("2026/11/02/06", [label("k3")])  # 30 hours later
    gt("2026/11/01/03", [label("k4")])  # in the label window, but its prediction is outside the window
    report, rows = merge(tmp_path, start="2026-11-01T00", end="2026-11-01T01", label_delay=delay, how="left")
    assert [r["inference_id"] for r in rows if r["label"] is not None] == found
    assert [r["inference_id"] for r in rows] == ["k1", "k2", "k3"]
    hours = {"k1": "2026-11-01T00", "k2": "2026-11-01T05", "k3": "2026-11-02T06"}
    assert {r["inference_id"]: r["label_hour"] for r in rows if r["label"] is not None} == {
        k: hour(hours[k]) for k in found
    }
    # Labels outside the label window are not even read (only the window's hour folders are listed).
    in_window = {"24h": 3, "4h": 2, "30h": 4, "0": 1}[delay]
    assert report.counts["labels"] == in_window
    assert report.out_of_window == 1 and report.counts["predictions"] == 3


def test_label_window_hours() -> None:
    # Labels are looked for from one hour before the window (label_lead, default 1h: uploads land in H-1).
    o = MergeOptions(start="2026-11-01T13:30", end="2026-11-01T15", label_delay="90m")  # type: ignore[arg-type]
    assert o.label_hours() == (hour("2026-11-01T12"), hour("2026-11-01T16"))
    o = MergeOptions(start="2026-11-01T13:30", end="2026-11-01T15", label_delay="90m", label_lead="0")  # type: ignore[arg-type]
    assert o.label_hours() == (hour("2026-11-01T13"), hour("2026-11-01T16"))
    assert MergeOptions(
        start="2026-11-01T13", end="2026-11-01T14:00:01", label_delay="0", label_lead="0"
    ).label_hours() == (  # type: ignore[arg-type]
        hour("2026-11-01T13"),
        hour("2026-11-01T14"),
    )
    assert MergeOptions().label_hours() is None
    assert MergeOptions().label_delay == timedelta(hours=24)
    assert [parse_duration(t) for t in ("24h", "90m", "2d", "1h30m", "3600", "45s")] == [
        timedelta(hours=24),
        timedelta(minutes=90),
        timedelta(days=2),
        timedelta(minutes=90),
        timedelta(hours=1),
        timedelta(seconds=45),
    ]
    for bad in ("soon", "", "1x"):
        with pytest.raises(OptionsError, match="invalid duration"):
            parse_duration(bad)
    with pytest.raises(OptionsError, match="how"):
        MergeOptions(how="outer")  # type: ignore[arg-type]
    with pytest.raises(OptionsError, match="negative"):
        MergeOptions(label_delay=timedelta(hours=-1))
    with pytest.raises(OptionsError, match="decod"):
        MergeOptions(sagemaker_format=True, decode=True)
    with pytest.raises(OptionsError, match="schedule_name"):
        MergeOptions(schedule_name="a/b")
    assert orjson.loads(orjson.dumps(MergeOptions(label_delay="1h30m").to_dict()))["label_delay"] == "1h30m"  # type: ignore[arg-type]


# -- duplicates ---------------------------------------------------------------------------------------------


def test_latest_collected_label_wins_and_duplicates_are_counted(
    tmp_path: Path, write_capture: WriteCapture, gt: Callable[..., Path]
) -> None:
    t = "2026-11-01T00:00:00Z"
    write_capture(
        "2026/11/01/00",
        [
            record("ea", t, inference_id="a"),
            record("eb", t, inference_id="b"),
            record("ec", t, inference_id="c"),
            record("ed", t, inference_id="d"),
            record("e1", t, inference_id="e"),
            record("e2", t, inference_id="e"),  # a second prediction with the same key
        ],
    )
    # a: a later hour wins, whatever the file names; b: same hour, the later file; c: same file, the later line;
    # d: two records of one array line, the later one.
    gt("2026/11/01/03", [label("a", "late")], name="a.jsonl")
    gt("2026/11/01/01", [label("a", "early")], name="z.jsonl")
    gt("2026/11/01/02", [label("b", "first")], name="x.jsonl")
    b = gt("2026/11/01/02", [label("b", "second")], name="y.jsonl")
    c = gt("2026/11/01/04", [label("c", "first"), label("c", "second"), label("e", "1")])
    arr = json.dumps([json.loads(label("d", "first")), json.loads(label("d", "second"))])
    d = gt("2026/11/01/05", [arr])
    report, rows = merge(tmp_path)
    got = {r["event_id"]: (r["label"], r["label_hour"], r["label_file"], r["label_line"]) for r in rows}
    assert got == {
        "ea": ("late", hour("2026-11-01T03"), (tmp_path / "gt/2026/11/01/03/a.jsonl").as_uri(), 1),
        "eb": ("second", hour("2026-11-01T02"), b.as_uri(), 1),
        "ec": ("second", hour("2026-11-01T04"), c.as_uri(), 2),
        "ed": ("second", hour("2026-11-01T05"), d.as_uri(), 1),
        "e1": ("1", hour("2026-11-01T04"), c.as_uri(), 3),
        "e2": ("1", hour("2026-11-01T04"), c.as_uri(), 3),
    }
    assert report.counts["labels"] == 9 and report.counts["duplicate_labels"] == 4
    assert report.counts["duplicate_prediction_keys"] == 1 and report.counts["matched"] == 6
    assert report.counts["unmatched_labels"] == 0


# -- unmatched both ways ------------------------------------------------------------------------------------


def test_unmatched_predictions_and_labels_inner_and_left(
    tmp_path: Path, write_capture: WriteCapture, gt: Callable[..., Path]
) -> None:
    t = "2026-11-01T00:00:00Z"
    write_capture("2026/11/01/00", [record(f"p{i}", t) for i in range(1, 5)])
    gt("2026/11/01/00", [label("p1"), label("p2", "0"), label("x1"), label("x2"), label("x3")])
    inner, rows = merge(tmp_path, out="inner")
    assert [r["event_id"] for r in rows] == ["p1", "p2"]
    expected = dict(zip(COUNT_NAMES, [4, 5, 0, 2, 2, 3, 0], strict=True))
    assert inner.counts == expected and inner.rows_written == 2

    left, rows = merge(tmp_path, out="left", how="left")
    assert left.counts == expected and left.rows_written == 4
    assert [(r["event_id"], r["label"]) for r in rows] == [("p1", "1"), ("p2", "0"), ("p3", None), ("p4", None)]
    assert all(r[c] is None for r in rows[2:] for c in LABEL_COLUMNS)


# -- label decoding -----------------------------------------------------------------------------------------


def test_csv_and_json_labels_decode_to_label_and_label_value(
    tmp_path: Path, write_capture: WriteCapture, gt: Callable[..., Path]
) -> None:
    cases = {
        "csv": ("1", "CSV", "1", 1.0),
        "csv-crlf": (" 0.25 \r\n", "CSV", "0.25", 0.25),
        "csv-text": ("cat", "CSV", "cat", None),
        "csv-several": ("1\n0\n1", "CSV", None, None),  # several values, but the row is a whole event
        "json": ('{"label": 0}', "JSON", "0", 0.0),
        "json-text": ('{"label": "dog"}', "JSON", "dog", None),
        "json-scalar": ("0.5", "JSON", "0.5", 0.5),
        "json-one-instance": ('{"instances": [{"label": 1}]}', "JSON", "1", 1.0),
        "json-several": ('{"instances": [{"label": 1}, {"label": 0}]}', "JSON", None, None),
        "json-other": ('{"target": 1}', "JSON", None, None),
        "base64": ("MQ==", "BASE64", None, None),
    }
    write_capture("2026/11/01/00", [record(k, "2026-11-01T00:00:00Z") for k in cases])
    gt("2026/11/01/00", [label(k, data, enc) for k, (data, enc, _, _) in cases.items()])
    _, rows = merge(tmp_path)
    got = {r["event_id"]: (r["label_data"], r["label_encoding"], r["label"], r["label_value"]) for r in rows}
    assert got == cases


def test_decoded_records_take_their_own_label(
    tmp_path: Path, write_capture: WriteCapture, gt: Callable[..., Path]
) -> None:
    csv_event = json.dumps(
        {
            "captureData": {
                "endpointInput": {
                    "observedContentType": "text/csv",
                    "mode": "INPUT",
                    "data": "1,2\n3,4\n5,6",
                    "encoding": "CSV",
                },
                "endpointOutput": {
                    "observedContentType": "text/csv",
                    "mode": "OUTPUT",
                    "data": "0.1\n0.9\n0.2",
                    "encoding": "CSV",
                },
            },
            "eventMetadata": {"eventId": "csv-event", "inferenceTime": "2026-11-01T00:00:01Z"},
            "eventVersion": "0",
        }
    )
    json_event = json.dumps(
        {
            "captureData": {
                "endpointInput": {
                    "observedContentType": "application/json",
                    "mode": "INPUT",
                    "data": '{"instances": [{"features": [1, 2]}, {"features": [3, 4]}]}',
                    "encoding": "JSON",
                },
                "endpointOutput": {
                    "observedContentType": "application/json",
                    "mode": "OUTPUT",
                    "data": '{"predictions": [{"score": 0.8}, {"score": 0.3}]}',
                    "encoding": "JSON",
                },
            },
            "eventMetadata": {"eventId": "json-event", "inferenceId": "j1", "inferenceTime": "2026-11-01T00:00:02Z"},
            "eventVersion": "0",
        }
    )
    write_capture("2026/11/01/00", [csv_event, json_event])
    gt(
        "2026/11/01/00",
        [label("csv-event", "1\n0\n1\n"), label("j1", '{"instances": [{"label": 1}, {"label": 0}]}', "JSON")],
    )
    report, rows = merge(tmp_path, decode=True)
    got = [(r["event_id"], r["record_index"], r["label"], r["label_value"]) for r in rows]
    assert got == [
        ("csv-event", 0, "1", 1.0),
        ("csv-event", 1, "0", 0.0),
        ("csv-event", 2, "1", 1.0),
        ("json-event", 0, "1", 1.0),
        ("json-event", 1, "0", 0.0),
    ]
    assert [r["prediction"] for r in rows[:3]] == [0.1, 0.9, 0.2] and [r["score"] for r in rows[3:]] == [0.8, 0.3]
    assert report.counts["predictions"] == report.counts["matched"] == 5
    assert report.counts["duplicate_prediction_keys"] == 0  # records of one event differ by record_index


# -- batch transform predictions ----------------------------------------------------------------------------


def batch_dataset(root: Path, rows: list[dict[str, Any]], when: str = "2026-11-01T00:12:13Z") -> Path:
    """A dataset in the `batch` job's layout: DEST/year=/month=/day=/hour=/part-*.parquet, batch table columns."""
    schema = table_spec("batch").file_schema
    t = datetime.fromisoformat(when.replace("Z", "+00:00"))
    defaults = {
        "manifest_file": "s3://b/capture/output/2026/11/01/00/m.json",
        "input_file": "s3://b/in/data-0.csv",
        "output_file": "s3://b/out/data-0.csv.out",
        "record_index": 0,
        "inference_time": t,
        "input_encoding": "CSV",
        "input_data": "1,2,3",
        "output_encoding": "CSV",
        "joined": False,
    }
    full = [{**defaults, "line": i + 1, **r} for i, r in enumerate(rows)]
    table = pa.Table.from_pylist(full, schema=schema)
    path = root / f"year={t:%Y}" / f"month={t:%m}" / f"day={t:%d}" / f"hour={t:%H}" / "part-0.parquet"
    path.parent.mkdir(parents=True)
    pq.write_table(table, path)
    return root


def test_batch_predictions_join_on_inference_id(tmp_path: Path, gt: Callable[..., Path]) -> None:
    preds = batch_dataset(
        tmp_path / "batch",
        [
            {"inference_id": "id-1", "output_data": "0.9"},
            {"inference_id": "id-2", "output_data": "0.2"},
            {"inference_id": None, "output_data": "0.5"},  # no GenerateInferenceId: cannot be joined
        ],
    )
    gt("2026/11/01/02", [label("id-1", "1"), label("id-2", '{"label": 0}', "JSON"), label("line-3")])
    report, rows = merge(tmp_path, predictions=str(preds))
    assert [(r["inference_id"], r["output_data"], r["label"]) for r in rows] == [
        ("id-1", "0.9", "1"),
        ("id-2", "0.2", "0"),
    ]
    assert "endpoint" not in rows[0] and rows[0]["manifest_file"] == "s3://b/capture/output/2026/11/01/00/m.json"
    assert report.partitions == {"year=2026/month=11/day=01/hour=00": 2}
    assert report.counts["unmatched_predictions"] == 1 and report.counts["unmatched_labels"] == 1
    assert report.records == 3  # the labels; the dataset's rows were decoded by the batch run
    # The rejects of a run without capture have no endpoint level either.
    assert not (tmp_path / "out" / "_rejects").exists()


def test_a_dataset_plan_is_plain_data_and_its_parts_read_in_any_grouping_give_the_same_rows(tmp_path: Path) -> None:
    # The plan a distributed executor ships to its workers: row groups as data, read back by the same scan.
    s = synth(str(tmp_path / "sample"), SynthOptions(records=600, hours=2, endpoints=1, variants=2))
    run_realtime(
        s.capture_root, str(tmp_path / "rt"), options=RealtimeOptions(unit_bytes=20_000, row_group_bytes=5_000)
    )
    options = MergeOptions(start="2026-11-01T00:00:00Z", end="2026-11-01T01:30:00Z")
    loc = open_location(str(tmp_path / "rt"))
    plan = plan_dataset(loc, options)
    assert plan.kind == "realtime" and plan.raw and len({p.path for p in plan.parts}) < len(plan.parts)
    every = plan_dataset(loc, MergeOptions())
    assert len(plan.parts) < len(every.parts)  # the later hour's partitions and row groups are left out
    assert all(p.bytes > 0 and dict(p.partition)["variant"] in p.path for p in plan.parts)
    report = RunReport(command="merge", source="", dest=None, options={})
    expected = pa.Table.from_batches(list(dataset_predictions(str(tmp_path / "rt"), options, report).batches))
    assert report.objects == len(plan.files) and report.records == 0
    for grouping in ([list(plan.parts)], [[p] for p in reversed(plan.parts)]):
        rows = [b for parts in grouping for b in scan_dataset(loc, parts, options)]
        got = pa.Table.from_batches(rows)
        assert got.num_rows == expected.num_rows > 0
        assert got.sort_by("event_id").equals(expected.sort_by("event_id"))
    times = expected.column("inference_time").cast(pa.int64()).to_numpy()
    assert times.max() < 5_400_000_000 + int(datetime(2026, 11, 1, tzinfo=UTC).timestamp() * 1e6)


# -- SageMaker's merged layout ------------------------------------------------------------------------------


def test_sagemaker_layout_endpoint_record_is_the_quoted_merged_record(
    tmp_path: Path, write_capture: WriteCapture, gt: Callable[..., Path]
) -> None:
    merged = json.loads(MERGED_ENDPOINT)
    capture = {k: v for k, v in merged.items() if k != "groundTruthData"}
    write_capture("2023/01/19/06", [json.dumps(capture)], endpoint="DEMO-ll-adult", name="04-56-000-x.jsonl")
    gt(
        "2023/01/19/07",
        [json.dumps({"groundTruthData": merged["groundTruthData"], "eventMetadata": {"eventId": "95"}})],
    )
    report, rows = merge(tmp_path, sagemaker_format=True)
    assert len(rows) == 1
    (path,) = (tmp_path / "out" / "_sagemaker" / "merge").rglob("*.jsonl")
    rel = path.relative_to(tmp_path / "out" / "_sagemaker").as_posix()
    assert rel.startswith("merge/DEMO-ll-adult/AllTraffic/2023/01/19/06/part-") and path.name.endswith(".jsonl")
    (line,) = path.read_text().splitlines()
    got = json.loads(line)
    assert got == merged
    # Field by field, and in SageMaker's key order too.
    assert list(got) == list(merged)
    for key in merged:
        assert got[key] == merged[key], key
    for side in ("endpointInput", "endpointOutput"):
        assert list(got["captureData"][side]) == list(merged["captureData"][side])
    assert list(got["eventMetadata"]) == ["eventId", "inferenceId", "inferenceTime"]
    # Committed with the run: nothing left under _temporary, and the report lists the Parquet partition.
    assert not (tmp_path / "out" / "_temporary").exists() and report.rows_written == 1


def test_sagemaker_layout_batch_records_are_the_quoted_merged_records(tmp_path: Path, gt: Callable[..., Path]) -> None:
    quoted = [json.loads(MERGED_BATCH_CSV), json.loads(MERGED_BATCH_JSONL)]
    preds = batch_dataset(
        tmp_path / "batch",
        [
            {
                "inference_id": r["eventMetadata"]["eventId"],
                "output_data": r["captureData"]["batchTransformOutput"]["data"],
                "output_encoding": r["captureData"]["batchTransformOutput"]["encoding"],
            }
            for r in quoted
        ],
    )
    gt(
        "2026/11/01/01",
        [
            json.dumps(
                {"groundTruthData": r["groundTruthData"], "eventMetadata": r["eventMetadata"], "eventVersion": "0"}
            )
            for r in quoted
        ],
    )
    merge(tmp_path, predictions=str(preds), sagemaker_format=True, schedule_name="my-schedule")
    (path,) = (tmp_path / "out" / "_sagemaker" / "merge").rglob("*.jsonl")
    rel = path.relative_to(tmp_path / "out" / "_sagemaker").as_posix()
    assert rel.startswith("merge/my-schedule/2026/11/01/00/part-")
    got = sorted(
        (json.loads(line) for line in path.read_text().splitlines()), key=lambda r: r["eventMetadata"]["eventId"]
    )
    want = sorted(quoted, key=lambda r: r["eventMetadata"]["eventId"])
    assert got == want
    assert [list(r) for r in got] == [list(r) for r in want]


def test_sagemaker_layout_needs_raw_predictions(
    tmp_path: Path, write_capture: WriteCapture, gt: Callable[..., Path]
) -> None:
    write_capture("2026/11/01/00", [record("a", "2026-11-01T00:00:00Z")])
    gt("2026/11/01/00", [label("a")])
    run_realtime(str(tmp_path / "capture"), str(tmp_path / "decoded"), options=RealtimeOptions(decode=True))
    with pytest.raises(OptionsError, match="raw predictions"):
        run_merge(
            predictions=str(tmp_path / "decoded"),
            ground_truth=str(tmp_path / "gt"),
            dest=str(tmp_path / "out"),
            options=MergeOptions(sagemaker_format=True),
        )
    assert not (tmp_path / "out" / "_SUCCESS").exists()
    # Decoded datasets merge fine into Parquet, one row per record.
    _, rows = merge(tmp_path, predictions=str(tmp_path / "decoded"))
    assert [(r["event_id"], r["record_index"], r["f0"], r["label"]) for r in rows] == [("a", 0, 1.0, "1")]


def test_sagemaker_layout_of_left_merges_holds_matched_records_only(
    tmp_path: Path, write_capture: WriteCapture, gt: Callable[..., Path]
) -> None:
    t = "2026-11-01T00:00:00.250Z"
    write_capture("2026/11/01/00", [record("a", t), record("b", t)])
    gt("2026/11/01/00", [label("a")])
    _, rows = merge(tmp_path, how="left", sagemaker_format=True)
    assert len(rows) == 2
    (path,) = (tmp_path / "out" / "_sagemaker" / "merge").rglob("*.jsonl")
    (line,) = path.read_text().splitlines()
    rec = json.loads(line)
    assert rec["eventMetadata"] == {"eventId": "a", "inferenceTime": "2026-11-01T00:00:00.250Z"}  # no inferenceId


# -- ground-truth records -----------------------------------------------------------------------------------


def test_ground_truth_records_of_the_formats_reference(tmp_path: Path, gt: Callable[..., Path]) -> None:
    documented = json.loads(GT_DOCUMENTED)
    path = gt("2026/11/01/07", [GT_DOCUMENTED, GT_SDK_FIXTURE, json.dumps([documented]), ""])
    rejects: list[pa.RecordBatch] = []
    rows = read_ground_truth(str(tmp_path / "gt"), on_rejects=rejects.append).read_all().to_pylist()
    common = {"label_data": "1", "label_encoding": "CSV", "event_version": "0", "label_hour": hour("2026-11-01T07")}
    assert rows == [
        {
            "event_id": "aaaa-bbbb-cccc",
            "label_inference_time": None,
            **common,
            "label_file": path.as_uri(),
            "label_line": 1,
        },
        {
            "event_id": "74b0dd56-e7c8-368e-94b1-14a138a96000",
            "label_inference_time": None,  # "{%s}" is no time: kept as null, not a reject
            **common,
            "label_file": path.as_uri(),
            "label_line": 2,
        },
        {
            "event_id": "aaaa-bbbb-cccc",
            "label_inference_time": None,
            **common,
            "label_file": path.as_uri(),
            "label_line": 3,
        },
    ]
    assert rejects == []
    sdk = GT_SDK_FIXTURE.replace("{%s}", "2026-11-01T06:59:59Z")
    write_lines(path, [sdk])
    (row,) = read_ground_truth(str(path)).read_all().to_pylist()
    assert row["label_inference_time"] == datetime(2026, 11, 1, 6, 59, 59, tzinfo=UTC)


def test_rejected_labels_balance_and_land_in_rejects(tmp_path: Path, gt: Callable[..., Path]) -> None:
    preds = batch_dataset(tmp_path / "batch", [{"inference_id": "ok", "output_data": "1"}])
    gt(
        "2026/11/01/00",
        [
            label("ok"),
            "{not json",
            json.dumps({"groundTruthData": {"data": "1"}, "eventMetadata": {}}),
            json.dumps({"eventMetadata": {"eventId": "nodata"}}),
            json.dumps([json.loads(label("arr")), 7]),
            '{"groundTruthData": {"data": 1, "encoding": "CSV"}, "eventMetadata": {"eventId": 42}}',
        ],
    )
    report, rows = merge(tmp_path, predictions=str(preds), max_reject_ratio=1.0)
    assert [r["label"] for r in rows] == ["1"]
    assert report.records == 7 and report.rejected == 4 and report.events_written == 3
    assert dict(report.rejects_by_reason) == {
        "invalid_json": 1,
        "missing_event_id": 1,
        "missing_label_data": 1,
        "not_an_object": 1,
    }
    rejects = pq.read_table(tmp_path / "out" / "_rejects").to_pylist()
    assert {(r["reason"], r["source_line"]) for r in rejects} == {
        ("invalid_json", 2),
        ("missing_event_id", 3),
        ("missing_label_data", 4),
        ("not_an_object", 5),
    }
    assert [r["raw"] for r in rejects if r["reason"] == "not_an_object"] == [b"7"]
    (part,) = {
        p.parent.relative_to(tmp_path / "out").as_posix()
        for p in (tmp_path / "out").rglob("*.parquet")
        if "_rejects" in p.parts
    }
    assert part == "_rejects/year=2026/month=11/day=01/hour=00"  # hour of the label folder, no endpoint level
    # The reject limit applies to the labels read.
    with pytest.raises(RejectLimitError, match="rejected"):
        run_merge(predictions=str(preds), ground_truth=str(tmp_path / "gt"), dest=str(tmp_path / "strict"))


# -- CLI ----------------------------------------------------------------------------------------------------


def test_cli_merge(
    tmp_path: Path, write_capture: WriteCapture, gt: Callable[..., Path], run_cli: Callable[..., Any]
) -> None:
    write_capture("2026/11/01/00", [record("a", "2026-11-01T00:10:00Z"), record("b", "2026-11-01T00:20:00Z")])
    gt("2026/11/01/01", [label("a"), label("c")])
    out = tmp_path / "out"
    args = ["--ground-truth", str(tmp_path / "gt"), str(out), "--start", "2026-11-01T00", "--end", "2026-11-01T01"]
    p = run_cli(
        "merge",
        "--captures",
        str(tmp_path / "capture"),
        *args,
        "--label-delay",
        "90m",
        "--how",
        "left",
        "--format",
        "sagemaker",
    )
    assert p.returncode == 0, p.stderr
    assert "matched predictions" in p.stdout and "unmatched labels" in p.stdout
    assert "input records = accepted + rejected + outside  yes" in p.stdout
    report = json.loads((out / "_SUCCESS").read_text())
    assert report["command"] == "merge" and report["counts"]["matched"] == 1 and report["rows_written"] == 2
    assert report["options"]["label_delay"] == "1h30m" and report["options"]["how"] == "left"
    assert len(list((out / "_sagemaker" / "merge").rglob("*.jsonl"))) == 1

    p = run_cli("merge", "--predictions", str(tmp_path / "nothing"), *args)
    assert p.returncode == 1 and p.stderr.strip().startswith("capture-engine: error: prediction dataset not found")
    p = run_cli("merge", "--captures", str(tmp_path / "capture"), "--ground-truth", str(tmp_path / "nope"), str(out))
    assert p.returncode == 1
    assert p.stderr.strip() == f"capture-engine: error: ground truth not found: file://{tmp_path / 'nope'}"
    p = run_cli("merge", "--captures", str(tmp_path / "capture"), *args, "--format", "sagemaker", "--decode")
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1 and "decod" in p.stderr
    for bad in (["--captures", "x", "--predictions", "y"], [], ["--captures", "x", "--label-delay", "soon"]):
        p = run_cli("merge", *bad, *args)
        assert p.returncode == 2 and "Traceback" not in p.stderr


def test_demo_runs_every_job_and_merges(tmp_path: Path, run_cli: Callable[..., Any]) -> None:
    p = run_cli("demo", str(tmp_path / "demo"), timeout=300)
    assert p.returncode == 0, p.stderr
    assert any(x.startswith("4/6 ") and "capture-engine merge --predictions" in x for x in p.stdout.splitlines())
    report = json.loads((tmp_path / "demo" / "merged" / "_SUCCESS").read_text())
    assert report["counts"]["matched"] == report["counts"]["labels"] > 0 and report["balanced"]
    batch = json.loads((tmp_path / "demo" / "batch" / "_SUCCESS").read_text())
    assert batch["status"] == "committed" and batch["rows_written"] > 0 and batch["rejected"] == 0
    merged = json.loads((tmp_path / "demo" / "batch-merged" / "_SUCCESS").read_text())
    assert merged["counts"]["matched"] == merged["counts"]["labels"] > 0
    assert list((tmp_path / "demo" / "batch-merged" / "_sagemaker" / "merge").glob("**/*.jsonl"))  # SageMaker's layout


# -- readers ------------------------------------------------------------------------------------------------


def test_merged_parquet_reads_back_with_pyarrow_polars_and_duckdb(tmp_path: Path) -> None:
    s = synth(str(tmp_path / "sample"), SynthOptions(records=600, hours=2, endpoints=1, variants=2))
    run_realtime(s.capture_root, str(tmp_path / "rt"))
    report = run_merge(predictions=str(tmp_path / "rt"), ground_truth=s.ground_truth_root, dest=str(tmp_path / "out"))
    n = report.rows_written
    assert n == report.counts["matched"] == s.labels
    t = ds.dataset(tmp_path / "out", format="parquet", partitioning="hive").to_table()
    assert t.num_rows == n and set(LABEL_COLUMNS) <= set(t.column_names)
    glob = f"{tmp_path}/out/endpoint=*/**/*.parquet"
    df = pl.scan_parquet(glob, hive_partitioning=True).collect()
    assert df.height == n and df["label_value"].drop_nulls().is_in([0.0, 1.0]).all()
    by_label = duckdb.sql(
        f"select label, count(*) from read_parquet('{glob}', hive_partitioning=true) group by all order by all"
    ).fetchall()
    assert sum(c for _, c in by_label) == n and {lbl for lbl, _ in by_label} <= {"0", "1", None}
    assert duckdb.sql(f"select count(distinct label_file) from read_parquet('{glob}')").fetchall() == [(s.label_files,)]


# -- property: any mix agrees with a naive join -------------------------------------------------------------

_KEYS = st.sampled_from([f"k{i}" for i in range(8)])


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    predictions=st.lists(st.tuples(_KEYS, st.booleans()), max_size=12),
    labels=st.lists(
        st.tuples(_KEYS, st.integers(0, 3), st.integers(0, 1), st.sampled_from(["0", "1", "x"])), max_size=12
    ),
    how=st.sampled_from(["inner", "left"]),
    buckets=st.booleans(),
)
def test_merge_agrees_with_a_naive_join(
    tmp_path_factory: pytest.TempPathFactory,
    predictions: list[tuple[str, bool]],
    labels: list[tuple[str, int, int, str]],
    how: str,
    buckets: bool,
) -> None:
    root = tmp_path_factory.mktemp("prop")
    lines = []
    for i, (key, as_inference_id) in enumerate(predictions):
        # The key is the inferenceId, or the eventId when there is none.
        if as_inference_id:
            lines.append(record(f"event-{i}", "2026-11-01T00:00:00Z", inference_id=key))
        else:
            lines.append(record(key, "2026-11-01T00:00:00Z"))
    if lines:
        write_lines(root / "capture" / "ep" / "v" / "2026/11/01/00" / "a.jsonl", lines)
    else:
        (root / "capture").mkdir()
    files: dict[tuple[int, int], list[str]] = {}
    for key, h, f, data in labels:
        files.setdefault((h, f), []).append(label(key, data))
    for (h, f), ls in files.items():
        write_lines(root / "gt" / f"2026/11/01/{h:02d}" / f"{f}.jsonl", ls)
    (root / "gt").mkdir(exist_ok=True)
    options = MergeOptions(how=how, join_memory=64 if buckets else 512 * 2**20)  # type: ignore[arg-type]
    report = run_merge(
        captures=str(root / "capture"), ground_truth=str(root / "gt"), dest=str(root / "out"), options=options
    )

    # The naive join: labels in (hour, file, line) order, the last one of a key wins.
    latest: dict[str, str] = {}
    for h, f in sorted(files):
        for line in files[(h, f)]:
            rec = json.loads(line)
            latest[rec["eventMetadata"]["eventId"]] = rec["groundTruthData"]["data"]
    keys = [k for k, _ in predictions]
    matched = [k for k in keys if k in latest]
    assert report.balanced
    assert report.counts == {
        "predictions": len(keys),
        "labels": len(labels),
        "duplicate_labels": len(labels) - len(latest),
        "matched": len(matched),
        "unmatched_predictions": len(keys) - len(matched),
        "unmatched_labels": len(set(latest) - set(keys)),
        "duplicate_prediction_keys": len(keys) - len(set(keys)),
    }
    rows = read(root / "out") if report.rows_written else []
    got = sorted((r["inference_id"] or r["event_id"], r["label_data"]) for r in rows)
    want = sorted((k, latest.get(k)) for k in keys if how == "left" or k in latest)
    assert got == want


# -- end to end ---------------------------------------------------------------------------------------------


def test_synth_tree_end_to_end_with_windows(tmp_path: Path) -> None:
    o = SynthOptions(records=3000, hours=3, endpoints=1, variants=2, max_label_delay_hours=6)
    s = synth(str(tmp_path / "sample"), o)
    # Every label synth wrote belongs to one event: merging everything matches every label.
    everything = run_merge(captures=s.capture_root, ground_truth=s.ground_truth_root, dest=str(tmp_path / "all"))
    assert everything.counts["matched"] == everything.counts["labels"] == s.labels
    assert everything.counts["predictions"] == s.events and everything.counts["unmatched_labels"] == 0

    # Window: the first two hours, labels collected until 2 hours after it. Expected from the files themselves.
    start, end, delay = o.start, o.start + timedelta(hours=2), timedelta(hours=2)
    predicted = {
        r["inference_id"] or r["event_id"]
        for r in read_capture(s.capture_root, options=RealtimeOptions(start=start, end=end)).read_all().to_pylist()
    }
    in_window = set()
    for path in Path(s.ground_truth_root).rglob("*.jsonl"):
        y, m, d, h = (int(p) for p in path.parent.relative_to(s.ground_truth_root).parts)
        if start <= datetime(y, m, d, h, tzinfo=UTC) < end + delay:
            in_window |= {json.loads(line)["eventMetadata"]["eventId"] for line in path.read_text().splitlines()}
    options = MergeOptions(start=start, end=end, label_delay=delay)
    windowed = run_merge(
        captures=s.capture_root, ground_truth=s.ground_truth_root, dest=str(tmp_path / "w"), options=options
    )
    assert windowed.counts["predictions"] == len(predicted)
    assert windowed.counts["matched"] == len(predicted & in_window) == windowed.rows_written
    assert windowed.counts["labels"] == len(in_window)
    assert 0 < windowed.counts["matched"] < len(predicted)  # some labels come later than the label window

    # The same from the realtime dataset, and in hash buckets spilled to disk: the same rows.
    run_realtime(s.capture_root, str(tmp_path / "rt"))
    from_dataset = run_merge(
        predictions=str(tmp_path / "rt"), ground_truth=s.ground_truth_root, dest=str(tmp_path / "d"), options=options
    )
    bucketed = run_merge(
        predictions=str(tmp_path / "rt"),
        ground_truth=s.ground_truth_root,
        dest=str(tmp_path / "b"),
        options=MergeOptions(start=start, end=end, label_delay=delay, join_memory=50_000),
    )
    assert from_dataset.counts == bucketed.counts == {**windowed.counts}
    key = ["event_id", "label_data", "label_file", "label_line", "label_hour"]
    a = pl.DataFrame(read(tmp_path / "d")).select(key).sort(key)
    b = pl.DataFrame(read(tmp_path / "b")).select(key).sort(key)
    assert a.equals(b) and a.height == windowed.rows_written


def test_iter_capture_streams_decoded_records_and_read_capture_refuses_decode(write_capture: WriteCapture) -> None:
    two = record("a", "2026-11-01T00:00:00Z", data="1,2\\n3,4").replace('"data":"0.5"', '"data":"0.5\\n0.7"')
    path = write_capture("2026/11/01/00", [two])
    report = RunReport(command="read", source="", dest=None, options={})
    batches = list(iter_capture(str(path), options=RealtimeOptions(decode=True), report=report))
    assert sum(b.num_rows for b in batches) == 2 and report.records == 1 and report.objects == 1
    with pytest.raises(OptionsError, match="iter_capture"):
        read_capture(str(path), options=RealtimeOptions(decode=True))


@pytest.mark.parametrize("labels_collide", [False, True])
def test_hash_collisions_never_join_the_wrong_label(
    tmp_path: Path,
    write_capture: WriteCapture,
    gt: Callable[..., Path],
    monkeypatch: pytest.MonkeyPatch,
    labels_collide: bool,
) -> None:
    import engine.jobs.merge
    import engine.jobs.spill
    import engine.kernels.join

    def constant(keys: pa.Array | pa.ChunkedArray) -> np.ndarray:
        return np.zeros(len(keys), dtype=np.uint64)  # every key has the same hash

    monkeypatch.setattr(engine.kernels.join, "key_hash", constant)
    monkeypatch.setattr(engine.jobs.merge, "key_hash", constant)
    monkeypatch.setattr(engine.jobs.spill, "key_hash", constant)
    t = "2026-11-01T00:00:00Z"
    write_capture("2026/11/01/00", [record(k, t) for k in ("a", "b", "c", "d")])
    if labels_collide:  # distinct label keys share a hash: the index looks keys up by their strings
        gt("2026/11/01/00", [label("a", "1"), label("c", "0"), label("a", "2"), label("x", "9")])
        want = {"a": "2", "b": None, "c": "0", "d": None}
    else:  # one label key: predictions b, c, d share its hash but not its string
        gt("2026/11/01/00", [label("a", "1"), label("a", "2")])
        want = {"a": "2", "b": None, "c": None, "d": None}
    report, rows = merge(tmp_path, how="left")
    assert {r["event_id"]: r["label"] for r in rows} == want
    assert report.counts["duplicate_labels"] == 1
    assert report.counts["matched"] == sum(v is not None for v in want.values())
    assert report.counts["unmatched_labels"] == (1 if labels_collide else 0)


def test_prefetch_keeps_order_raises_in_order_and_stops_early() -> None:
    from engine.io.concurrency import prefetch

    def items() -> Iterator[int]:
        yield from range(5)
        raise RuntimeError("source failed")

    got = prefetch(items(), 2)
    assert [next(got) for _ in range(3)] == [0, 1, 2]
    got.close()  # the producer thread stops instead of blocking on a full queue
    seen: list[int] = []
    with pytest.raises(RuntimeError, match="source failed"):
        seen.extend(prefetch(items(), 1))
    assert seen == [0, 1, 2, 3, 4]


def test_exactly_one_prediction_source(tmp_path: Path) -> None:
    for sources in ({}, {"captures": "a", "batch": "b"}, {"captures": "a", "predictions": "p", "batch": "b"}):
        with pytest.raises(OptionsError, match="exactly one prediction source"):
            run_merge(ground_truth=str(tmp_path), dest=str(tmp_path / "out"), **sources)
    assert not (tmp_path / "out").exists()
