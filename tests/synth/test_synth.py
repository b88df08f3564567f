"""Tests of the synthetic SageMaker capture generator (engine.synth)."""

from __future__ import annotations

import base64
import json
import math
import re
import tempfile
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import fsspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import engine.synth.output as synth_output
from engine.errors import OptionsError
from engine.synth import SynthOptions, SynthSummary, synth

CAPTURE_KEY = re.compile(
    r"capture/(?P<endpoint>[^/]+)/(?P<variant>[^/]+)/(?P<y>\d{4})/(?P<m>\d{2})/(?P<d>\d{2})/(?P<h>\d{2})/"
    r"(?P<mm>\d{2})-(?P<ss>\d{2})-(?P<ms>\d{3})-(?P<uuid>[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-"
    r"[0-9a-f]{12})\.jsonl"
)
LABEL_KEY = re.compile(r"ground-truth/(\d{4})/(\d{2})/(\d{2})/(\d{2})/(\d{2})(\d{2})-(\d+)\.jsonl")
TIME = re.compile(r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d{3}))?Z")
CSV_VALUE = re.compile(r"0|[1-9]\d*|\d+\.\d{1,2}")
CONTENT_TYPES = {
    "text/csv": ("CSV", "text/csv; charset=utf-8"),
    "application/json": ("JSON", "application/json"),
    "application/jsonlines": ("JSON", "application/jsonlines"),
}


@dataclass
class Event:
    """One parsed capture line plus where it was found."""

    key: str
    endpoint: str
    variant: str
    time: datetime
    fractional: bool
    content_type: str
    base64: bool
    rows: int
    event_id: str
    inference_id: str | None


@dataclass
class Tree:
    """Everything a synth run left on disk, parsed and checked for shape."""

    files: dict[str, bytes]
    events: list[Event]
    labels: dict[str, tuple[datetime, dict[str, Any]]]  # label key -> (collection hour, line)
    label_files: int
    trailing_newlines: int


def read_files(fs: fsspec.AbstractFileSystem, root: str) -> dict[str, bytes]:
    """All objects under root, keyed by their path relative to root."""
    root = root.rstrip("/")
    return {path[len(root) + 1 :]: fs.cat_file(path) for path in fs.find(root)}


def local_files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def parse_time(text: str) -> tuple[datetime, bool]:
    match = TIME.fullmatch(text)
    assert match, text
    y, mo, d, h, mi, s, ms = match.groups()
    when = datetime(int(y), int(mo), int(d), int(h), int(mi), int(s), int(ms or 0) * 1000, tzinfo=timezone.utc)
    return when, ms is not None


def check_payload(capture: dict[str, Any], features: int) -> tuple[str, bool, int, bool]:
    """Checks one captureData object; returns (content type, base64?, rows, trailing newline?)."""
    assert list(capture) == ["endpointInput", "endpointOutput"]
    inp, out = capture["endpointInput"], capture["endpointOutput"]
    assert list(inp) == ["observedContentType", "mode", "data", "encoding"]
    assert list(out) == ["observedContentType", "mode", "data", "encoding"]
    assert (inp["mode"], out["mode"]) == ("INPUT", "OUTPUT")
    content_type = inp["observedContentType"]
    encoding, out_type = CONTENT_TYPES[content_type]
    assert out["observedContentType"] == out_type
    is_b64 = inp["encoding"] == "BASE64"
    assert out["encoding"] == inp["encoding"] == ("BASE64" if is_b64 else encoding)
    body_in, body_out = inp["data"], out["data"]
    if is_b64:
        body_in = base64.b64decode(body_in, validate=True).decode()
        body_out = base64.b64decode(body_out, validate=True).decode()
    trailing = False
    if content_type == "text/csv":
        trailing = body_in.endswith("\n")
        rows = body_in.removesuffix("\n").split("\n")
        for row in rows:
            values = row.split(",")
            assert len(values) == features
            for value in values:
                assert CSV_VALUE.fullmatch(value), value
                if "." in value:
                    assert repr(float(value)) == value  # Python's shortest repr
        probabilities = body_out.split("\n")
        assert len(probabilities) == len(rows)
        for p in probabilities:
            assert 0 < float(p) < 1
            assert repr(float(p)) == p
    elif content_type == "application/json":
        instances = json.loads(body_in)["instances"]
        predictions = json.loads(body_out)["predictions"]
        assert len(instances) == len(predictions)
        for instance in instances:
            assert list(instance) == ["features"]
            assert len(instance["features"]) == 14
            assert all(isinstance(v, float) for v in instance["features"])
        for prediction in predictions:
            assert list(prediction) == ["score", "predicted_label"]
            assert 0 < prediction["score"] < 1
            assert prediction["predicted_label"] == int(prediction["score"] >= 0.5)
        rows = instances
    else:
        lines = body_in.split("\n")
        rows = [json.loads(line)["features"] for line in lines]
        assert all(json.dumps({"features": r}, separators=(",", ":")) == ln for r, ln in zip(rows, lines, strict=True))
        assert all(len(r) == 14 and all(isinstance(v, int) for v in r) for r in rows)
        assert body_out.endswith("\n")
        predictions = [json.loads(line) for line in body_out.removesuffix("\n").split("\n")]
        assert len(predictions) == len(rows)
        for prediction in predictions:
            assert list(prediction) == ["predicted_label", "score"]
            assert 0 < prediction["score"] < 1
            assert prediction["predicted_label"] == int(prediction["score"] >= 0.5)
    assert 1 <= len(rows) <= 5
    if trailing:
        assert len(rows) > 1, "only multi-record bodies end with a newline"
    return content_type, is_b64, len(rows), trailing


