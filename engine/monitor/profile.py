"""Profile: one pass over record batches to the per-feature figures Model Monitor's statistics hold.

Every figure is a mergeable state, so profiles of parts (units, hours, executors) add up to the profile
of the whole, and memory is bounded by the number of features, never by rows:

- counts present / missing, exact;
- sum, mean and population standard deviation, exact up to float rounding (Chan et al.'s pairwise merge
  of count, mean and M2, each batch summed by numpy);
- min and max;
- quantiles and the distribution: a KLL sketch (k = 2048, Deequ's size) updated a whole array at a time
  (`engine.monitor.sketch`: DataSketches' binding costs 60 ns a value, this one 15);
- strings: a HyperLogLog distinct count and exact category counts, dropped once more than
  `CATEGORY_LIMIT` categories are seen (Deequ's histogram threshold is 120). The HyperLogLog is a
  few lines of numpy over polars' 64-bit hashes: DataSketches' HLL takes one value per Python call,
  which at 2 million values a feature costs seconds per feature.

Types follow the analyzer's names (Integral, Fractional, String, Unknown) but are decided from values:
a number column whose every value is a whole number is Integral (``1`` and ``1.0`` alike), any other
number column Fractional; a text column is typed as Deequ types text (regular expressions on each value).
"""

from __future__ import annotations

import math
import zlib
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from engine.monitor.sketch import KllSketch

__all__ = ["CATEGORY_LIMIT", "KLL_K", "FeatureProfile", "InferredType", "Profile", "profile_batches"]

InferredType = Literal["Integral", "Fractional", "String", "Unknown"]
KLL_K = 2048
CATEGORY_LIMIT = 120
# Deequ's DataType patterns, applied to text values.
_FRACTIONAL = r"^(-|\+)? ?\d*\.\d*$"
_INTEGRAL = r"^(-|\+)? ?\d*$"
_BOOLEAN = r"^(true|false)$"


_HLL_P = 12
_HLL_M = 1 << _HLL_P


class HyperLogLog:
    """HyperLogLog with 4,096 registers (about 1.6% standard error), updated a whole array at a time."""

    def __init__(self) -> None:
        self.registers = np.zeros(_HLL_M, dtype=np.uint8)

    def update(self, values: pa.Array) -> None:
        import polars as pl

        series = pl.Series(values)
        hashes = series.hash(seed=0).to_numpy().astype(np.uint64)
        index = (hashes >> np.uint64(64 - _HLL_P)).astype(np.int64)
        rest = (hashes << np.uint64(_HLL_P)) | np.uint64(1 << (_HLL_P - 1))  # bounded rank
        # Rank = leading zeros of the remaining bits + 1.
        rank = (64 - np.floor(np.log2(rest.astype(np.float64))).astype(np.int64)).astype(np.uint8)
        np.maximum.at(self.registers, index, rank)

    def merge(self, other: HyperLogLog) -> None:
        np.maximum(self.registers, other.registers, out=self.registers)

    def estimate(self) -> float:
        m = float(_HLL_M)
        alpha = 0.7213 / (1 + 1.079 / m)
        raw = alpha * m * m / float(np.sum(np.exp2(-self.registers.astype(np.float64))))
        zeros = int((self.registers == 0).sum())
        if raw <= 2.5 * m and zeros:
            return m * math.log(m / zeros)  # linear counting for small cardinalities
        return raw


def _hll() -> HyperLogLog:
    return HyperLogLog()


