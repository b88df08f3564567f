"""The capture envelope in the writing direction (engine.formats.capture): the records quoted in the formats
reference and every line of the synth renderer re-encoded byte for byte, what it writes read back by the
envelope reader field for field, the CaptureContentTypeHeader rules and the validation of names and options."""

from __future__ import annotations

import base64
from datetime import datetime, timedelta, timezone
from pathlib import Path

import orjson
import pytest

from engine import RealtimeOptions, iter_capture, read_capture
from engine.errors import OptionsError
from engine.formats.capture import (
    CaptureEvent,
    CapturePayload,
    ContentTypeHeader,
    check_name,
    encode_event,
    encode_events,
    format_inference_time,
    object_key,
    parse_capture_modes,
    valid_custom_attributes,
    valid_inference_id,
)
from engine.synth import SynthOptions, synth
from tests.conftest import QUOTED_CSV, QUOTED_JSONLINES, QUOTED_MIXED

UTC = timezone.utc
NO_HEADER = ContentTypeHeader(csv_content_types=(), json_content_types=())


def _event_of(line: bytes) -> tuple[CaptureEvent, str]:
    """The event a capture line describes (bodies as bytes) and the encoding it was written with."""
    rec = orjson.loads(line)
    sides: dict[str, CapturePayload | None] = {}
    encoding = ""
    for key in ("endpointInput", "endpointOutput"):
        side = rec["captureData"].get(key)
        if side is None:
            sides[key] = None
            continue
        encoding = side["encoding"]
        data = base64.b64decode(side["data"]) if encoding == "BASE64" else side["data"].encode()
        sides[key] = CapturePayload(data=data, content_type=side["observedContentType"])
    meta = rec["eventMetadata"]
    event = CaptureEvent(
        event_id=meta["eventId"],
        inference_time=datetime.strptime(meta["inferenceTime"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC),
        input=sides["endpointInput"],
        output=sides["endpointOutput"],
        inference_id=meta.get("inferenceId"),
        custom_attributes=meta.get("customAttributes"),
    )
    return event, encoding


@pytest.mark.parametrize(
    ("line", "header"),
    [
        (QUOTED_CSV, ContentTypeHeader()),
        (QUOTED_MIXED, ContentTypeHeader()),
        (QUOTED_JSONLINES, ContentTypeHeader(json_content_types=("application/jsonlines",))),
    ],
    ids=["csv-with-inference-id", "csv-in-json-out", "jsonlines-multi-record"],
)
def test_quoted_records_are_written_byte_for_byte(line: str, header: ContentTypeHeader) -> None:
    event, _ = _event_of(line.encode())
    assert encode_event(event, header) == line.encode()


def test_synth_renderer_lines_and_keys_are_written_byte_for_byte(tmp_path: Path) -> None:
    """Every line synth renders (CSV, JSON, JSON Lines, BASE64, multi-record, with and without inference IDs)
    is exactly what the writer encodes for the same event, and every object key is one the writer would name."""
    options = SynthOptions(records=600, hours=2, endpoints=1, variants=2, fractional_time_share=0, records_per_file=40)
    summary = synth(str(tmp_path), options)
    text = ContentTypeHeader(json_content_types=("application/json", "application/jsonlines"))
    capture = Path(summary.capture_root)
    files = sorted(capture.rglob("*.jsonl"))
    assert len(files) >= 10
    encodings: set[str] = set()
    lines = 0
    for path in files:
        data = path.read_bytes()
        events = []
        for line in data.splitlines():
            event, encoding = _event_of(line)
            encodings.add(encoding)
            assert encode_event(event, NO_HEADER if encoding == "BASE64" else text) == line
            events.append((event, encoding))
        lines += len(events)
        # The object as a whole: the writer's JSONL framing (every line ends in a newline) is synth's.
        assert b"".join(encode_event(e, NO_HEADER if k == "BASE64" else text) + b"\n" for e, k in events) == data
        # The key: hour folder of the first record, {MM}-{SS}-{mmm}-{uuid}.jsonl from its time.
        rel = path.relative_to(capture).as_posix()
        endpoint, variant, y, mo, d, h, name = rel.split("/")
        minute, second, ms, unique = name.removesuffix(".jsonl").split("-", 3)
        first = datetime(int(y), int(mo), int(d), int(h), int(minute), int(second), int(ms) * 1000, tzinfo=UTC)
        assert object_key(endpoint, variant, first, unique) == rel
        assert format_inference_time(first) == format_inference_time(events[0][0].inference_time)
    assert lines == summary.events
    assert encodings == {"CSV", "JSON", "BASE64"}


def _payload(data: bytes, content_type: str | None) -> CapturePayload:
    return CapturePayload(data=data, content_type=content_type)


T0 = datetime(2026, 3, 1, 7, 59, 59, 987_000, tzinfo=UTC)
READ_BACK = [
    # CSV with a charset parameter, several rows, a trailing newline; inference ID and custom attributes.
    CaptureEvent(
        event_id="e-csv",
        inference_time=T0,
        input=_payload(b"1,2.5,3\n4,5,6\n", "text/csv"),
        output=_payload(b"0.25\n0.75", "TEXT/CSV; charset=utf-8"),
        inference_id="id 1",
        custom_attributes='trace=abc; tenant="x"',
    ),
    # JSON with quotes, unicode, backslashes and pretty-printed newlines, kept verbatim.
    CaptureEvent(
        event_id="e-json",
        inference_time=T0,
        input=_payload('{"text": "naïve \\"café\\"\\n", "x": [1, 2]}'.encode(), "application/json"),
        output=_payload(b'{\n    "predictions": [3.5, 4.0]\n}', "application/json"),
    ),
    # Binary both ways, and a listed type whose body is not UTF-8 (BASE64 rather than lost).
    CaptureEvent(
        event_id="e-bin",
        inference_time=T0,
        input=_payload(bytes(range(256)), "application/x-npy"),
        output=_payload(b"\xff\xfe,1", "text/csv"),
    ),
    # No Content-Type at all, an empty body, input only, output only.
    CaptureEvent(event_id="e-none", inference_time=T0, input=_payload(b"", None), output=_payload(b"ok", None)),
    CaptureEvent(event_id="e-in", inference_time=T0 + timedelta(seconds=1), input=_payload(b"7,8", "text/csv")),
    CaptureEvent(
        event_id="e-out", inference_time=T0 + timedelta(seconds=1), output=_payload(b"[1]", "application/json")
    ),
]
# (input encoding, output encoding) the header gives each event.
EXPECTED_ENCODINGS = {
    "e-csv": ("CSV", "CSV"),
    "e-json": ("JSON", "JSON"),
    "e-bin": ("BASE64", "BASE64"),
    "e-none": ("BASE64", "BASE64"),
    "e-in": ("CSV", None),
    "e-out": (None, "JSON"),
}


def test_what_the_writer_encodes_the_reader_reads_back(tmp_path: Path) -> None:
    header = ContentTypeHeader()
    key = object_key("my-endpoint", "AllTraffic", T0, "00000000-0000-4000-8000-000000000000")
    path = tmp_path / key
    path.parent.mkdir(parents=True)
    path.write_bytes(encode_events(READ_BACK, header))
    assert key == "my-endpoint/AllTraffic/2026/03/01/07/59-59-987-00000000-0000-4000-8000-000000000000.jsonl"

    rows = {r["event_id"]: r for r in read_capture(str(tmp_path)).read_all().to_pylist()}
    assert set(rows) == {e.event_id for e in READ_BACK}
    for line, event in enumerate(READ_BACK, start=1):
        row = rows[event.event_id]
        assert (row["endpoint"], row["variant"]) == ("my-endpoint", "AllTraffic")
        assert row["source_file"] == path.as_uri()
        assert row["source_line"] == line
        assert row["inference_time"] == event.inference_time.replace(microsecond=0)
        assert row["inference_id"] == event.inference_id
        assert row["custom_attributes"] == event.custom_attributes
        assert row["event_version"] == "0"
        for side, payload, encoding in zip(
            ("input", "output"), (event.input, event.output), EXPECTED_ENCODINGS[event.event_id], strict=True
        ):
            assert row[f"{side}_encoding"] == encoding
            if payload is None:
                assert row[f"{side}_data"] is None and row[f"{side}_content_type"] is None
                continue
            assert row[f"{side}_content_type"] == payload.content_type
            data = row[f"{side}_data"]
            assert (base64.b64decode(data) if encoding == "BASE64" else data.encode()) == payload.data


@pytest.mark.parametrize(
    ("content_type", "expected"),
    [
        ("text/csv", "CSV"),
        ("text/csv; charset=utf-8", "CSV"),
        ("Text/CSV ;charset=UTF-8", "CSV"),
        ("application/json", "JSON"),
        ("application/jsonlines", "BASE64"),  # JSON Lines is JSON only when listed
        ("application/x-npy", "BASE64"),
        ("text/csvx", "BASE64"),  # a media type, not a prefix
        ("", "BASE64"),
        (None, "BASE64"),
    ],
)
def test_content_type_header_decides_the_encoding(content_type: str | None, expected: str) -> None:
    assert ContentTypeHeader().encoding(content_type) == expected


def test_listed_types_and_no_header() -> None:
    header = ContentTypeHeader(csv_content_types=("text/plain",), json_content_types=("application/jsonlines",))
    assert header.encoding("text/plain") == "CSV"
    assert header.encoding("text/csv") == "BASE64"
    assert header.encoding("application/jsonlines; charset=utf-8") == "JSON"
    assert NO_HEADER.encoding("text/csv") == NO_HEADER.encoding("application/json") == "BASE64"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"csv_content_types": ["text/csv; charset=utf-8"]}, "is not a content type SageMaker accepts"),
        ({"json_content_types": ["application/vnd+json"]}, "is not a content type SageMaker accepts"),
        ({"csv_content_types": [f"text/c{i}" for i in range(11)]}, "at most 10 entries"),
        ({"csv_content_types": "text/csv"}, "must be a list of content types"),
        ({"csv_content_types": ["text/csv"], "json_content_types": ["TEXT/csv"]}, "listed as both CSV and JSON"),
    ],
)
def test_invalid_content_type_headers_are_refused(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(OptionsError, match=message):
        ContentTypeHeader(**kwargs)  # type: ignore[arg-type]


def test_capture_modes_names_and_caller_fields() -> None:
    assert parse_capture_modes(["Input"]) == {"Input"}
    assert parse_capture_modes(["REQUEST", "RESPONSE"]) == {"Input", "Output"}
    assert parse_capture_modes("InputAndOutput") == {"Input", "Output"}
    with pytest.raises(OptionsError, match="1-32 entries"):
        parse_capture_modes([])
    with pytest.raises(OptionsError, match="'Both' is not Input, Output or InputAndOutput"):
        parse_capture_modes(["Both"])
    assert check_name("endpoint", "churn-xgb-1") == "churn-xgb-1"
    for bad in ("a/b", "-x", "x-", "", "a" * 64, "under_score"):
        with pytest.raises(OptionsError, match="is not a SageMaker name"):
            check_name("variant", bad)
    assert valid_inference_id("59") and valid_inference_id("a b") and valid_inference_id("x" * 64)
    assert not any(valid_inference_id(v) for v in ("", " a", "x" * 65, "é", "a\tb"))
    assert valid_custom_attributes("") and valid_custom_attributes("k=v; c=d")
    assert not valid_custom_attributes("é") and not valid_custom_attributes("x" * 1025)


def test_inference_time_is_utc_whole_seconds() -> None:
    assert format_inference_time(datetime(2021, 5, 18, 0, 29, 4, 999_999, tzinfo=UTC)) == "2021-05-18T00:29:04Z"
    east = timezone(timedelta(hours=2))
    assert format_inference_time(datetime(2021, 5, 18, 1, 0, 0, tzinfo=east)) == "2021-05-17T23:00:00Z"
    assert format_inference_time(datetime(2021, 5, 18, 1, 2, 3)) == "2021-05-18T01:02:03Z"  # naive: UTC
    assert (
        object_key("e", "v", datetime(2021, 5, 18, 1, 0, 0, 5_000, tzinfo=east), "u")
        == "e/v/2021/05/17/23/00-00-005-u.jsonl"
    )


def test_binary_outputs_next_to_text_outputs_decode(tmp_path: Path) -> None:
    """A batch mixing a CSV output with a binary one that is not UTF-8 decodes: the binary body stays in
    ``output_data`` and gives no prediction (casting it to text for the prediction column used to fail)."""
    events = [
        CaptureEvent(
            event_id="csv", inference_time=T0, input=_payload(b"1,2", "text/csv"), output=_payload(b"0.5", "text/csv")
        ),
        CaptureEvent(
            event_id="bin",
            inference_time=T0,
            input=_payload(b"\x00", "application/x-npy"),
            output=_payload(b"\xff\x02", None),
        ),
    ]
    path = tmp_path / object_key("ep", "AllTraffic", T0, "u")
    path.parent.mkdir(parents=True)
    path.write_bytes(encode_events(events, ContentTypeHeader()))
    rows = [r for b in iter_capture(str(tmp_path), options=RealtimeOptions(decode=True)) for r in b.to_pylist()]
    got = {r["event_id"]: (r["prediction"], r["output_data"]) for r in rows}
    assert got == {"csv": (0.5, None), "bin": (None, b"\xff\x02")}
