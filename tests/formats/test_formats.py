"""The records quoted in the formats reference decode to exactly the values shown there."""

from __future__ import annotations

from datetime import datetime, timezone

import pyarrow as pa
import pytest

from engine import RealtimeOptions, read_capture
from tests.conftest import QUOTED_CSV, QUOTED_JSONLINES, QUOTED_MIXED, WriteCapture

UTC = timezone.utc


def _read(path: str, **kw: object) -> list[dict[str, object]]:
    table = read_capture(path, options=RealtimeOptions(**kw)).read_all()  # type: ignore[arg-type]
    rows: list[dict[str, object]] = table.to_pylist()
    return rows


def test_quoted_csv_record_with_inference_id(write_capture: WriteCapture) -> None:
    path = write_capture("2021/05/18/00", [QUOTED_CSV], endpoint="DEMO-xgb-churn", name="28-04-146-x.jsonl")
    (row,) = _read(str(path.parent.parent.parent.parent.parent.parent))
    assert row == {
        "endpoint": "DEMO-xgb-churn",
        "variant": "AllTraffic",
        "event_id": "09e668ab-172a-4ef1-9dc3-696d52879010",
        "inference_id": "59",
        "inference_time": datetime(2021, 5, 18, 0, 29, 4, tzinfo=UTC),
        "event_version": "0",
        "input_content_type": "text/csv",
        "input_encoding": "CSV",
        "input_data": "132,10,182.9,54,292.4,…,0,1,0,1,0,0,1",
        "output_content_type": "text/csv; charset=utf-8",
        "output_encoding": "CSV",
        "output_data": "0.036397725343704224",
        "custom_attributes": None,
        "source_file": path.as_uri(),
        "source_line": 1,
    }


def test_quoted_mixed_encodings_record(write_capture: WriteCapture) -> None:
    path = write_capture("2021/11/30/04", [QUOTED_MIXED])
    (row,) = _read(str(path))
    assert row["event_id"] == "28cc8646-bb47-4a96-92fc-d04fc2651286"
    assert row["inference_id"] is None  # absent unless the caller set one
    assert row["inference_time"] == datetime(2021, 11, 30, 4, 32, 5, tzinfo=UTC)
    assert (row["input_encoding"], row["output_encoding"]) == ("CSV", "JSON")
    assert row["input_data"] == "0.5629733055182888,0.3018707225866159,0.5824503894753207"
    assert row["output_content_type"] == "application/json"
    assert row["output_data"] == '{"predictions": [{"score": 0.012620825320482254, "predicted_label": 0}]}'


def test_quoted_json_lines_record_keeps_embedded_newlines(write_capture: WriteCapture) -> None:
    path = write_capture("2023/01/19/05", [QUOTED_JSONLINES])
    (row,) = _read(str(path))
    assert row["input_content_type"] == "application/jsonlines"
    assert row["input_data"] == (
        '{"features":[28,2,133937,9,13,2,0,0,4,1,15024,0,55,37]}\n{"features":[43,2,72338,12,14,2,12,0,1,1,0,0,40,37]}'
    )
    assert row["output_data"] == (
        '{"predicted_label":1,"score":0.989977359771728}\n{"predicted_label":1,"score":0.504138827323913}\n'
    )
    assert row["inference_time"] == datetime(2023, 1, 19, 5, 28, 32, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2021-05-18T00:29:02Z", datetime(2021, 5, 18, 0, 29, 2, tzinfo=UTC)),
        ("2021-05-18T00:29:02.123Z", datetime(2021, 5, 18, 0, 29, 2, 123000, tzinfo=UTC)),
        # The SDK's integ tests write %Y-%m-%dT%H:%M:%S.%f (microseconds, no Z): taken as UTC, kept to the microsecond.
        ("2021-05-18T00:29:02.123456", datetime(2021, 5, 18, 0, 29, 2, 123456, tzinfo=UTC)),
        ("2021-05-18T00:29:02", datetime(2021, 5, 18, 0, 29, 2, tzinfo=UTC)),
        ("2021-05-18T02:29:02+02:00", datetime(2021, 5, 18, 0, 29, 2, tzinfo=UTC)),
    ],
)
def test_inference_time_variants(write_capture: WriteCapture, text: str, expected: datetime) -> None:
    line = QUOTED_CSV.replace("2021-05-18T00:29:04Z", text)
    path = write_capture("2021/05/18/00", [line])
    (row,) = _read(str(path))
    assert row["inference_time"] == expected


def test_reader_schema_matches_the_schema_file(write_capture: WriteCapture) -> None:
    from engine.tables import capture_schema

    path = write_capture("2021/05/18/00", [QUOTED_CSV])
    reader = read_capture(str(path))
    assert isinstance(reader, pa.RecordBatchReader)
    assert reader.schema == capture_schema()
    assert reader.schema.field("inference_time").type == pa.timestamp("us", tz="UTC")
