"""Monitoring profile and statistics.json: exact figures against numpy, Deequ's type rules, mergeability."""

from __future__ import annotations

import math
import random

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.monitor.profile import Profile, profile_batches
from engine.monitor.sketch import RANK_ERROR
from engine.monitor.statistics import statistics_document


def test_the_real_analyzer_file_figures() -> None:
    """The SageMaker SDK's quality-check statistics.json: {1 x 24, 2 x 21, 3 x 55} (formats reference 1.4.1)."""
    values = [1.0] * 24 + [2.0] * 21 + [3.0] * 55
    random.Random(0).shuffle(values)
    doc = statistics_document(profile_batches(pa.table({"_c0": [str(v) for v in values]}).to_batches(max_chunksize=7)))
    assert doc["version"] == 0.0 and doc["dataset"] == {"item_count": 100}
    (f,) = doc["features"]
    assert f["name"] == "_c0" and f["inferred_type"] == "Fractional"  # "1.0" text, as the analyzer typed it
    num = f["numerical_statistics"]
    assert num["common"] == {"num_present": 100, "num_missing": 0}
    assert (num["mean"], num["sum"], num["min"], num["max"]) == (2.31, 231.0, 1.0, 3.0)
    assert num["std_dev"] == pytest.approx(0.8330066026148891, rel=1e-12)  # population, not sample (0.8372)
    buckets = num["distribution"]["kll"]["buckets"]
    assert len(buckets) == 10
    assert [b["count"] for b in buckets] == [24.0, 0, 0, 0, 0, 21.0, 0, 0, 0, 55.0]
    assert (buckets[5]["lower_bound"], buckets[5]["upper_bound"]) == (2.0, 2.2)  # 2.0 opens its bucket
    sketch = num["distribution"]["kll"]["sketch"]
    assert sketch["parameters"] == {"c": 0.64, "k": 2048.0}
    assert sketch["data"] == [values]  # n <= k: the values in insertion order


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.floats(-1e6, 1e6, allow_nan=False, width=32), min_size=1, max_size=400),
    st.integers(1, 50),
    st.integers(0, 5),
)
def test_moments_equal_numpy_in_any_batching(values: list[float], chunk: int, nulls: int) -> None:
    data = values + [None] * nulls
    random.Random(len(values)).shuffle(data)
    profile = profile_batches(pa.table({"x": pa.array(data, pa.float64())}).to_batches(max_chunksize=chunk))
    f = profile.features["x"]
    arr = np.asarray(values, dtype=np.float64)
    assert (f.present, f.missing, f.n) == (len(values), nulls, len(values))
    assert f.mean == pytest.approx(arr.mean(), rel=1e-9, abs=1e-6)
    assert f.total == pytest.approx(arr.sum(), rel=1e-9, abs=1e-6)
    assert f.std_dev == pytest.approx(arr.std(), rel=1e-7, abs=1e-6)
    assert (f.minimum, f.maximum) == (arr.min(), arr.max())


def test_profiles_of_parts_merge_to_the_profile_of_the_whole() -> None:
    rng = np.random.default_rng(1)
    a = pa.table({"x": rng.normal(size=5000), "c": rng.choice(["u", "v", "w"], 5000)})
    b = pa.table({"x": rng.normal(3, 2, size=7000), "c": rng.choice(["v", "z"], 7000)})
    whole = profile_batches(pa.concat_tables([a, b]).to_batches())
    left, right = profile_batches(a.to_batches()), profile_batches(b.to_batches())
    left.merge(right)
    for name in ("x", "c"):
        w, m = whole.features[name], left.features[name]
        assert (w.present, w.n, w.minimum, w.maximum) == (m.present, m.n, m.minimum, m.maximum)
    wx, mx = whole.features["x"], left.features["x"]
    assert wx.mean == pytest.approx(mx.mean) and wx.std_dev == pytest.approx(mx.std_dev)
    assert left.features["c"].categories == whole.features["c"].categories
    assert statistics_document(left)["features"][1]["string_statistics"]["distinct_count"] == 4.0


def test_bucket_counts_within_the_sketch_error_and_distinct_counts() -> None:
    rng = np.random.default_rng(2)
    x = rng.lognormal(size=200_000)
    profile = profile_batches(
        pa.table({"x": x, "s": [f"id-{i}" for i in range(200_000)]}).to_batches(max_chunksize=8192)
    )
    doc = statistics_document(profile)
    buckets = doc["features"][0]["numerical_statistics"]["distribution"]["kll"]["buckets"]
    edges = np.linspace(x.min(), x.max(), 11)
    exact, _ = np.histogram(x, bins=edges)
    error = RANK_ERROR * len(x)
    assert all(abs(b["count"] - e) <= 2 * error + 1 for b, e in zip(buckets, exact, strict=True))
    assert sum(b["count"] for b in buckets) == pytest.approx(len(x), abs=10)
    strings = doc["features"][1]["string_statistics"]
    assert "distribution" not in strings  # beyond 120 categories: no histogram, as Deequ
    assert strings["distinct_count"] == pytest.approx(200_000, rel=0.05)


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (["1", "2", "-3"], "Integral"),
        (["1.", ".5", "2"], "Fractional"),
        (["- 3", "+4"], "Integral"),  # Deequ's pattern allows a sign and one space
        (["1e-5", "2"], "String"),  # exponents are not numbers to Deequ
        (["NaN", "1.5"], "String"),
        (["true", "false"], "String"),  # Model Monitor has no Boolean type
        ([None, None], "Unknown"),
        (["a", "1"], "String"),
    ],
)
def test_types_of_text_follow_deequ(values: list[str | None], expected: str) -> None:
    doc = statistics_document(profile_batches([pa.record_batch({"v": pa.array(values, pa.string())})]))
    assert doc["features"][0]["inferred_type"] == expected


def test_types_of_numbers_are_decided_by_their_values() -> None:
    batch = pa.record_batch(
        {
            "whole_floats": pa.array([1.0, 2.0, None]),
            "floats": pa.array([1.0, 2.5, None]),
            "ints": pa.array([1, 2, 3]),
            "nan": pa.array([1.0, math.nan, 2.0]),
        }
    )
    types = {f["name"]: f["inferred_type"] for f in statistics_document(profile_batches([batch]))["features"]}
    assert types == {"whole_floats": "Integral", "floats": "Fractional", "ints": "Integral", "nan": "String"}


def test_a_missing_column_counts_as_missing() -> None:
    p = Profile()
    p.add(pa.record_batch({"a": [1, 2]}), ["a", "b"])
    assert (p.features["b"].present, p.features["b"].missing) == (0, 2)
    assert statistics_document(p)["features"][1]["inferred_type"] == "Unknown"
