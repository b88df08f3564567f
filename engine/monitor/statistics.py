"""`statistics.json` in Model Monitor's own format, from a profile.

The layout and its quirks are those of real analyzer output (the SageMaker SDK's test data): ``version``
0.0; integer ``common`` counts but float bucket counts and ``k``; a KLL distribution of 10 equal-width
buckets from min to max (lower bound inclusive, the last bucket including max) counted from the sketch's
ranks; population standard deviation; string features with a float ``distinct_count`` and categorical
buckets. With at most k values, ``sketch.data`` holds them in insertion order as the analyzer writes
them; beyond that the sketch's retained items stand in for Deequ's compactor levels (not byte-identical).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from engine.monitor.profile import KLL_K, FeatureProfile, Profile

__all__ = ["BUCKETS", "statistics_document"]

BUCKETS = 10
_SHRINKING = 0.64  # Deequ's KLL shrinking factor (c), written as the analyzer writes it


def _buckets(f: FeatureProfile) -> list[dict[str, float]]:
    lo, hi = f.minimum, f.maximum
    if f.kll is None or f.n == 0:
        return []
    if hi == lo:
        return [{"lower_bound": lo, "upper_bound": hi, "count": float(f.n)}]
    edges = np.linspace(lo, hi, BUCKETS + 1)
    # Fraction of values below each inner edge (exclusive rank), so a value on an edge opens its bucket.
    below = f.kll.cdf(edges[1:-1], inclusive=False)
    cum = np.concatenate([[0.0], below * f.n, [float(f.n)]])
    counts = np.round(np.diff(cum))
    return [
        {"lower_bound": float(a), "upper_bound": float(b), "count": float(c)}
        for a, b, c in zip(edges[:-1], edges[1:], counts, strict=True)
    ]


def _sketch_data(f: FeatureProfile) -> list[list[float]]:
    if f.kll is None:
        return []
    if f.first is not None:
        return [list(f.first)]
    return [f.kll.quantiles(np.linspace(0, 1, min(KLL_K, 512))).tolist()]


def _feature(f: FeatureProfile) -> dict[str, Any]:
    out: dict[str, Any] = {"name": f.name, "inferred_type": f.inferred_type}
    common = {"num_present": f.present, "num_missing": f.missing}
    kind = f.inferred_type
    if kind in ("Integral", "Fractional"):
        out["numerical_statistics"] = {
            "common": common,
            "mean": f.total / f.n if f.n else 0.0,  # Deequ's Mean is sum / count
            "sum": f.total,
            "std_dev": f.std_dev if f.n else 0.0,
            "min": f.minimum if f.n else 0.0,
            "max": f.maximum if f.n else 0.0,
            "distribution": {
                "kll": {
                    "buckets": _buckets(f),
                    "sketch": {"parameters": {"c": _SHRINKING, "k": float(KLL_K)}, "data": _sketch_data(f)},
                }
            },
        }
    elif kind == "String":
        strings: dict[str, Any] = {"common": common, "distinct_count": f.distinct_count}
        if f.categories is not None:
            strings["distribution"] = {
                "categorical": {"buckets": [{"value": v, "count": c} for v, c in f.categories.most_common()]}
            }
        out["string_statistics"] = strings
    return out


def statistics_document(profile: Profile) -> dict[str, Any]:
    """The statistics.json document of a profile."""
    return {
        "version": 0.0,
        "dataset": {"item_count": profile.items},
        "features": [_feature(f) for f in profile.features.values()],
    }
