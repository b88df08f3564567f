"""`constraint_violations.json`: a window's profile checked against a baseline's statistics and constraints.

The checks are Model Monitor's data-quality checks; descriptions follow the analyzer's real files where a
sample exists (``"Value: X does not meet the constraint requirement! "``, trailing space included) and the
one published drift wording (``"Numerical distance: D exceeds numerical threshold: T"``) otherwise.

- `missing_column_check` / `extra_column_check`: a baseline feature the window lacks, or the reverse.
- `data_type_check`: the share of the window's values that conform to the baseline type (an integral value
  conforms to Fractional, anything to String) is below `datatype_check_threshold`.
- `completeness_check`: the window's completeness is below the feature's baseline `completeness`.
- `categorical_values_check`: the share of the window's values inside the baseline `domains` is below
  `domain_content_threshold`.
- `baseline_drift_check`: the L-infinity distance between the baseline and window distributions
  (numerical: between CDFs, Kolmogorov-Smirnov's statistic; categorical: between category frequencies)
  exceeds `comparison_threshold` / `categorical_comparison_threshold`. `Robust` subtracts
  1.8 * sqrt((n + m) / (n m)) first, as Deequ's `linfRobust`; `Simple` does not.
  With ``categorical_drift_method: ChiSquared`` a String feature is compared as Deequ's `ChisquareMethod`
  does (baseline counts scaled to the window's total, window categories absent from the baseline dropped,
  the smallest categories pooled until the expected counts are large enough) and the value is the test's
  p-value. How Model Monitor compares that p-value with the threshold is not published: here a p-value
  *below* `categorical_comparison_threshold` is a drift (the distributions differ at that level).

The baseline distribution is read back from `statistics.json`'s KLL sketch data: the levels of the
analyzer's compactor (an item at level h weighs 2^h), or the single level this engine writes.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from engine.monitor.profile import FeatureProfile, Profile

__all__ = ["ROBUST_C_ALPHA", "chi_squared_p_value", "drift_distances", "violations_document"]

ROBUST_C_ALPHA = 1.8  # Deequ's default c_alpha for linfRobust (alpha of about 0.003)
_NUMERIC = ("Integral", "Fractional")


def _value(x: float) -> str:
    return f"Value: {x!r} does not meet the constraint requirement! "


def _violation(feature: str, check: str, description: str) -> dict[str, str]:
    return {"feature_name": feature, "constraint_check_type": check, "description": description}


def _conforming(f: FeatureProfile, baseline_type: str) -> float:
    if not f.present:
        return 1.0
    if baseline_type in ("String", "Unknown"):
        return 1.0
    # An integral value conforms to Fractional too: decoded floats 1.0 against a baseline of "1.5" text.
    ok = f.integral if baseline_type == "Integral" else f.integral + f.fractional
    return ok / f.present


def _baseline_points(stats: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """Values and weights of a baseline feature's KLL sketch data (level h weighs 2^h)."""
    kll = stats.get("numerical_statistics", {}).get("distribution", {}).get("kll", {})
    levels = kll.get("sketch", {}).get("data") or []
    values = [np.asarray(level, dtype=np.float64) for level in levels]
    weights = [np.full(len(level), float(1 << h)) for h, level in enumerate(levels)]
    if not values:
        return np.empty(0), np.empty(0)
    return np.concatenate(values), np.concatenate(weights)


def numerical_distance(stats: dict[str, Any], f: FeatureProfile) -> float | None:
    """L-infinity distance between the baseline CDF (from its sketch data) and the window's (its KLL)."""
    points, weights = _baseline_points(stats)
    if not len(points) or f.kll is None or not f.n:
        return None
    order = np.argsort(points, kind="stable")
    points, weights = points[order], weights[order]
    cum = np.cumsum(weights) / weights.sum()
    grid = np.unique(np.concatenate([points, f.kll.quantiles(np.linspace(0, 1, 1025))]))
    # CDFs at every grid point, inclusive: the share of values <= x on each side.
    base = np.concatenate([[0.0], cum])[np.searchsorted(points, grid, side="right")]
    window = f.kll.cdf(grid, inclusive=True)
    return float(np.max(np.abs(base - window)))


def categorical_distance(stats: dict[str, Any], f: FeatureProfile) -> float | None:
    buckets = stats.get("string_statistics", {}).get("distribution", {}).get("categorical", {}).get("buckets")
    if not buckets or f.categories is None or not f.present:
        return None
    base = {str(b["value"]): float(b["count"]) for b in buckets}
    total_b = sum(base.values())
    total_w = float(sum(f.categories.values()))
    keys = set(base) | set(f.categories)
    return max(abs(base.get(k, 0.0) / total_b - f.categories.get(k, 0) / total_w) for k in keys)