@dataclass
class FeatureProfile:
    """The mergeable state of one feature."""

    name: str
    present: int = 0
    missing: int = 0
    # Value kinds seen (decide the inferred type): whole numbers, other numbers, booleans, other text.
    integral: int = 0
    fractional: int = 0
    boolean: int = 0
    text: int = 0
    # Numeric moments (over numeric values, numbers in text columns included).
    n: int = 0
    mean: float = 0.0
    m2: float = 0.0
    total: float = 0.0
    minimum: float = math.inf
    maximum: float = -math.inf
    seed: int = 0  # of the sketch's random bits: a run is reproducible
    kll: KllSketch | None = None
    first: list[float] | None = field(default_factory=list)  # the first k values, in order, while n <= k
    hll: HyperLogLog | None = None
    categories: Counter[str] | None = field(default_factory=Counter)

    @property
    def inferred_type(self) -> InferredType:
        if not self.present:
            return "Unknown"
        if self.text or (self.boolean and (self.integral or self.fractional)) or self.boolean:
            # Deequ has a Boolean type; Model Monitor documents none: booleans are String here.
            return "String"
        return "Fractional" if self.fractional else "Integral"

    @property
    def std_dev(self) -> float:
        """Population standard deviation (Deequ's StandardDeviation)."""
        return math.sqrt(self.m2 / self.n) if self.n else float("nan")

    def add_numbers(self, values: np.ndarray) -> None:
        """Add finite float64 values (no nulls)."""
        if not len(values):
            return
        count = len(values)
        total = float(values.sum())
        mean = total / count
        d = values - mean
        self._merge_moments(count, mean, float(np.einsum("i,i->", d, d)), total)  # not BLAS: its threads spin
        if self.kll is None:
            self.kll = KllSketch(KLL_K, seed=self.seed)
        self.minimum = min(self.minimum, float(values.min()))
        self.maximum = max(self.maximum, float(values.max()))
        self.kll.update(values)
        if self.first is not None:
            if self.n <= KLL_K:
                self.first.extend(values.tolist())
            else:
                self.first = None

    def _merge_moments(self, count: int, mean: float, m2: float, total: float) -> None:
        n = self.n + count
        delta = mean - self.mean
        self.mean += delta * count / n
        self.m2 += m2 + delta * delta * self.n * count / n
        self.n = n
        self.total += total

    def add_strings(self, values: pa.Array, *, trim: bool = False) -> _Encoded | None:
        """Add non-null text values: counted by category, distinct-counted, and kinds by Deequ's patterns.

        Everything is computed on the distinct values (one hash pass: a dictionary encoding) weighted by
        their counts, so a column of a dozen categories costs one pass over its rows, not five. With `trim`
        the values count without their surrounding white space (trimmed once each distinct value).
        """
        if not len(values):
            return None
        enc = pc.dictionary_encode(values)
        uniq = enc.dictionary
        idx = np.asarray(enc.indices.to_numpy(zero_copy_only=False), dtype=np.int64)
        if trim:
            trimmed = pc.utf8_trim_whitespace(uniq)
            if not trimmed.equals(uniq):  # " a" and "a" are one value: encoded anew, the rows re-pointed
                again = pc.dictionary_encode(trimmed)
                uniq = again.dictionary
                idx = np.asarray(again.indices.to_numpy(zero_copy_only=False), dtype=np.int64)[idx]
        counts = np.bincount(idx, minlength=len(uniq))
        if self.hll is None:
            self.hll = _hll()
        self.hll.update(uniq)  # a HyperLogLog sees each value once or a thousand times alike
        if self.categories is not None:
            if len(uniq) > CATEGORY_LIMIT:
                self.categories = None
            else:
                self.categories.update(dict(zip(uniq.to_pylist(), counts.tolist(), strict=True)))
                if len(self.categories) > CATEGORY_LIMIT:
                    self.categories = None
        fractional = _mask(pc.match_substring_regex(uniq, _FRACTIONAL))
        integral = _mask(pc.match_substring_regex(uniq, _INTEGRAL)) & ~fractional
        boolean = _mask(pc.match_substring_regex(uniq, _BOOLEAN))
        self.fractional += int(counts[fractional].sum())
        self.integral += int(counts[integral].sum())
        self.boolean += int(counts[boolean].sum())
        self.text += int(counts[~(fractional | integral | boolean)].sum())
        return _Encoded(uniq, idx, fractional | integral)

    def merge(self, other: FeatureProfile) -> None:
        """Add another profile of the same feature (another part of the data)."""
        self.present += other.present
        self.missing += other.missing
        self.integral += other.integral
        self.fractional += other.fractional
        self.boolean += other.boolean
        self.text += other.text
        if other.n:
            self._merge_moments(other.n, other.mean, other.m2, other.total)
            self.minimum = min(self.minimum, other.minimum)
            self.maximum = max(self.maximum, other.maximum)
            if self.kll is None:
                self.kll = KllSketch(KLL_K, seed=self.seed)
            if other.kll is not None:
                self.kll.merge(other.kll)
            if self.first is not None and other.first is not None and self.n <= KLL_K:
                self.first.extend(other.first)
            else:
                self.first = None
        if other.hll is not None:
            if self.hll is None:
                self.hll = _hll()
            self.hll.merge(other.hll)
        if self.categories is None or other.categories is None:
            self.categories = None
        else:
            self.categories.update(other.categories)
            if len(self.categories) > CATEGORY_LIMIT:
                self.categories = None

    @property
    def distinct_count(self) -> float:
        if self.categories is not None:
            return float(len(self.categories))  # exact while categories are counted
        return float(round(self.hll.estimate())) if self.hll is not None else 0.0


