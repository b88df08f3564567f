"""The data-quality jobs end to end: synth capture -> realtime --decode -> baseline on the first hour ->
monitor later hours, one with an injected drift; CSV (with and without header) and JSON Lines baselines;
the real CLI in a subprocess."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from engine import RealtimeOptions, run_realtime
from engine.monitor.job import MonitorOptions, run_baseline, run_data_quality
from engine.synth import SynthOptions, synth


def _inject_drift(capture: Path, hour: str, feature: int, factor: float) -> None:
    """Multiply CSV feature `feature` of every request in the hour folder by `factor` (the model's input drifts)."""
    for path in capture.rglob(f"{hour}/*.jsonl"):
        lines = []
        for line in path.read_text().splitlines():
            rec = json.loads(line)
            data = rec["captureData"]["endpointInput"]["data"].split(",")
            data[feature] = f"{float(data[feature]) * factor:.2f}"
            rec["captureData"]["endpointInput"]["data"] = ",".join(data)
            lines.append(json.dumps(rec))
        path.write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def decoded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("monitor")
    opts = SynthOptions(
        records=6000, hours=3, endpoints=1, variants=1, seed=11, json_share=0.0, base64_share=0.0,
        multi_record_share=0.0, records_per_file=500,
    )  # fmt: skip
    synth(str(root / "tree"), opts)
    _inject_drift(root / "tree" / "capture", "2026/11/01/02", feature=2, factor=3.0)
    run_realtime(str(root / "tree" / "capture"), str(root / "decoded"), options=RealtimeOptions(decode=True))
    return root


def test_baseline_then_windows_with_and_without_drift(decoded: Path) -> None:
    base = decoded / "baseline"
    stats, cons = run_baseline(
        str(decoded / "decoded"), str(base), options=MonitorOptions(start="2026-11-01T00", end="2026-11-01T01")
    )
    names = [f["name"] for f in stats["features"]]
    assert names[:3] == ["f0", "f1", "f2"] and "prediction" in names
    assert not {"event_id", "source_file", "inference_time", "year"} & set(names)  # provenance is not a feature
    assert json.loads((base / "constraints.json").read_text()) == cons

    def window(hour: str, out: str) -> Any:
        return run_data_quality(
            str(decoded / "decoded"),
            str(decoded / out),
            baseline_statistics=str(base / "statistics.json"),
            baseline_constraints=str(base / "constraints.json"),
            options=MonitorOptions(start=f"2026-11-01T{hour}", end=f"2026-11-01T{int(hour) + 1:02d}", endpoint="ep"),
        )

    calm = window("01", "h01")
    assert calm.violations == {"violations": []}
    drifted = window("02", "h02")
    found = {(v["feature_name"], v["constraint_check_type"]) for v in drifted.violations["violations"]}
    assert ("f2", "baseline_drift_check") in found
    assert all(name == "f2" for name, check in found if check == "baseline_drift_check")
    on_disk = json.loads((decoded / "h02" / "constraint_violations.json").read_text())
    assert on_disk == drifted.violations
    metrics = [json.loads(line) for line in (decoded / "h02" / "cloudwatch_metrics.jsonl").read_text().splitlines()]
    by = {m["MetricName"]: m for m in metrics}
    assert by["feature_non_null_f2"]["Value"] == 1.0
    assert by["feature_data_f2"]["StatisticValues"]["SampleCount"] == drifted.statistics["dataset"]["item_count"]
    assert by["feature_baseline_drift_f2"]["Value"] > 0.1 > by["feature_baseline_drift_f0"]["Value"]
    assert by["feature_data_f2"]["Dimensions"] == [
        {"Name": "Endpoint", "Value": "ep"},
        {"Name": "MonitoringSchedule", "Value": "schedule"},
    ]
    assert by["feature_data_f2"]["Timestamp"] == "2026-11-01T02:00:00Z"  # the window start, as metric_time


@pytest.mark.parametrize("header", [False, True])
def test_csv_baselines_are_typed_from_their_text(tmp_path: Path, header: bool) -> None:
    rng = np.random.default_rng(0)
    rows = [f"{rng.integers(0, 9)},{rng.normal():.3f},{rng.choice(['a', 'b'])}" for _ in range(500)]
    path = tmp_path / "train.csv"
    path.write_text(("age,score,kind\n" if header else "") + "\n".join(rows) + "\n")
    stats, cons = run_baseline(str(path), str(tmp_path / "out"), options=MonitorOptions(header=header))
    names = ["age", "score", "kind"] if header else ["_c0", "_c1", "_c2"]
    assert [(f["name"], f["inferred_type"]) for f in stats["features"]] == list(
        zip(names, ["Integral", "Fractional", "String"], strict=True)
    )
    assert stats["dataset"]["item_count"] == 500
    assert cons["features"][2]["string_constraints"] == {"domains": ["a", "b"]}


def test_jsonl_baseline(tmp_path: Path) -> None:
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps({"x": i, "y": i / 3, "s": "k"}) + "\n" for i in range(50)))
    stats, _ = run_baseline(str(path), str(tmp_path / "out"))
    assert [(f["name"], f["inferred_type"]) for f in stats["features"]] == [
        ("x", "Integral"),
        ("y", "Fractional"),
        ("s", "String"),
    ]