def chi_squared_p_value(stats: dict[str, Any], f: FeatureProfile) -> float | None:
    """Deequ's ChisquareMethod p-value between the baseline's category counts and the window's; NaN below 2."""
    buckets = stats.get("string_statistics", {}).get("distribution", {}).get("categorical", {}).get("buckets")
    if not buckets or f.categories is None or not f.present:
        return None
    base = {str(b["value"]): float(b["count"]) for b in buckets}
    observed = np.array([float(f.categories.get(k, 0)) for k in base])  # categories new to the window: dropped
    total = observed.sum()
    expected = np.array(list(base.values()))
    expected = expected / expected.sum() * total if total else expected
    order = np.argsort(expected, kind="stable")
    obs: list[float] = observed[order].tolist()
    exp_: list[float] = expected[order].tolist()

    def ok() -> bool:
        if len(exp_) == 2:
            return min(exp_) >= 10  # Cochran
        return sum(e < 5 for e in exp_) <= 0.2 * len(exp_)  # Yates

    while len(exp_) > 2 and not ok():
        # Pool the two smallest exp_ categories, keep the list sorted.
        e, o = exp_.pop(0) + exp_.pop(0), obs.pop(0) + obs.pop(0)
        i = int(np.searchsorted(exp_, e))
        exp_.insert(i, e)
        obs.insert(i, o)
    if len(exp_) < 2 or not total:
        return float("nan")
    exp = np.asarray(exp_)
    statistic = float(np.sum((np.asarray(obs) - exp) ** 2 / np.where(exp > 0, exp, 1.0)))
    return _chi2_sf(statistic, len(exp_) - 1)


def _chi2_sf(x: float, df: int) -> float:
    """P(X >= x) for X ~ chi-squared(df): the regularized upper incomplete gamma Q(df/2, x/2)."""
    a, z = df / 2.0, x / 2.0
    if z <= 0:
        return 1.0
    log_front = a * math.log(z) - z - math.lgamma(a)
    if z < a + 1:  # series for P, then Q = 1 - P
        term = total = 1.0 / a
        k = a
        while abs(term) > abs(total) * 1e-15:
            k += 1
            term *= z / k
            total += term
        return max(0.0, 1.0 - total * math.exp(log_front))
    # Continued fraction for Q (Lentz), Numerical Recipes' gcf.
    tiny = 1e-300
    b = z + 1 - a
    c, d = 1 / tiny, 1 / b
    h = d
    for i in range(1, 10_000):
        an = -i * (i - a)
        b += 2
        d = an * d + b
        d = tiny if abs(d) < tiny else d
        c = b + an / c
        c = tiny if abs(c) < tiny else c
        d = 1 / d
        delta = d * c
        h *= delta
        if abs(delta - 1) < 1e-15:
            break
    return min(1.0, math.exp(log_front) * h)


def _robust(distance: float, n: int, m: int) -> float:
    if not n or not m:
        return distance
    return max(0.0, distance - ROBUST_C_ALPHA * math.sqrt((n + m) / (n * m)))


