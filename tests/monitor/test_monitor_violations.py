"""Data-quality checks against a baseline: each kind of change gives exactly its violation, with Model
Monitor's wording; the drift distance equals Kolmogorov-Smirnov's statistic (Simple) and Deequ's correction
(Robust)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from scipy.stats import ks_2samp

from engine.monitor.constraints import constraints_document
from engine.monitor.profile import profile_batches
from engine.monitor.statistics import statistics_document
from engine.monitor.violations import numerical_distance, violations_document


def _table(rng: np.random.Generator, n: int, *, shift: float = 0.0) -> pa.Table:
    return pa.table(
        {
            "age": rng.integers(18, 90, n),
            "score": rng.normal(shift, 1.0, n),
            "state": rng.choice(["CA", "NY", "TX"], n, p=[0.5, 0.3, 0.2]),
        }
    )


def _baseline(table: pa.Table) -> tuple[dict[str, Any], dict[str, Any]]:
    profile = profile_batches(table.to_batches(max_chunksize=500))
    return statistics_document(profile), constraints_document(profile)


def _check(stats: dict[str, Any], cons: dict[str, Any], window: pa.Table) -> list[tuple[str, str]]:
    doc = violations_document(stats, cons, profile_batches(window.to_batches(max_chunksize=300)))
    return sorted((v["feature_name"], v["constraint_check_type"]) for v in doc["violations"])


def test_suggested_constraints_follow_the_real_files() -> None:
    _, cons = _baseline(_table(np.random.default_rng(0), 1500))
    assert cons["version"] == 0.0
    assert cons["monitoring_config"]["datatype_check_threshold"] == 1.0
    assert cons["monitoring_config"]["distribution_constraints"]["comparison_method"] == "Robust"
    by = {f["name"]: f for f in cons["features"]}
    assert by["age"] == {
        "name": "age",
        "inferred_type": "Integral",
        "completeness": 1.0,
        "num_constraints": {"is_non_negative": True},
    }
    assert by["score"]["num_constraints"] == {"is_non_negative": False}
    assert by["state"]["string_constraints"] == {"domains": ["CA", "NY", "TX"]}


def test_a_window_from_the_baseline_distribution_gives_no_violation() -> None:
    stats, cons = _baseline(_table(np.random.default_rng(1), 2000))
    assert _check(stats, cons, _table(np.random.default_rng(2), 800)) == []


def test_each_change_gives_exactly_its_violation() -> None:
    stats, cons = _baseline(_table(np.random.default_rng(3), 2000))
    rng = np.random.default_rng(4)
    base = _table(rng, 800)
    assert _check(stats, cons, _table(rng, 800, shift=1.5)) == [("score", "baseline_drift_check")]
    assert _check(stats, cons, base.drop_columns(["state"])) == [("state", "missing_column_check")]
    assert _check(stats, cons, base.append_column("new", pa.array(np.ones(800)))) == [("new", "extra_column_check")]
    retyped = base.set_column(0, "age", pa.array([f"a{i}" for i in range(800)]))
    assert ("age", "data_type_check") in _check(stats, cons, retyped)
    holes = base.set_column(
        1, "score", pa.array([None if i % 10 == 0 else v for i, v in enumerate(base["score"].to_pylist())])
    )
    assert _check(stats, cons, holes) == [("score", "completeness_check")]
    new_state = base.set_column(2, "state", pa.array(["CA"] * 799 + ["WA"]))
    found = _check(stats, cons, new_state)
    assert ("state", "categorical_values_check") in found


def test_descriptions_use_the_analyzers_wording() -> None:
    stats, cons = _baseline(_table(np.random.default_rng(5), 2000))
    window = _table(np.random.default_rng(6), 800)
    window = window.set_column(1, "score", pa.array([None] * 400 + window["score"].to_pylist()[400:]))
    (v,) = violations_document(stats, cons, profile_batches(window.to_batches()))["violations"]
    assert v == {
        "feature_name": "score",
        "constraint_check_type": "completeness_check",
        "description": "Value: 0.5 does not meet the constraint requirement! ",
    }


@pytest.mark.parametrize("seed", range(5))
def test_simple_distance_is_the_ks_statistic_and_robust_its_correction(seed: int) -> None:
    rng = np.random.default_rng(seed)
    a = rng.normal(0, 1, 1500)
    b = rng.normal(0.3, 1.2, 700)
    stats = statistics_document(profile_batches([pa.record_batch({"x": a})]))
    window = profile_batches([pa.record_batch({"x": b})])
    d = numerical_distance(stats["features"][0], window.features["x"])
    assert d == pytest.approx(ks_2samp(a, b).statistic, abs=1e-12)  # both samples within k: exact
    cons = constraints_document(profile_batches([pa.record_batch({"x": a})]))
    (v,) = violations_document(stats, cons, window)["violations"] or [None]
    robust = max(0.0, d - 1.8 * math.sqrt((1500 + 700) / (1500 * 700)))
    if robust > 0.1:
        assert v is not None and v["description"] == f"Numerical distance: {robust!r} exceeds numerical threshold: 0.1"
    else:
        assert v is None


def test_a_baseline_sketch_in_the_analyzers_levels_is_read_with_level_weights() -> None:
    """Level h of the analyzer's compactor weighs 2^h: [[3, 4], [1]] is the sample {1, 1, 3, 4}."""
    stats = {"numerical_statistics": {"distribution": {"kll": {"sketch": {"data": [[3.0, 4.0], [1.0]]}}}}}
    window = profile_batches([pa.record_batch({"x": pa.array([1.0, 1.0, 3.0, 4.0])})])
    assert numerical_distance(stats, window.features["x"]) == 0.0
