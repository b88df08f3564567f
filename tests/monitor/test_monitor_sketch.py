"""The vectorized KLL sketch against exact ranks: exact up to k, within `RANK_ERROR` beyond, merges, DataSketches."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.monitor.sketch import BATCH, RANK_ERROR, KllSketch

K = 2048


def _sketch(values: np.ndarray, batch: int, seed: int = 0) -> KllSketch:
    s = KllSketch(K, seed=seed)
    for lo in range(0, len(values), batch):
        s.update(values[lo : lo + batch])
    return s


def _rank_errors(s: KllSketch, values: np.ndarray) -> tuple[float, float]:
    """The largest CDF error (both sides, at every distinct value and between) and the largest quantile error."""
    ordered = np.sort(values[~np.isnan(values)])
    n = len(ordered)
    distinct = np.unique(ordered)
    points = distinct if len(distinct) <= 20_000 else distinct[np.linspace(0, len(distinct) - 1, 20_000).astype(int)]
    points = np.concatenate([points, [ordered[0] - 1.0, ordered[-1] + 1.0]])
    cdf = 0.0
    for inclusive in (True, False):
        exact = np.searchsorted(ordered, points, side="right" if inclusive else "left") / n
        cdf = max(cdf, float(np.max(np.abs(s.cdf(points, inclusive=inclusive) - exact))))
    ranks = np.linspace(0, 1, 1001)
    q = s.quantiles(ranks)
    lo = np.searchsorted(ordered, q, side="left") / n  # the share strictly below the returned value
    hi = np.searchsorted(ordered, q, side="right") / n  # ... and up to it: the rank is right anywhere between
    quantile = float(np.max(np.maximum(lo - ranks, ranks - hi).clip(min=0.0)))
    return cdf, quantile


_DISTRIBUTIONS = ("normal", "lognormal", "ties", "integers", "constant", "sorted", "reversed", "bimodal")


def _data(kind: str, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind == "normal":
        return rng.normal(size=n)
    if kind == "lognormal":
        return rng.lognormal(sigma=3.0, size=n)
    if kind == "ties":
        return rng.choice([-1.5, 0.0, 2.0, 1e9], size=n, p=[0.1, 0.6, 0.2, 0.1])
    if kind == "integers":
        return rng.poisson(4.0, size=n).astype(np.float64)
    if kind == "constant":
        return np.full(n, 7.25)
    if kind == "sorted":
        return np.sort(rng.normal(size=n))
    if kind == "reversed":
        return np.sort(rng.normal(size=n))[::-1].copy()
    return np.concatenate([rng.normal(-50, 1, n // 2), rng.normal(50, 1, n - n // 2)])


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.floats(-1e6, 1e6) | st.just(float("nan")) | st.sampled_from([0.0, 1.0]), min_size=1, max_size=K),
    st.integers(1, 700),
)
def test_exact_up_to_k_values_with_ties_and_nan(values: list[float], batch: int) -> None:
    x = np.asarray(values, dtype=np.float64)
    s = _sketch(x, batch)
    finite = x[~np.isnan(x)]
    assert s.count() == len(finite)  # NaN is not a value
    if not len(finite):
        assert np.isnan(s.cdf(np.array([0.0]), inclusive=True)).all()
        return
    assert _rank_errors(s, x) == (0.0, 0.0)
    assert (s.minimum, s.maximum) == (finite.min(), finite.max())


@settings(max_examples=25, deadline=None)
@given(
    st.sampled_from(_DISTRIBUTIONS),
    st.integers(K + 1, 150_000),
    st.sampled_from([1, 977, 10_000, BATCH, 200_000]),
    st.integers(0, 2**32),
)
def test_rank_error_beyond_k_is_within_the_bound(kind: str, n: int, batch: int, seed: int) -> None:
    x = _data(kind, n, seed)
    s = _sketch(x, batch if batch > 1 else max(1, n // 5000), seed=seed)
    cdf, quantile = _rank_errors(s, x)
    assert cdf <= RANK_ERROR and quantile <= RANK_ERROR, (cdf, quantile)
    assert s.count() == n and (s.minimum, s.maximum) == (x.min(), x.max())
    assert s.retained <= 3 * K + 64  # memory bounded by k, not by n


def test_huge_counts_stay_within_the_bound_and_bounded_in_size() -> None:
    x = _data("lognormal", 600_000, 3)
    s = KllSketch(K, seed=1)
    for _ in range(4):  # 2.4 million values, every one of them four times over: ties at scale
        s.update(x)
    cdf, quantile = _rank_errors(s, np.concatenate([x] * 4))
    assert cdf <= RANK_ERROR and quantile <= RANK_ERROR
    assert s.count() == 2_400_000 and s.retained <= 3 * K + 64


def test_a_merge_of_many_partial_sketches_is_within_the_bound() -> None:
    rng = np.random.default_rng(5)
    x = np.concatenate([rng.normal(i % 7, 1 + i % 3, size=int(rng.integers(1, 20_000))) for i in range(120)])
    cuts = np.sort(rng.choice(np.arange(1, len(x)), size=59, replace=False))
    parts = [_sketch(part, 4096, seed=i) for i, part in enumerate(np.split(x, cuts))]
    # Merged as the worker processes and groups merge them: some pairwise first, then in sequence.
    while len(parts) > 8:
        for a, b in zip(parts[::2], parts[1::2], strict=False):  # an odd last one waits for the next round
            a.merge(b)
        parts = parts[::2]
    whole = parts[0]
    for other in parts[1:]:
        whole.merge(other)
    cdf, quantile = _rank_errors(whole, x)
    assert cdf <= RANK_ERROR and quantile <= RANK_ERROR
    assert whole.count() == len(x) and (whole.minimum, whole.maximum) == (x.min(), x.max())
    empty = KllSketch(K)
    empty.merge(KllSketch(K))
    assert empty.count() == 0


def test_no_worse_than_datasketches_on_the_same_data() -> None:
    datasketches = pytest.importorskip("datasketches")
    x = _data("bimodal", 400_000, 11)
    ordered = np.sort(x)
    points = ordered[np.linspace(0, len(x) - 1, 4001).astype(int)]
    exact = np.searchsorted(ordered, points, side="right") / len(x)
    theirs = []
    for _ in range(3):
        d = datasketches.kll_doubles_sketch(K)
        for lo in range(0, len(x), 10_000):
            d.update(x[lo : lo + 10_000])
        theirs.append(float(np.max(np.abs(np.asarray(d.get_cdf(points.tolist())[:-1]) - exact))))
    mine = max(
        float(np.max(np.abs(_sketch(x, 10_000, seed).cdf(points, inclusive=True) - exact))) for seed in (1, 2, 3)
    )
    assert mine <= max(2 * np.mean(theirs), 2.0 / K), (mine, theirs)


def test_pickled_for_workers_and_reproducible() -> None:
    x = _data("normal", 300_000, 2)
    a, b = _sketch(x[:123_456], 8192, seed=9), _sketch(x[:123_456], 8192, seed=9)
    a = pickle.loads(pickle.dumps(a))
    for s in (a, b):
        s.update(x[123_456:])
    grid = np.linspace(-4, 4, 101)
    assert np.array_equal(a.cdf(grid, inclusive=True), b.cdf(grid, inclusive=True))
    assert np.array_equal(a.quantiles(np.linspace(0, 1, 11)), b.quantiles(np.linspace(0, 1, 11)))