def test_cli_baseline_and_data_quality(decoded: Path, run_cli: Callable[..., Any]) -> None:
    base = decoded / "cli-baseline"
    done = run_cli("baseline", str(decoded / "decoded"), str(base), "--features", "f0,f2,prediction")
    assert done.returncode == 0, done.stderr
    assert "3 features" in done.stdout
    dq = run_cli(
        "monitor", "data-quality", str(decoded / "decoded"), str(decoded / "cli-out"),
        "--baseline-statistics", str(base / "statistics.json"),
        "--baseline-constraints", str(base / "constraints.json"),
        "--features", "f0,f2,prediction", "--start", "2026-11-01T02", "--end", "2026-11-01T03",
    )  # fmt: skip
    assert dq.returncode == 0, dq.stderr
    assert "f2: baseline_drift_check: Numerical distance:" in dq.stdout
    missing = run_cli(
        "monitor", "data-quality", str(decoded / "decoded"), str(decoded / "x"),
        "--baseline-statistics", str(decoded / "nope.json"), "--baseline-constraints", str(base / "constraints.json"),
    )  # fmt: skip
    assert missing.returncode == 1 and missing.stderr.count("\n") == 1 and "nope.json" in missing.stderr


def test_cli_model_quality_on_merged_synth_data(decoded: Path, run_cli: Callable[..., Any]) -> None:
    merged = decoded / "merged"
    tree = decoded / "tree"
    done = run_cli(
        "merge", "--captures", str(tree / "capture"), "--ground-truth", str(tree / "ground-truth"),
        str(merged), "--decode", "-q",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    base = decoded / "mq-base"
    first = run_cli(
        "monitor", "model-quality", str(merged), str(base), "--problem-type", "BinaryClassification",
        "--probability-attribute", "prediction", "--ground-truth-attribute", "label_value",
        "--start", "2026-11-01T00", "--end", "2026-11-01T01",
    )  # fmt: skip
    assert first.returncode == 0, first.stderr
    stats = json.loads((base / "statistics.json").read_text())
    m = stats["binary_classification_metrics"]
    assert stats["dataset"]["item_count"] > 200 and 0.5 < m["auc"]["value"] <= 1.0
    assert isinstance(m["accuracy"]["standard_deviation"], float)
    cons = json.loads((base / "constraints.json").read_text())
    assert cons["binary_classification_constraints"]["accuracy"]["comparison_operator"] == "LessThanThreshold"
    later = run_cli(
        "monitor", "model-quality", str(merged), str(decoded / "mq-later"), "--problem-type", "BinaryClassification",
        "--probability-attribute", "prediction", "--ground-truth-attribute", "label_value",
        "--baseline-constraints", str(base / "constraints.json"),
    )  # fmt: skip
    assert later.returncode == 0, later.stderr
    assert (decoded / "mq-later" / "constraint_violations.json").exists()
    records = (decoded / "mq-later" / "cloudwatch_metrics.jsonl").read_text().splitlines()
    assert any(json.loads(r)["MetricName"] == "auc" for r in records)