def load_tree(files: dict[str, bytes], options: SynthOptions) -> Tree:
    """Parses and checks every capture and ground-truth object of a synth run."""
    events: list[Event] = []
    labels: dict[str, tuple[datetime, dict[str, Any]]] = {}
    label_files = trailing = 0
    for key, data in sorted(files.items()):
        if key == "synth.json":
            continue
        if key.startswith("ground-truth/"):
            match = LABEL_KEY.fullmatch(key)
            assert match, key
            y, mo, d, h = (int(v) for v in match.groups()[:4])
            collected = datetime(y, mo, d, h, tzinfo=timezone.utc)
            assert data.endswith(b"\n")
            for line in data.decode().split("\n")[:-1]:
                label = json.loads(line)
                assert json.dumps(label, separators=(",", ":")) == line
                assert list(label) == ["groundTruthData", "eventMetadata", "eventVersion"]
                assert list(label["groundTruthData"]) == ["data", "encoding"]
                assert list(label["eventMetadata"]) == ["eventId"]
                assert label["eventVersion"] == "0"
                label_key = label["eventMetadata"]["eventId"]
                assert label_key not in labels
                labels[label_key] = (collected, label)
            label_files += 1
            continue
        match = CAPTURE_KEY.fullmatch(key)
        assert match, key
        y, mo, d, h = (int(match[g]) for g in "ymdh")
        folder_hour = datetime(y, mo, d, h, tzinfo=timezone.utc)
        assert data.endswith(b"\n") and b"\r" not in data
        lines = data.decode().split("\n")[:-1]
        assert 1 <= len(lines) <= options.records_per_file
        file_events = []
        for line in lines:
            obj = json.loads(line)
            # Compact JSON in SageMaker's key order: re-serialising gives back the same text.
            assert json.dumps(obj, separators=(",", ":"), ensure_ascii=False) == line
            assert list(obj) == ["captureData", "eventMetadata", "eventVersion"]
            assert obj["eventVersion"] == "0"
            meta = obj["eventMetadata"]
            assert list(meta) in (["eventId", "inferenceTime"], ["eventId", "inferenceId", "inferenceTime"])
            assert str(uuid.UUID(meta["eventId"])) == meta["eventId"]
            assert uuid.UUID(meta["eventId"]).version == 4
            when, fractional = parse_time(meta["inferenceTime"])
            assert when.replace(minute=0, second=0, microsecond=0) == folder_hour
            content_type, is_b64, rows, trail = check_payload(obj["captureData"], options.features)
            trailing += trail
            file_events.append(
                Event(
                    key,
                    match["endpoint"],
                    match["variant"],
                    when,
                    fractional,
                    content_type,
                    is_b64,
                    rows,
                    meta["eventId"],
                    meta.get("inferenceId"),
                )
            )
        first = file_events[0].time
        assert (int(match["mm"]), int(match["ss"]), int(match["ms"])) == (
            first.minute,
            first.second,
            first.microsecond // 1000,
        )
        assert [e.time for e in file_events] == sorted(e.time for e in file_events)
        events.extend(file_events)
    return Tree(files, events, labels, label_files, trailing)


