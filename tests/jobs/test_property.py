"""Property tests: any mix of good and bad lines gives rows + rejects = records, and good lines round-trip."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.io.fetch import _split_lines
from engine.io.listing import CaptureObject
from engine.kernels.envelope import decode_unit

UTC = timezone.utc
OBJ = CaptureObject(
    path="/c/ep/AllTraffic/2026/11/01/10/x.jsonl",
    uri="file:///c/ep/AllTraffic/2026/11/01/10/x.jsonl",
    size=0,
    endpoint="ep",
    variant="AllTraffic",
    hour=datetime(2026, 11, 1, 10, tzinfo=UTC),
)
text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40)
times = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2099, 1, 1)).map(
    lambda t: t.replace(microsecond=(t.microsecond // 1000) * 1000)
)


@st.composite
def good_record(draw: st.DrawFn) -> dict[str, Any]:
    t = draw(times)
    frac = draw(st.booleans())
    stamp = t.strftime("%Y-%m-%dT%H:%M:%S") + (f".{t.microsecond // 1000:03d}" if frac else "") + "Z"
    rec: dict[str, Any] = {
        "eventMetadata": {"eventId": draw(text.filter(bool)), "inferenceTime": stamp},
        "eventVersion": "0",
    }
    if draw(st.booleans()):
        rec["eventMetadata"]["inferenceId"] = draw(text)
    sides = draw(st.sampled_from([("endpointInput",), ("endpointOutput",), ("endpointInput", "endpointOutput")]))
    rec["captureData"] = {
        s: {
            "observedContentType": draw(st.sampled_from(["text/csv", "application/json", None])),
            "mode": "INPUT" if s == "endpointInput" else "OUTPUT",
            "data": draw(text),
            "encoding": draw(st.sampled_from(["CSV", "JSON", "BASE64"])),
        }
        for s in sides
    }
    if draw(st.booleans()):
        rec["extra"] = {"nested": draw(st.lists(st.integers(), max_size=3))}
    rec["_expected_time"] = t if frac else t.replace(microsecond=0)
    return rec


bad_line = st.one_of(
    st.just("{not json"),
    st.just("[1, 2, 3]"),
    st.just('{"eventMetadata": {"inferenceTime": "2026-11-01T10:00:00Z"}}'),
    st.just('{"eventMetadata": {"eventId": "x", "inferenceTime": "soon"}}'),
    st.just('{"eventMetadata": {"eventId": "x"}}'),
    text.map(lambda s: "#" + s.replace("\n", " ").replace("\r", " ")),
)
line = st.one_of(good_record(), bad_line, st.just(""))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    lines=st.lists(line, max_size=40),
    crlf=st.booleans(),
    block=st.integers(min_value=64, max_value=4096),
)
def test_rows_plus_rejects_equal_records_and_good_lines_round_trip(
    lines: list[dict[str, Any] | str], crlf: bool, block: int
) -> None:
    eol = "\r\n" if crlf else "\n"
    encoded = []
    for x in lines:
        if isinstance(x, dict):
            encoded.append(json.dumps({k: v for k, v in x.items() if not k.startswith("_")}))
        else:
            encoded.append(x)
    data = eol.join(encoded).encode()
    pieces = _split_lines(OBJ, data, block)
    decoded = [decode_unit([p], max_line_bytes=1 << 20) for p in pieces]

    records = sum(d.records for d in decoded)
    rows = [r for d in decoded for r in d.rows.to_pylist()]
    rejects = [r for d in decoded for r in d.rejects.to_pylist()]
    nonblank = [i for i, x in enumerate(lines, 1) if not (isinstance(x, str) and not x.strip())]
    assert records == len(nonblank)
    assert len(rows) + len(rejects) == records
    assert sorted([r["source_line"] for r in rows] + [r["source_line"] for r in rejects]) == nonblank

    for r in rows:
        src = lines[r["source_line"] - 1]
        assert isinstance(src, dict), r
        meta = src["eventMetadata"]
        assert r["event_id"] == meta["eventId"]
        assert r["inference_id"] == meta.get("inferenceId")
        assert r["inference_time"] == src["_expected_time"].replace(tzinfo=UTC)
        cap = src["captureData"]
        for side, prefix in (("endpointInput", "input"), ("endpointOutput", "output")):
            want = cap.get(side) or {}
            assert r[f"{prefix}_data"] == want.get("data")
            assert r[f"{prefix}_encoding"] == want.get("encoding")
            assert r[f"{prefix}_content_type"] == want.get("observedContentType")
    for r in rejects:
        src = lines[r["source_line"] - 1]
        raw = r["raw"].decode()
        assert raw.rstrip("\r") == (src if isinstance(src, str) else json.dumps(src))


@settings(max_examples=50, deadline=None)
@given(offsets=st.lists(st.integers(min_value=-48, max_value=48), min_size=1, max_size=30))
def test_window_splits_records_exactly(offsets: list[int]) -> None:
    base = datetime(2026, 11, 1, 12, tzinfo=UTC)
    lines = [
        json.dumps(
            {
                "eventMetadata": {
                    "eventId": f"e{i}",
                    "inferenceTime": f"{base + timedelta(minutes=30 * o):%Y-%m-%dT%H:%M:%SZ}",
                }
            }
        )
        for i, o in enumerate(offsets)
    ]
    start, end = base, base + timedelta(hours=6)
    (piece,) = _split_lines(OBJ, "\n".join(lines).encode(), 1 << 20)
    d = decode_unit([piece], max_line_bytes=1 << 20, start=start, end=end)
    inside = [o for o in offsets if 0 <= o < 12]
    assert d.rows.num_rows == len(inside)
    assert d.out_of_window == len(offsets) - len(inside)
    assert d.records == d.rows.num_rows + d.out_of_window + d.rejects.num_rows
