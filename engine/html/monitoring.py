"""Aggregates of monitoring outputs: per-feature drift against the baseline, model-quality metrics over time.

The documents are Model Monitor's (``statistics.json``, ``constraints.json``, ``constraint_violations.json``,
``cloudwatch_metrics.jsonl``). A feature's drift distance is the value of its ``feature_baseline_drift_*``
metric record, the number the data-quality job compared with the threshold.
"""

from __future__ import annotations

import math
from datetime import datetime, timezone
from typing import Any

import polars as pl

from engine.html.inputs import MonitorOutput

__all__ = ["distribution", "drift_table", "metric_series"]

DRIFT_PREFIX = "feature_baseline_drift_"
TOP_CATEGORIES = 20


def _common(feature: dict[str, Any]) -> dict[str, Any]:
    stats = feature.get("numerical_statistics") or feature.get("string_statistics") or {}
    common: dict[str, Any] = stats.get("common", {})
    return common


def drift_table(window: MonitorOutput, baseline: dict[str, Any] | None) -> pl.DataFrame:
    """One row per feature of the window: type, present, missing, drift distance, the checks it violated.

    Sorted violated first, then by drift distance (largest first), then by name.
    """
    drift = {
        m["MetricName"][len(DRIFT_PREFIX) :]: float(m["Value"])
        for m in window.metrics
        if str(m.get("MetricName", "")).startswith(DRIFT_PREFIX) and "Value" in m
    }
    violated: dict[str, list[str]] = {}
    for v in (window.violations or {}).get("violations", []):
        violated.setdefault(str(v.get("feature_name")), []).append(str(v.get("constraint_check_type")))
    base_names = {f["name"] for f in (baseline or {}).get("features", [])}
    rows = []
    for f in window.statistics.get("features", []):
        common = _common(f)
        name = str(f["name"])
        rows.append(
            {
                "feature": name,
                "type": str(f.get("inferred_type", "Unknown")),
                "present": int(common.get("num_present", 0)),
                "missing": int(common.get("num_missing", 0)),
                "drift": drift.get(name),
                "violations": ", ".join(sorted(violated.pop(name, []))),
                "in_baseline": name in base_names if baseline is not None else None,
            }
        )
    # Violations of features the window lacks (missing_column_check) still belong on the page.
    rows += [
        {"feature": name, "type": "-", "present": 0, "missing": 0, "drift": None,
         "violations": ", ".join(sorted(checks)), "in_baseline": True}
        for name, checks in violated.items()
    ]  # fmt: skip
    schema = {"feature": pl.String, "type": pl.String, "present": pl.Int64, "missing": pl.Int64,
              "drift": pl.Float64, "violations": pl.String, "in_baseline": pl.Boolean}  # fmt: skip
    frame = pl.DataFrame(rows, schema=schema)
    return frame.sort(
        [pl.col("violations") == "", pl.col("drift").fill_null(-1.0), "feature"],
        descending=[False, True, False],
    )


def _numeric(feature: dict[str, Any], which: str) -> list[dict[str, Any]]:
    buckets = feature.get("numerical_statistics", {}).get("distribution", {}).get("kll", {}).get("buckets", [])
    total = sum(float(b["count"]) for b in buckets) or 1.0
    return [
        {"which": which, "lower": float(b["lower_bound"]), "upper": float(b["upper_bound"]),
         "count": float(b["count"]), "share": float(b["count"]) / total}
        for b in buckets
    ]  # fmt: skip


def _categorical(feature: dict[str, Any], which: str) -> dict[str, float]:
    buckets = feature.get("string_statistics", {}).get("distribution", {}).get("categorical", {}).get("buckets", [])
    return {str(b["value"]): float(b["count"]) for b in buckets}


def distribution(window: dict[str, Any], baseline: dict[str, Any] | None) -> tuple[str, pl.DataFrame]:
    """A feature's distribution in the window and in the baseline, as shares of each one's values.

    Numeric features: ``("numeric", which, lower, upper, count, share)`` rows, 10 equal-width buckets
    each between its own min and max; categorical: ``("categorical", value, which, count, share)`` for
    the window's and the baseline's most common values (``TOP_CATEGORIES`` of each).
    """
    if "numerical_statistics" in window:
        rows = _numeric(window, "window") + (_numeric(baseline, "baseline") if baseline else [])
        schema = {"which": pl.String, "lower": pl.Float64, "upper": pl.Float64, "count": pl.Float64,
                  "share": pl.Float64}  # fmt: skip
        return "numeric", pl.DataFrame(rows, schema=schema)
    counts = {"window": _categorical(window, "window"), "baseline": _categorical(baseline or {}, "baseline")}
    keep: set[str] = set()
    for c in counts.values():
        keep |= set(sorted(c, key=lambda v: (-c[v], v))[:TOP_CATEGORIES])
    rows = []
    for which, c in counts.items():
        total = sum(c.values())
        if not total:
            continue
        rows += [{"value": v, "which": which, "count": c.get(v, 0.0), "share": c.get(v, 0.0) / total} for v in keep]
    schema = {"value": pl.String, "which": pl.String, "count": pl.Float64, "share": pl.Float64}
    return "categorical", pl.DataFrame(rows, schema=schema).sort(
        "which", "share", "value", descending=[True, True, False]
    )


def _when(doc: dict[str, Any]) -> datetime | None:
    text = doc.get("dataset", {}).get("evaluation_time")
    if not text:
        return None
    value = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def metric_series(outputs: list[MonitorOutput], constraints: dict[str, Any] | None) -> pl.DataFrame:
    """Model-quality metrics of each output at its evaluation time, with the constraint each is checked against.

    Columns: evaluation_time, metric, value, standard_deviation, threshold, operator, violated. Only scalar
    metrics (not the confusion matrix or curves); the best-constant-classifier metrics are left out.
    """
    rows = []
    for out in outputs:
        key = next((k for k in out.statistics if k.endswith("_metrics")), None)
        if key is None:
            continue
        rules = (constraints or {}).get(f"{key.removesuffix('_metrics')}_constraints", {})
        broken = {str(v.get("metric_name")) for v in (out.violations or {}).get("violations", [])}
        when = _when(out.statistics)
        for name, metric in out.statistics[key].items():
            if not isinstance(metric, dict) or name.endswith("_best_constant_classifier"):
                continue
            value = metric.get("value")
            if not isinstance(value, (int, float)) or isinstance(value, bool) or math.isnan(float(value)):
                continue
            std = metric.get("standard_deviation")
            rule = rules.get(name, {})
            rows.append(
                {
                    "evaluation_time": when,
                    "metric": name,
                    "value": float(value),
                    "standard_deviation": float(std) if isinstance(std, (int, float)) else None,
                    "threshold": float(rule["threshold"]) if "threshold" in rule else None,
                    "operator": rule.get("comparison_operator"),
                    "violated": name in broken,
                    "source": out.uri,
                }
            )
    schema: dict[str, Any] = {"evaluation_time": pl.Datetime("us", "UTC"), "metric": pl.String, "value": pl.Float64,
              "standard_deviation": pl.Float64, "threshold": pl.Float64, "operator": pl.String,
              "violated": pl.Boolean, "source": pl.String}  # fmt: skip
    return pl.DataFrame(rows, schema=schema).sort("metric", "evaluation_time")
