"""A KLL quantile sketch that takes whole arrays: numpy sorts and strided halving, no per-value Python.

Karnin, Lang and Liberty's KLL sketch, as Apache DataSketches and Deequ build it: levels of items, an item at
level h standing for 2^h values; a level over its capacity is *compacted* (sorted, then every other item, from
a random first one, moves up a level, weight doubled). Capacities shrink geometrically below the top level:
k at the top, k * (2/3)^d at depth d, at least 8. Each compaction of a level-h run changes any rank by at
most 2^h with a mean of zero, and the number of compactions per level is what the KLL analysis counts.

What differs from DataSketches is only how updates arrive: a batch of values is sorted once (numpy's SIMD
sort, about 10 ns a value against DataSketches' 60 ns a value through its Python binding, which takes one
array but updates value by value) and merged into the sorted level 0, so a level can be compacted while
longer than its capacity. A longer compaction makes fewer compactions, never more, so the error bound is
KLL's: at k = 2048 the normalized rank error is below DataSketches' published 0.138% (99% confidence, single
query) in our tests against exact ranks, and the maximum over all queries stays below `RANK_ERROR`.

Levels are kept sorted, so merging two sketches (parts of the data, worker processes) is a linear merge of
sorted runs followed by compaction; the random bits come from a seeded generator, so a run is reproducible.
With at most k values nothing is compacted and every rank is exact.
"""

from __future__ import annotations

import numpy as np

__all__ = ["BATCH", "RANK_ERROR", "KllSketch"]

# The bound on the normalized rank error at k = 2048 that the tests hold this sketch to for every query
# (DataSketches' 0.138% is for one query at 99% confidence; over all queries the maximum is larger).
RANK_ERROR = 0.003
BATCH = 65_536
_SHRINK = 2.0 / 3.0  # KLL's capacity ratio between a level and the one above it
_MIN_WIDTH = 8


def _merge_sorted(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if not len(a):
        return b
    if not len(b):
        return a
    # Two sorted runs: the stable sort (timsort) finds them and merges in linear time.
    return np.sort(np.concatenate([a, b]), kind="stable")


class KllSketch:
    """A mergeable quantile sketch of float64 values (NaN ignored), exact up to k values."""

    def __init__(self, k: int = 2048, *, seed: int = 0) -> None:
        self.k = k
        self.n = 0
        self.minimum = np.inf
        self.maximum = -np.inf
        self.levels: list[np.ndarray] = [np.empty(0, dtype=np.float64)]  # sorted; level h weighs 2^h
        self._rng = np.random.default_rng(seed)
        # Updates wait here until BATCH values have come: a sort and a compaction cascade per call cost
        # about 100 us, which at the 10,000-row batches of a file a row group cost more than the sorting.
        self._pending: list[np.ndarray] = []
        self._pending_n = 0

    def update(self, values: np.ndarray) -> None:
        """Add an array of values (kept by reference until the next flush: do not change it)."""
        if len(values):
            self._pending.append(np.asarray(values, dtype=np.float64))
            self._pending_n += len(values)
            if self._pending_n >= BATCH:
                self._flush()

    def _flush(self) -> None:
        if not self._pending:
            return
        ordered = np.concatenate(self._pending) if len(self._pending) > 1 else self._pending[0].copy()
        self._pending, self._pending_n = [], 0
        ordered.sort()
        if len(ordered) and np.isnan(ordered[-1]):  # NaN sort last
            ordered = ordered[: int(np.searchsorted(ordered, np.nan, side="left"))]
        if not len(ordered):
            return
        self.n += len(ordered)
        self.minimum = min(self.minimum, float(ordered[0]))
        self.maximum = max(self.maximum, float(ordered[-1]))
        self.levels[0] = _merge_sorted(self.levels[0], ordered)
        self._compress()

    def merge(self, other: KllSketch) -> None:
        """Add another sketch (of other values)."""
        self._flush()
        other._flush()
        if not other.n:
            return
        self.n += other.n
        self.minimum = min(self.minimum, other.minimum)
        self.maximum = max(self.maximum, other.maximum)
        for h, items in enumerate(other.levels):
            if h == len(self.levels):
                self.levels.append(np.empty(0, dtype=np.float64))
            self.levels[h] = _merge_sorted(self.levels[h], items)
        self._compress()

    def _capacity(self, h: int) -> int:
        return max(_MIN_WIDTH, int(self.k * _SHRINK ** (len(self.levels) - 1 - h)))

    def _compress(self) -> None:
        # As DataSketches: while more items are retained than all levels hold, compact the lowest level over
        # its capacity (exact while everything fits: nothing is compacted up to k values).
        while self.retained > sum(self._capacity(h) for h in range(len(self.levels))):
            h = next(h for h, items in enumerate(self.levels) if len(items) > self._capacity(h))
            items = self.levels[h]
            if h + 1 == len(self.levels):
                self.levels.append(np.empty(0, dtype=np.float64))
            even = len(items) - len(items) % 2  # an odd item out stays, at its weight: no error
            start = int(self._rng.integers(2))
            self.levels[h + 1] = _merge_sorted(self.levels[h + 1], items[start:even:2])
            self.levels[h] = items[even:]

    @property
    def retained(self) -> int:
        return sum(len(items) for items in self.levels)

    def count(self) -> int:
        """How many values the sketch stands for."""
        self._flush()
        return self.n

    def _sorted(self) -> tuple[np.ndarray, np.ndarray]:
        self._flush()
        items = np.concatenate(self.levels)
        weights = np.concatenate([np.full(len(v), float(1 << h)) for h, v in enumerate(self.levels)])
        order = np.argsort(items, kind="stable")
        return items[order], np.cumsum(weights[order])

    def cdf(self, points: np.ndarray, *, inclusive: bool) -> np.ndarray:
        """Estimated share of the values <= each point (`inclusive`) or < it."""
        points = np.asarray(points, dtype=np.float64)
        self._flush()
        if not self.n:
            return np.full(len(points), np.nan)
        items, cum = self._sorted()
        at = np.searchsorted(items, points, side="right" if inclusive else "left")
        return np.concatenate([[0.0], cum])[at] / self.n

    def quantiles(self, ranks: np.ndarray) -> np.ndarray:
        """The smallest retained value whose inclusive rank reaches each normalized rank; 0 and 1 are min and max."""
        ranks = np.asarray(ranks, dtype=np.float64)
        self._flush()
        if not self.n:
            return np.full(len(ranks), np.nan)
        items, cum = self._sorted()
        at = np.minimum(np.searchsorted(cum, ranks * self.n, side="left"), len(items) - 1)
        out = items[at]
        out[ranks <= 0.0] = self.minimum
        out[ranks >= 1.0] = self.maximum
        return out