def check_tree(tree: Tree, summary: SynthSummary, options: SynthOptions) -> None:
    """Run-wide invariants: ids, window, labels, and the summary against what is on disk."""
    assert len({e.event_id for e in tree.events}) == len(tree.events)
    inference_ids = [e.inference_id for e in tree.events if e.inference_id is not None]
    assert len(set(inference_ids)) == len(inference_ids)
    end = options.start + timedelta(hours=options.hours)
    assert all(options.start <= e.time < end for e in tree.events)
    endpoints = {f"churn-xgb-endpoint-{i + 1}" for i in range(options.endpoints)}
    variants = {"AllTraffic", *(f"Variant{i + 1}" for i in range(1, options.variants))}
    assert {e.endpoint for e in tree.events} <= endpoints
    assert {e.variant for e in tree.events} <= variants

    by_key = {(e.inference_id or e.event_id): e for e in tree.events}
    for label_key, (collected, label) in tree.labels.items():
        event = by_key[label_key]
        hour = event.time.replace(minute=0, second=0, microsecond=0)
        assert hour <= collected <= hour + timedelta(hours=options.max_label_delay_hours)
        data, encoding = label["groundTruthData"]["data"], label["groundTruthData"]["encoding"]
        if event.content_type == "text/csv":
            assert encoding == "CSV"
            values = data.split("\n")
        else:
            assert encoding == "JSON"
            parsed = json.loads(data)
            values = [str(parsed["label"])] if event.rows == 1 else [str(i["label"]) for i in parsed["instances"]]
        assert len(values) == event.rows
        assert set(values) <= {"0", "1"}

    capture_files = [k for k in tree.files if k.startswith("capture/")]
    assert summary.events == len(tree.events)
    assert summary.records == sum(e.rows for e in tree.events)
    assert summary.files == len(capture_files)
    assert summary.capture_bytes == sum(len(tree.files[k]) for k in capture_files)
    assert summary.labels == len(tree.labels)
    assert summary.label_files == tree.label_files
    per_hour = Counter(e.time.strftime("%Y-%m-%dT%H") for e in tree.events)
    expected_hours = [(options.start + timedelta(hours=h)).strftime("%Y-%m-%dT%H") for h in range(options.hours)]
    assert list(summary.events_per_hour) == expected_hours
    assert summary.events_per_hour == {h: per_hour.get(h, 0) for h in expected_hours}
    stored = json.loads(tree.files["synth.json"])
    options_dict = {**asdict(options), "start": options.start.isoformat()}
    assert stored == {**summary.to_dict(), "options": options_dict}


def assert_share(observed: int, total: int, share: float) -> None:
    """Binomial count within ~5 standard deviations of the expected share."""
    assert total > 0
    tolerance = 5 * math.sqrt(share * (1 - share) / total) + 0.005
    assert abs(observed / total - share) <= tolerance, (observed, total, share)


SHARES = SynthOptions(records=4000, seed=7, records_per_file=150, max_label_delay_hours=4)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[SynthSummary, Tree]:
    root = tmp_path_factory.mktemp("synth")
    summary = synth(str(root), SHARES)
    tree = load_tree(local_files(root), SHARES)
    return summary, tree


def test_summary_and_tree_agree(run: tuple[SynthSummary, Tree]) -> None:
    summary, tree = run
    check_tree(tree, summary, SHARES)
    assert summary.events == SHARES.records
    assert summary.capture_root == f"{summary.root}/capture"
    assert summary.ground_truth_root == f"{summary.root}/ground-truth"


def test_shares_are_respected(run: tuple[SynthSummary, Tree]) -> None:
    _, tree = run
    events = tree.events
    n = len(events)
    assert_share(sum(e.content_type != "text/csv" for e in events), n, SHARES.json_share)
    assert_share(sum(e.base64 for e in events), n, SHARES.base64_share)
    assert_share(sum(e.inference_id is not None for e in events), n, SHARES.inference_id_share)
    assert_share(sum(e.rows > 1 for e in events), n, SHARES.multi_record_share)
    assert_share(sum(e.fractional for e in events), n, SHARES.fractional_time_share)
    assert_share(len(tree.labels), n, SHARES.label_share)
    # Both JSON shapes occur, in about equal numbers; both payload kinds get BASE64-encoded.
    json_shapes = Counter(e.content_type for e in events if e.content_type != "text/csv")
    assert abs(json_shapes["application/json"] - json_shapes["application/jsonlines"]) <= 1
    assert {e.content_type for e in events if e.base64} == set(CONTENT_TYPES)
    # About half of the multi-record CSV inputs end with a newline.
    multi_csv = sum(e.rows > 1 and e.content_type == "text/csv" for e in events)
    assert 0 < tree.trailing_newlines < multi_csv
    assert {e.rows for e in events} == {1, 2, 3, 4, 5}