def violations_document(
    statistics: dict[str, Any], constraints: dict[str, Any], window: Profile
) -> dict[str, list[dict[str, str]]]:
    """The constraint_violations.json of a window against a baseline (statistics.json, constraints.json)."""
    config = constraints.get("monitoring_config", {})
    if config.get("evaluate_constraints", "Enabled") != "Enabled":
        return {"violations": []}
    wanted = {c["name"]: c for c in constraints.get("features", [])}
    base_stats = {s["name"]: s for s in statistics.get("features", [])}
    current = list(window.features)
    counts = (
        f"Number of columns in current dataset: {len(current)}, "
        f"Number of columns in baseline constraints: {len(wanted)}"
    )
    out = [
        _violation(name, "missing_column_check", f"There are missing columns in current dataset. {counts}")
        for name in wanted
        if name not in window.features
    ]
    out += [
        _violation(name, "extra_column_check", f"There are extra columns in current dataset. {counts}")
        for name in current
        if name not in wanted
    ]
    type_threshold = float(config.get("datatype_check_threshold", 1.0))
    domain_threshold = float(config.get("domain_content_threshold", 1.0))
    dist = config.get("distribution_constraints", {})
    compare = dist.get("perform_comparison", "Enabled") == "Enabled"
    method = dist.get("comparison_method", dist.get("comparion_method", "Robust"))
    threshold = float(dist.get("comparison_threshold", 0.1))
    cat_threshold = float(dist.get("categorical_comparison_threshold", 0.1))
    chi2 = dist.get("categorical_drift_method", "LInfinity") == "ChiSquared"
    for name, constraint in wanted.items():
        f = window.features.get(name)
        if f is None or _disabled(constraint):
            continue
        btype = constraint.get("inferred_type", "Unknown")
        share = _conforming(f, btype)
        if share < type_threshold:
            out.append(_violation(name, "data_type_check", _value(share)))
        total = f.present + f.missing
        completeness = f.present / total if total else 0.0
        if "completeness" in constraint and completeness < float(constraint["completeness"]):
            out.append(_violation(name, "completeness_check", _value(completeness)))
        domains = constraint.get("string_constraints", {}).get("domains")
        if domains is not None and f.present:
            inside = _domain_share(f, set(map(str, domains)))
            if inside is None and domain_threshold > 0:
                # Too many distinct values to have been counted: more than the domain holds, so some are new.
                detail = f"{f.distinct_count:.0f} distinct values against a domain of {len(domains)}"
                out.append(
                    _violation(
                        name,
                        "categorical_values_check",
                        f"Value: unknown ({detail}) does not meet the constraint requirement! ",
                    )
                )
            elif inside is not None and inside < domain_threshold:
                out.append(_violation(name, "categorical_values_check", _value(inside)))
        if not compare or name not in base_stats:
            continue
        d = _distance(base_stats[name], btype, f, method, chi2)
        if d is None or math.isnan(d):
            continue
        if btype in _NUMERIC and d > threshold:
            description = f"Numerical distance: {d!r} exceeds numerical threshold: {threshold!r}"
            out.append(_violation(name, "baseline_drift_check", description))
        elif btype == "String" and chi2 and d < cat_threshold:
            description = f"Chi-squared p-value: {d!r} is below categorical threshold: {cat_threshold!r}"
            out.append(_violation(name, "baseline_drift_check", description))
        elif btype == "String" and not chi2 and d > cat_threshold:
            description = f"Categorical distance: {d!r} exceeds categorical threshold: {cat_threshold!r}"
            out.append(_violation(name, "baseline_drift_check", description))
    return {"violations": out}


def _distance(base: dict[str, Any], btype: str, f: FeatureProfile, method: str, chi2: bool = False) -> float | None:
    """The drift distance of one feature as the comparison method measures it (Robust: corrected; ChiSquared:
    the p-value of a String feature)."""
    if chi2 and btype == "String":
        return chi_squared_p_value(base, f)
    section = base.get("numerical_statistics") or base.get("string_statistics") or {}
    n_base = int(section.get("common", {}).get("num_present", 0))
    if btype in _NUMERIC:
        d, m = numerical_distance(base, f), f.n
    elif btype == "String":
        d, m = categorical_distance(base, f), f.present
    else:
        return None
    if d is None:
        return None
    return d if method == "Simple" else _robust(d, n_base, m)


def drift_distances(statistics: dict[str, Any], constraints: dict[str, Any], window: Profile) -> dict[str, float]:
    """Each shared feature's drift distance (the value of CloudWatch's ``feature_baseline_drift_*``)."""
    dist = constraints.get("monitoring_config", {}).get("distribution_constraints", {})
    method = dist.get("comparison_method", dist.get("comparion_method", "Robust"))
    chi2 = dist.get("categorical_drift_method", "LInfinity") == "ChiSquared"
    types = {c["name"]: c.get("inferred_type", "Unknown") for c in constraints.get("features", [])}
    out: dict[str, float] = {}
    for base in statistics.get("features", []):
        f = window.features.get(base["name"])
        if f is None:
            continue
        d = _distance(base, types.get(base["name"], base.get("inferred_type", "Unknown")), f, method, chi2)
        if d is not None and not math.isnan(d):
            out[base["name"]] = d
    return out


def _disabled(constraint: dict[str, Any]) -> bool:
    """A feature whose checks were switched off (the SDK's ``Constraints.set_monitoring(False, feature_name=...)``)."""
    for key in ("monitoring_config_overrides", "monitoringConfigOverrides"):
        if (constraint.get(key) or {}).get("evaluate_constraints") == "Disabled":
            return True
    return False


def _domain_share(f: FeatureProfile, domain: set[str]) -> float | None:
    """Share of the window's values inside the domain; None when it cannot be known."""
    if f.categories is not None:
        inside = sum(c for v, c in f.categories.items() if v in domain)
        return inside / f.present
    return None  # more distinct values than are counted: the share cannot be known