@dataclass
class _Encoded:
    """A text batch as its distinct values, each row's index into them, and which values are numbers."""

    values: pa.Array
    indices: np.ndarray
    numeric: np.ndarray


def _mask(a: pa.Array | pa.ChunkedArray) -> np.ndarray:
    return np.asarray(pc.fill_null(a, False).to_numpy(zero_copy_only=False), dtype=bool)


@dataclass
class Profile:
    """Profiles of every feature of a table, in column order, and the row count."""

    items: int = 0
    features: dict[str, FeatureProfile] = field(default_factory=dict)
    stream: int = 0  # parts of one source (worker processes, groups) draw their sketches' random bits apart

    def add(self, batch: pa.RecordBatch | pa.Table, columns: Iterable[str] | None = None) -> None:
        """Profile the `columns` of a batch (all of them by default); vectorized per column."""
        names = list(columns) if columns is not None else batch.schema.names
        self.items += batch.num_rows
        for name in names:
            feature = self.features.get(name)
            if feature is None:
                seed = zlib.crc32(name.encode()) ^ (self.stream << 32)
                feature = self.features[name] = FeatureProfile(name, seed=seed)
            if name not in batch.schema.names:
                feature.missing += batch.num_rows
                continue
            column = batch.column(name)
            if isinstance(column, pa.ChunkedArray):
                column = column.combine_chunks()
            _add_column(feature, column)

    def merge(self, other: Profile) -> None:
        self.items += other.items
        for name, feature in other.features.items():
            mine = self.features.get(name)
            if mine is None:
                self.features[name] = feature
            else:
                mine.merge(feature)


def _add_column(feature: FeatureProfile, column: pa.Array) -> None:
    valid = column.drop_null() if column.null_count else column
    t = column.type
    if pa.types.is_floating(t):
        values = np.asarray(valid.to_numpy(zero_copy_only=False), dtype=np.float64)
        finite = np.isfinite(values)
        # NaN and infinities are text to Deequ ("NaN", "inf"): the column becomes String, as it would.
        odd = len(values) - int(np.count_nonzero(finite))
        feature.text += odd
        numbers = values[finite] if odd else values
        whole = int(np.count_nonzero(numbers == np.floor(numbers)))
        feature.integral += whole
        feature.fractional += len(numbers) - whole
        feature.add_numbers(numbers)
    elif pa.types.is_integer(t):
        values = np.asarray(valid.to_numpy(zero_copy_only=False), dtype=np.float64)
        feature.integral += len(values)
        feature.add_numbers(values)
    elif pa.types.is_boolean(t):
        feature.add_strings(pc.cast(valid, pa.string()))  # "true" / "false": Deequ's boolean pattern counts them
    elif pa.types.is_string(t) or pa.types.is_large_string(t):
        enc = feature.add_strings(valid.cast(pa.string()), trim=True)
        if enc is not None:
            numeric = enc.numeric & _mask(pc.match_substring_regex(enc.values, r"\d"))  # "." and "-" hold no number
            if numeric.any():
                # Numbers in text (a CSV baseline): each distinct value converted once, then spread to the rows.
                converted = pc.cast(pc.replace_substring(enc.values.filter(pa.array(numeric)), " ", ""), pa.float64())
                lookup = np.full(len(enc.values), np.nan)
                lookup[numeric] = np.asarray(converted.to_numpy(zero_copy_only=False), dtype=np.float64)
                rows = enc.indices[numeric[enc.indices]]
                feature.add_numbers(lookup[rows])
    else:
        feature.add_strings(
            pc.cast(valid, pa.string()) if _castable(t) else pa.array([str(v) for v in valid.to_pylist()])
        )
    feature.present += len(valid)
    feature.missing += len(column) - len(valid)


def _castable(t: pa.DataType) -> bool:
    return not (pa.types.is_nested(t) or pa.types.is_binary(t) or pa.types.is_large_binary(t))


def profile_batches(batches: Iterable[pa.RecordBatch], columns: Iterable[str] | None = None) -> Profile:
    """The profile of a stream of batches."""
    profile = Profile()
    cols = list(columns) if columns is not None else None
    for batch in batches:
        profile.add(batch, cols)
    return profile