def test_traffic_is_spread_over_hours_and_variants(run: tuple[SynthSummary, Tree]) -> None:
    summary, tree = run
    assert max(summary.events_per_hour.values()) - min(summary.events_per_hour.values()) <= 1
    per_stream = Counter((e.endpoint, e.variant) for e in tree.events)
    for endpoint in ("churn-xgb-endpoint-1", "churn-xgb-endpoint-2"):
        assert per_stream[endpoint, "AllTraffic"] > per_stream[endpoint, "Variant2"] > 0
    # Files hold one stream within one hour and are filled up to records_per_file before a new one starts.
    per_unit = Counter((e.endpoint, e.variant, e.time.hour) for e in tree.events)
    files_per_unit = Counter((e.endpoint, e.variant, e.time.hour) for e in {e.key: e for e in tree.events}.values())
    for unit, count in per_unit.items():
        assert files_per_unit[unit] == math.ceil(count / SHARES.records_per_file)


def test_labels_spread_over_later_hours(run: tuple[SynthSummary, Tree]) -> None:
    _, tree = run
    by_key = {(e.inference_id or e.event_id): e for e in tree.events}
    delays = Counter(
        int((collected - by_key[k].time.replace(minute=0, second=0, microsecond=0)).total_seconds() // 3600)
        for k, (collected, _) in tree.labels.items()
    )
    assert set(delays) == set(range(SHARES.max_label_delay_hours + 1))
    # Labels keyed by inferenceId when the event has one, else by eventId.
    keyed_by_inference_id = sum(by_key[k].inference_id == k for k in tree.labels)
    assert 0 < keyed_by_inference_id < len(tree.labels)
    # Labels agree with the model more often than not (the scores carry signal).
    assert sum(label["groundTruthData"]["data"] == "0" for _, label in tree.labels.values()) > len(tree.labels) / 2


def test_churn_csv_looks_like_the_example(run: tuple[SynthSummary, Tree]) -> None:
    _, tree = run
    event = next(e for e in tree.events if e.content_type == "text/csv" and not e.base64 and e.rows == 1)
    line = next(ln for ln in tree.files[event.key].decode().split("\n") if event.event_id in ln)
    values = json.loads(line)["captureData"]["endpointInput"]["data"].split(",")
    assert len(values) == 69
    assert 1 <= int(values[0]) <= 243  # account length
    assert any(re.fullmatch(r"\d+\.\d", v) for v in values[:11])  # minutes
    assert any(re.fullmatch(r"\d+\.\d\d", v) for v in values[:11])  # charges
    dummies = values[11:]
    assert set(dummies) <= {"0", "1"}
    assert dummies.count("1") == 4  # one per one-hot group: state, area code, intl plan, voice-mail plan


def test_same_seed_same_bytes_other_seed_differs(tmp_path: Path) -> None:
    options = SynthOptions(records=500, records_per_file=60, hours=2, seed=3)
    runs = []
    for name, opts in (("a", options), ("b", options), ("c", replace(options, seed=4))):
        synth(str(tmp_path / name), opts)
        files = local_files(tmp_path / name)
        meta = json.loads(files.pop("synth.json"))
        runs.append((files, {k: v for k, v in meta.items() if not k.endswith("root")}))
    assert runs[0][0] == runs[1][0]
    assert runs[0][1] == runs[1][1]
    assert set(runs[0][0]).isdisjoint(runs[2][0])  # object names carry seeded UUIDs
    assert sorted(runs[0][0].values()) != sorted(runs[2][0].values())


def test_target_bytes(tmp_path: Path) -> None:
    target = 5_000_000
    summary = synth(str(tmp_path), SynthOptions(target_bytes=target, records=10, seed=11))
    assert abs(summary.capture_bytes - target) <= 0.05 * target
    on_disk = sum(p.stat().st_size for p in (tmp_path / "capture").rglob("*.jsonl"))
    assert on_disk == summary.capture_bytes
    assert summary.events > 1000  # `records` is ignored
    counts = list(summary.events_per_hour.values())
    assert max(counts) <= 1.1 * min(counts)


def test_memory_and_file_url_destinations(tmp_path: Path) -> None:
    options = SynthOptions(records=300, records_per_file=40, seed=5)
    dest = f"memory://synth-test-{uuid.uuid4().hex}"
    fs, path = fsspec.core.url_to_fs(dest)
    try:
        summary = synth(dest, options)
        files = read_files(fs, path)
        assert summary.root == dest
        assert summary.capture_root == f"{dest}/capture"
        check_tree(load_tree(files, options), summary, options)
    finally:
        fs.rm(path, recursive=True)
    url_summary = synth(f"file://{tmp_path}", options)
    local = local_files(tmp_path)
    # The filesystem does not change the bytes.
    assert {k: v for k, v in local.items() if k != "synth.json"} == {
        k: v for k, v in files.items() if k != "synth.json"
    }
    assert url_summary.capture_bytes == summary.capture_bytes


def test_defaults(tmp_path: Path) -> None:
    summary = synth(str(tmp_path))
    assert summary.events == 20_000
    assert summary.files >= 20_000 / 400
    assert len(summary.events_per_hour) == 3
    assert sorted({p.parts[-7] for p in (tmp_path / "capture").rglob("*.jsonl")}) == [
        "churn-xgb-endpoint-1",
        "churn-xgb-endpoint-2",
    ]
    assert max(len(p.read_bytes().splitlines()) for p in (tmp_path / "capture").rglob("*.jsonl")) == 400


def test_zero_records_writes_only_the_summary(tmp_path: Path) -> None:
    options = SynthOptions(records=0)
    summary = synth(str(tmp_path), options)
    assert (summary.events, summary.files, summary.labels, summary.label_files) == (0, 0, 0, 0)
    assert set(local_files(tmp_path)) == {"synth.json"}


@pytest.mark.parametrize(
    "changes",
    [
        {"hours": 0},
        {"endpoints": 0},
        {"variants": 0},
        {"features": 0},
        {"records": -1},
        {"target_bytes": 0},
        {"records_per_file": 0},
        {"max_label_delay_hours": -1},
        {"json_share": 1.5},
        {"label_share": -0.1},
        {"start": datetime(2026, 11, 1)},
        {"start": datetime(2026, 11, 1, tzinfo=timezone(timedelta(hours=2)))},
        {"start": datetime(2026, 11, 1, 0, 30, tzinfo=timezone.utc)},
    ],
)
def test_invalid_options_are_rejected(changes: dict[str, Any], tmp_path: Path) -> None:
    with pytest.raises(OptionsError):
        synth(str(tmp_path), replace(SynthOptions(records=10), **changes))
    assert not any(tmp_path.iterdir())


shares = st.floats(0.0, 1.0)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    options=st.builds(
        SynthOptions,
        records=st.integers(0, 120),
        hours=st.integers(1, 3),
        start=st.datetimes(datetime(2020, 1, 1), datetime(2030, 1, 1)).map(
            lambda d: d.replace(minute=0, second=0, microsecond=0, tzinfo=timezone.utc)
        ),
        endpoints=st.integers(1, 3),
        variants=st.integers(1, 3),
        seed=st.integers(0, 2**32),
        features=st.integers(1, 80),
        json_share=shares,
        base64_share=shares,
        inference_id_share=shares,
        multi_record_share=shares,
        fractional_time_share=shares,
        label_share=shares,
        max_label_delay_hours=st.integers(0, 3),
        records_per_file=st.integers(1, 50),
    )
)
def test_any_small_options_give_a_consistent_tree(options: SynthOptions) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        summary = synth(tmp, options)
        tree = load_tree(local_files(Path(tmp)), options)
    assert summary.events == options.records == len(tree.events)
    check_tree(tree, summary, options)


def test_label_objects_are_split_to_bound_memory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(synth_output, "_LABEL_FILE_LINES", 25)
    options = SynthOptions(records=600, hours=2, max_label_delay_hours=1, seed=9)
    summary = synth(str(tmp_path), options)
    tree = load_tree(local_files(tmp_path), options)
    check_tree(tree, summary, options)
    label_keys = [k for k in tree.files if k.startswith("ground-truth/")]
    assert len(label_keys) == summary.label_files > 600 * 0.9 / 25
    sequence_by_folder: dict[str, list[int]] = {}
    for key in label_keys:
        folder, name = key.rsplit("/", 1)
        sequence_by_folder.setdefault(folder, []).append(int(name.split("-")[1].removesuffix(".jsonl")))
        assert len(tree.files[key].splitlines()) <= 25
    assert all(sorted(seq) == list(range(1, len(seq) + 1)) for seq in sequence_by_folder.values())
