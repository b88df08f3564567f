"""Monitoring outputs against the JSON Schemas in schemas/ (derived from the analyzer's real files), and the
ways in: raw capture decoded on the way, capture + ground truth merged on the way, a polars/Arrow table,
per-hour and per-(endpoint, variant) breakdowns, worker processes, ChiSquared categorical drift."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from scipy import stats as sps

from engine import BatchOptions, MergeOptions, RealtimeOptions, run_batch, run_merge, run_realtime
from engine.monitor import passes
from engine.monitor.job import MonitorOptions, run_baseline, run_data_quality, run_model_quality
from engine.monitor.profile import profile_batches
from engine.monitor.quality import QualityOptions
from engine.monitor.statistics import statistics_document
from engine.monitor.violations import chi_squared_p_value, violations_document
from engine.synth import BatchSynthOptions, SynthOptions, synth, synth_batch

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"
# Trimmed real files as the reference quotes them (SageMaker SDK test data), so the schemas are checked to take
# what the analyzer writes, not only what this engine writes.
REAL_STATISTICS = {
    "version": 0.0,
    "dataset": {"item_count": 100},
    "features": [
        {"name": "_c0", "inferred_type": "Fractional",
         "numerical_statistics": {"common": {"num_present": 100, "num_missing": 0}, "mean": 2.31, "sum": 231.0,
                                  "std_dev": 0.8330066026148891, "min": 1.0, "max": 3.0,
                                  "distribution": {"kll": {
                                      "buckets": [{"lower_bound": 1.0, "upper_bound": 1.2, "count": 24.0}],
                                      "sketch": {"parameters": {"c": 0.64, "k": 2048.0}, "data": [[3.0, 1.0, 2.0]]}}}}},
        {"name": "message", "inferred_type": "String",
         "string_statistics": {"common": {"num_present": 418, "num_missing": 0}, "distinct_count": 1.0,
                               "distribution": {"categorical": {"buckets": [
                                   {"value": "preproc-not-YET-supported-for-csv-json", "count": 418}]}}}},
    ],
}  # fmt: skip
REAL_CONSTRAINTS = {
    "version": 0.0,
    "features": [{"name": "_c0", "inferred_type": "Fractional", "completeness": 1.0,
                  "num_constraints": {"is_non_negative": True}}],
    "monitoring_config": {"evaluate_constraints": "Enabled", "emit_metrics": "Enabled",
                          "datatype_check_threshold": 1.0, "domain_content_threshold": 1.0,
                          "distribution_constraints": {"perform_comparison": "Enabled", "comparison_threshold": 0.1,
                                                       "comparison_method": "Robust"}},
}  # fmt: skip
REAL_VIOLATIONS = {
    "violations": [
        {"feature_name": "fare_amount", "constraint_check_type": "data_type_check",
         "description": "Value: 0.4994994994994995 does not meet the constraint requirement! "},
        {"constraint_check_type": "LessThanThreshold",
         "description": "Metric gini with 0.6111 was LessThanThreshold 0.6611", "metric_name": "gini"},
    ]
}  # fmt: skip
REAL_MQ_CONSTRAINTS = {
    "version": 0.0,
    "regression_constraints": {
        "mae": {"threshold": 0.504, "comparison_operator": "GreaterThanThreshold"},
        "r2": {"threshold": 0.6, "comparison_operator": "LessThanThreshold"},
    },
}
CLOUDWATCH_DOC_EXAMPLE = {
    "MetricName": "feature_data_x", "Timestamp": "2019-11-26T03:00:00Z",
    "Dimensions": [{"Name": "Endpoint", "Value": "endpoint_0"}, {"Name": "MonitoringSchedule", "Value": "schedule_0"}],
    "StatisticValues": {"SampleCount": 1.0, "Sum": 1.0, "Minimum": 1.0, "Maximum": 1.0}, "Unit": "Count",
}  # fmt: skip


@functools.cache
def _validator(name: str) -> jsonschema.protocols.Validator:
    schema = json.loads((SCHEMAS / f"monitor-{name}.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def validate_outputs(out: Path, model_quality: bool = False) -> list[str]:
    """Validate every file of an output folder; returns the names validated."""
    stats, cons = (
        ("model-quality-statistics", "model-quality-constraints") if model_quality else ("statistics", "constraints")
    )
    schemas = {
        "statistics.json": stats,
        "constraints.json": cons,
        "constraint_violations.json": "constraint-violations",
    }
    seen = []
    for path in sorted(out.iterdir()):
        if path.name == "cloudwatch_metrics.jsonl":
            v = _validator("cloudwatch-metric")
            for line in path.read_text().splitlines():
                v.validate(json.loads(line))
        elif path.is_file():
            _validator(schemas[path.name]).validate(json.loads(path.read_text()))
        else:
            continue
        seen.append(path.name)
    return seen


def test_the_schemas_take_the_real_files() -> None:
    _validator("statistics").validate(REAL_STATISTICS)
    _validator("constraints").validate(REAL_CONSTRAINTS)
    _validator("constraint-violations").validate(REAL_VIOLATIONS)
    _validator("model-quality-constraints").validate(REAL_MQ_CONSTRAINTS)
    _validator("cloudwatch-metric").validate(CLOUDWATCH_DOC_EXAMPLE)
    both = {**CLOUDWATCH_DOC_EXAMPLE, "Value": 1.0}  # "Either the Value or the StatisticValues field ... not both"
    with pytest.raises(jsonschema.ValidationError):
        _validator("cloudwatch-metric").validate(both)
    bad = json.loads(json.dumps(REAL_STATISTICS))
    bad["features"][0]["inferred_type"] = "Boolean"
    with pytest.raises(jsonschema.ValidationError):
        _validator("statistics").validate(bad)


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("formats")
    opts = SynthOptions(
        records=1600, hours=2, endpoints=2, variants=1, seed=5, json_share=0.0, base64_share=0.0,
        multi_record_share=0.0, records_per_file=400,
    )  # fmt: skip
    synth(str(root / "tree"), opts)
    run_realtime(str(root / "tree" / "capture"), str(root / "decoded"), options=RealtimeOptions(decode=True))
    return root


def _table(n: int, seed: int, shift: float = 0.0) -> pa.Table:
    rng = np.random.default_rng(seed)
    return pa.table(
        {
            "x": rng.normal(shift, 1.0, n),
            "k": rng.integers(0, 5, n),
            "c": rng.choice(["a", "b", "c"], n, p=[0.5, 0.3, 0.2]),
            "label": rng.integers(0, 2, n),
            "score": rng.random(n),
            "y": rng.normal(size=n),
            "cls": rng.choice(["p", "q", "r"], n),
        }
    )


def test_every_output_validates_against_its_schema(tmp_path: Path, tree: Path) -> None:
    base, window = tmp_path / "base", tmp_path / "window"
    # A few features: jsonschema takes some 20 us a number, and a sketch holds up to 2,048 of them.
    few = MonitorOptions(features=("f0", "f1", "f2", "prediction"))
    run_baseline(str(tree / "decoded"), str(base), options=few)
    assert validate_outputs(base) == ["constraints.json", "statistics.json"]
    result = run_data_quality(
        str(tree / "decoded"), str(window),
        baseline_statistics=str(base / "statistics.json"), baseline_constraints=str(base / "constraints.json"),
        options=MonitorOptions(by=("hour", "endpoint"), features=few.features),
    )  # fmt: skip
    assert validate_outputs(window) == ["cloudwatch_metrics.jsonl", "constraint_violations.json", "statistics.json"]
    assert len(result.groups) == 4  # 2 endpoints x 2 hours
    for path in result.groups:
        assert validate_outputs(window / path) == [
            "cloudwatch_metrics.jsonl",
            "constraint_violations.json",
            "statistics.json",
        ]
    # Violations of every kind validate too: a retyped, a missing and an extra column, a drifted one.
    t = _table(3000, 1)
    drifted = t.drop_columns(["k"]).set_column(0, "x", pa.array(np.asarray(t["x"]) + 2)).append_column("new", t["c"])
    docs = run_baseline(t, None)
    viol = run_data_quality(drifted, str(tmp_path / "v"), baseline_statistics=docs[0], baseline_constraints=docs[1])
    assert {v.constraint_check_type for v in viol.found} >= {
        "missing_column_check",
        "extra_column_check",
        "baseline_drift_check",
    }
    assert validate_outputs(tmp_path / "v")
    problems = [
        QualityOptions(
            problem_type="BinaryClassification", probability_attribute="score", ground_truth_attribute="label"
        ),
        QualityOptions(problem_type="MulticlassClassification", inference_attribute="cls", ground_truth_attribute="c"),
        QualityOptions(problem_type="Regression", inference_attribute="x", ground_truth_attribute="y"),
    ]
    for i, quality in enumerate(problems):
        out = tmp_path / f"mq{i}"
        first = run_model_quality(t, str(out), quality=quality)
        run_model_quality(t, str(out), quality=quality, baseline_constraints=first.constraints)
        assert validate_outputs(out, model_quality=True) == [
            "cloudwatch_metrics.jsonl", "constraint_violations.json", "constraints.json", "statistics.json",
        ]  # fmt: skip
    tiny = run_model_quality(pa.table({"y": [1.0, 1.0], "x": [1.0, 2.0]}), str(tmp_path / "tiny"), quality=problems[2])
    assert tiny.statistics["regression_metrics"]["r2"]["value"] == "NaN"  # constant labels: "NaN", never null
    assert validate_outputs(tmp_path / "tiny", model_quality=True)


def test_breakdowns_add_up_and_follow_model_monitors_layout(tmp_path: Path, tree: Path) -> None:
    base = tmp_path / "base"
    run_baseline(str(tree / "decoded"), str(base))
    result = run_data_quality(
        str(tree / "decoded"), str(tmp_path / "out"),
        baseline_statistics=str(base / "statistics.json"), baseline_constraints=str(base / "constraints.json"),
        options=MonitorOptions(by="hour,endpoint", schedule="s"),
    )  # fmt: skip
    counts = {path: g.statistics["dataset"]["item_count"] for path, g in result.groups.items()}
    assert sum(counts.values()) == result.statistics["dataset"]["item_count"] == 1600
    for path in counts:
        endpoint, variant, y, m, d, h = path.split("/")
        assert (y, m, d) == ("2026", "11", "01") and h in ("00", "01")
        metric = json.loads((tmp_path / "out" / path / "cloudwatch_metrics.jsonl").read_text().splitlines()[0])
        assert metric["Timestamp"] == f"2026-11-01T{h}:00:00Z"
        assert {"Name": "Endpoint", "Value": endpoint} in metric["Dimensions"]
        assert {"Name": "Variant", "Value": variant} in metric["Dimensions"]
    f0 = [next(f for f in g.statistics["features"] if f["name"] == "f0") for g in result.groups.values()]
    whole = next(f for f in result.statistics["features"] if f["name"] == "f0")["numerical_statistics"]
    assert sum(f["numerical_statistics"]["sum"] for f in f0) == pytest.approx(whole["sum"], rel=1e-12)


def test_raw_capture_and_a_polars_table_give_the_decoded_datasets_figures(tmp_path: Path, tree: Path) -> None:
    from_dataset = run_baseline(str(tree / "decoded"), None)[0]
    from_capture = run_baseline(str(tree / "tree" / "capture"), None, options=MonitorOptions(format="capture"))[0]
    frame = pl.read_parquet(str(tree / "decoded" / "**" / "*.parquet"), hive_partitioning=False)
    from_frame = run_baseline(frame, None)[0]

    def figures(doc: dict[str, Any]) -> dict[str, Any]:
        return {
            f["name"]: (
                f["inferred_type"],
                round(f["numerical_statistics"]["sum"], 6),
                f["numerical_statistics"]["max"],
            )
            for f in doc["features"]
            if "numerical_statistics" in f
        }

    assert figures(from_capture) == figures(from_dataset) == figures(from_frame)
    assert from_capture["dataset"]["item_count"] == 1600


def test_model_quality_merges_capture_and_ground_truth_on_the_way(
    tmp_path: Path, tree: Path, run_cli: Callable[..., Any]
) -> None:
    merged = tmp_path / "merged"
    run_merge(
        dest=str(merged), ground_truth=str(tree / "tree" / "ground-truth"), captures=str(tree / "tree" / "capture"),
        options=MergeOptions(decode=True),
    )  # fmt: skip
    quality = QualityOptions(problem_type="BinaryClassification", probability_attribute="prediction")
    run_model_quality(str(merged), str(tmp_path / "a"), quality=quality)
    args = ["--problem-type", "BinaryClassification", "--probability-attribute", "prediction", "-q"]
    b = run_cli(
        "monitor", "model-quality", str(tree / "tree" / "capture"), str(tmp_path / "b"), *args,
        "--ground-truth", str(tree / "tree" / "ground-truth"),
    )  # fmt: skip
    assert b.returncode == 0, b.stderr
    sa, sb = (json.loads((tmp_path / x / "statistics.json").read_text()) for x in "ab")
    assert sa["dataset"]["item_count"] == sb["dataset"]["item_count"] > 0
    ma, mb = sa["binary_classification_metrics"], sb["binary_classification_metrics"]
    assert ma["confusion_matrix"] == mb["confusion_matrix"] and ma["auc"]["value"] == mb["auc"]["value"]


def test_worker_processes_give_the_same_profile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for i in range(4):
        pq.write_table(_table(4000, 10 + i), tmp_path / f"part-{i}.parquet")
    monkeypatch.setattr(passes, "PARALLEL_BYTES", 0)
    one = run_baseline(str(tmp_path), None, options=MonitorOptions(workers=1))[0]
    two = run_baseline(str(tmp_path), None, options=MonitorOptions(workers=2))[0]
    for a, b in zip(one["features"], two["features"], strict=True):
        sa, sb = a.get("numerical_statistics"), b.get("numerical_statistics")
        if sa:
            assert (sa["common"], sa["min"], sa["max"]) == (sb["common"], sb["min"], sb["max"])
            assert sa["sum"] == pytest.approx(sb["sum"], rel=1e-12) and sa["std_dev"] == pytest.approx(sb["std_dev"])
        else:
            assert a == b


def test_chi_squared_drift_is_scipys_test_and_fires_below_the_threshold() -> None:
    rng = np.random.default_rng(3)
    base = profile_batches([pa.record_batch({"c": rng.choice(list("abcd"), 4000, p=[0.4, 0.3, 0.2, 0.1])})])
    same = profile_batches([pa.record_batch({"c": rng.choice(list("abcd"), 1000, p=[0.4, 0.3, 0.2, 0.1])})])
    moved = profile_batches([pa.record_batch({"c": rng.choice(list("abcde"), 1000, p=[0.1, 0.3, 0.2, 0.3, 0.1])})])
    stats = statistics_document(base)
    feature = stats["features"][0]
    counts = {b["value"]: b["count"] for b in feature["string_statistics"]["distribution"]["categorical"]["buckets"]}
    observed = np.array([moved.features["c"].categories[k] for k in counts], dtype=float)  # "e": not in the baseline
    expected = np.array(list(counts.values()), dtype=float)
    want = sps.chisquare(observed, expected / expected.sum() * observed.sum()).pvalue
    assert chi_squared_p_value(feature, moved.features["c"]) == pytest.approx(want, rel=1e-9)
    cons = {
        "features": [{"name": "c", "inferred_type": "String"}],
        "monitoring_config": {
            "distribution_constraints": {
                "categorical_drift_method": "ChiSquared",
                "categorical_comparison_threshold": 0.01,
            }
        },
    }
    assert violations_document(stats, cons, same)["violations"] == []
    (v,) = violations_document(stats, cons, moved)["violations"]
    assert v["constraint_check_type"] == "baseline_drift_check" and v["description"].startswith("Chi-squared p-value: ")


def test_suggested_completeness_is_deequs_bound_so_a_like_window_passes() -> None:
    rng = np.random.default_rng(8)

    def holes(n: int, share: float) -> pa.Table:
        x = rng.normal(size=n)
        return pa.table({"x": pa.array(np.where(rng.random(n) < share, np.nan, x), from_pandas=True)})

    stats, cons = run_baseline(holes(20_000, 0.02), None)
    p = 1 - stats["features"][0]["numerical_statistics"]["common"]["num_missing"] / 20_000
    assert cons["features"][0]["completeness"] == pytest.approx(p - 1.96 * np.sqrt(p * (1 - p) / 20_000))
    fired = [
        run_data_quality(holes(20_000, 0.02), None, baseline_statistics=stats, baseline_constraints=cons).found
        for _ in range(5)
    ]
    assert fired == [[]] * 5
    (v,) = run_data_quality(holes(20_000, 0.1), None, baseline_statistics=stats, baseline_constraints=cons).found
    assert v.constraint_check_type == "completeness_check"


def test_data_quality_on_batch_transform_capture(tmp_path: Path) -> None:
    summary = synth_batch(
        str(tmp_path / "s"), BatchSynthOptions(jobs=1, files_per_job=2, records_per_file=60, failed_file_share=0.0)
    )
    decoded = tmp_path / "decoded"
    run_batch(summary.capture_root, str(decoded), options=BatchOptions(decode=True))
    raw = run_baseline(summary.capture_root, None, options=MonitorOptions(format="batch"))[0]
    table = run_baseline(str(decoded), None)[0]
    assert raw["dataset"]["item_count"] == table["dataset"]["item_count"] == summary.records
    assert [f["name"] for f in raw["features"]] == [f["name"] for f in table["features"]]
    assert raw["features"][0]["inferred_type"] in ("Integral", "Fractional")
