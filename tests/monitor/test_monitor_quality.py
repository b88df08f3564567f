"""Model quality against scikit-learn on the same labels and scores, the documentation's example, streaming."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from sklearn import metrics as skm

from engine.monitor.quality import (
    QualityOptions,
    model_quality,
    quality_constraints,
    quality_statistics,
    quality_violations,
)


def _batches(table: pa.Table) -> list[pa.RecordBatch]:
    return table.to_batches(max_chunksize=333)


def _values(stats: dict[str, object], key: str) -> dict[str, float]:
    return {k: v["value"] for k, v in stats[key].items() if isinstance(v, dict) and "value" in v}  # type: ignore[union-attr]


def test_the_documentations_binary_example() -> None:
    """{"0":{"0":1,"1":2},"1":{"0":0,"1":1}}: recall 1.0, precision 1/3; best constant 0.25, 1.0, 0.4."""
    truth = ["0", "0", "0", "1"]
    pred = ["0", "1", "1", "1"]
    state = model_quality([pa.record_batch({"label": truth, "predicted_label": pred})], QualityOptions(
        problem_type="BinaryClassification", inference_attribute="predicted_label"))  # fmt: skip
    stats = quality_statistics(state)
    m = stats["binary_classification_metrics"]
    assert m["confusion_matrix"] == {"0": {"0": 1, "1": 2}, "1": {"1": 1}}
    assert (m["recall"]["value"], m["precision"]["value"]) == (1.0, pytest.approx(1 / 3))
    assert m["precision_best_constant_classifier"]["value"] == 0.25
    assert m["recall_best_constant_classifier"]["value"] == 1.0
    assert m["f1_best_constant_classifier"]["value"] == pytest.approx(0.4)
    assert m["accuracy"]["standard_deviation"] == "NaN"  # fewer than 200 rows
    assert stats["version"] == 0.0 and stats["dataset"]["item_count"] == 4


def test_binary_metrics_equal_scikit_learn() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 5000)
    score = np.clip(0.35 * y + rng.normal(0.35, 0.2, 5000), 0, 1)
    table = pa.table({"label_value": y.astype(float), "score": score})
    opts = QualityOptions(
        problem_type="BinaryClassification", probability_attribute="score", ground_truth_attribute="label_value"
    )
    state = model_quality(_batches(table), opts)
    stats = quality_statistics(state)
    m = _values(stats, "binary_classification_metrics")
    pred = (score >= 0.5).astype(int)
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    assert m["precision"] == pytest.approx(skm.precision_score(y, pred))
    assert m["recall"] == pytest.approx(skm.recall_score(y, pred))
    assert m["f1"] == pytest.approx(skm.f1_score(y, pred))
    assert m["f0_5"] == pytest.approx(skm.fbeta_score(y, pred, beta=0.5))
    assert m["f2"] == pytest.approx(skm.fbeta_score(y, pred, beta=2))
    tn, fp, _, _ = skm.confusion_matrix(y, pred).ravel()
    assert m["false_positive_rate"] == pytest.approx(fp / (fp + tn))
    assert m["true_negative_rate"] == pytest.approx(tn / (tn + fp))
    assert m["auc"] == pytest.approx(skm.roc_auc_score(y, score), abs=2e-3)  # 10,000 score bins
    std = stats["binary_classification_metrics"]["accuracy"]["standard_deviation"]
    assert isinstance(std, float) and 0 < std < 0.02
    curve = stats["binary_classification_metrics"]["receiver_operating_characteristic_curve"]
    assert curve["false_positive_rates"][0] == 0.0 and len(curve["true_positive_rates"]) <= 202


def test_multiclass_metrics_equal_scikit_learn() -> None:
    rng = np.random.default_rng(1)
    y = rng.choice(["cat", "dog", "eel"], 3000, p=[0.5, 0.3, 0.2])
    pred = np.where(rng.random(3000) < 0.7, y, rng.choice(["cat", "dog", "eel"], 3000))
    state = model_quality(_batches(pa.table({"label": y, "p": pred})), QualityOptions(
        problem_type="MulticlassClassification", inference_attribute="p"))  # fmt: skip
    m = _values(quality_statistics(state), "multiclass_classification_metrics")
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    assert m["weighted_recall"] == pytest.approx(skm.recall_score(y, pred, average="weighted"))
    assert m["weighted_precision"] == pytest.approx(skm.precision_score(y, pred, average="weighted"))
    assert m["weighted_f1"] == pytest.approx(skm.f1_score(y, pred, average="weighted"))
    assert m["weighted_f2"] == pytest.approx(skm.fbeta_score(y, pred, beta=2, average="weighted"))
    constant = np.full(3000, "cat")
    assert m["accuracy_best_constant_classifier"] == pytest.approx(skm.accuracy_score(y, constant))
    assert m["weighted_precision_best_constant_classifier"] == pytest.approx(
        skm.precision_score(y, constant, average="weighted", zero_division=0)
    )
    assert m["weighted_f1_best_constant_classifier"] == pytest.approx(
        skm.f1_score(y, constant, average="weighted", zero_division=0)
    )


def test_regression_metrics_equal_scikit_learn_and_constraints_fire() -> None:
    rng = np.random.default_rng(2)
    y = rng.normal(10, 3, 4000)
    yhat = y + rng.normal(0, 1, 4000)
    opts = QualityOptions(problem_type="Regression", inference_attribute="yhat", ground_truth_attribute="y")
    stats = quality_statistics(model_quality(_batches(pa.table({"y": y, "yhat": yhat})), opts))
    m = _values(stats, "regression_metrics")
    assert m["mae"] == pytest.approx(skm.mean_absolute_error(y, yhat))
    assert m["mse"] == pytest.approx(skm.mean_squared_error(y, yhat))
    assert m["rmse"] == pytest.approx(np.sqrt(skm.mean_squared_error(y, yhat)))
    assert m["r2"] == pytest.approx(skm.r2_score(y, yhat))
    cons = quality_constraints(stats)
    assert cons["regression_constraints"]["mae"]["comparison_operator"] == "GreaterThanThreshold"
    assert cons["regression_constraints"]["r2"]["comparison_operator"] == "LessThanThreshold"
    assert quality_violations(stats, cons) == {"violations": []}
    worse = quality_statistics(model_quality(_batches(pa.table({"y": y, "yhat": y + rng.normal(0, 3, 4000)})), opts))
    found = {v["metric_name"]: v for v in quality_violations(worse, cons)["violations"]}
    assert set(found) == {"mae", "mse", "rmse", "r2"}
    assert (
        found["r2"]["description"].startswith("Metric r2 with ")
        and " was LessThanThreshold " in found["r2"]["description"]
    )
