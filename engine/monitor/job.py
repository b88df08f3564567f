"""The data-quality jobs: `baseline` (statistics and suggested constraints) and `monitor data-quality`
(a window's statistics, its violations against a baseline, CloudWatch metric records), in Model Monitor's
file names: ``statistics.json``, ``constraints.json``, ``constraint_violations.json`` and
``cloudwatch_metrics.jsonl`` (one PutMetricData record per line, as AWS's own samples write them).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import orjson

from engine.errors import SourceError
from engine.io.storage import open_location, translate_errors
from engine.monitor.constraints import constraints_document
from engine.monitor.profile import Profile, profile_batches
from engine.monitor.quality import (
    QualityOptions,
    model_quality,
    quality_constraints,
    quality_statistics,
    quality_violations,
)
from engine.monitor.sources import SourceFormat, read_source
from engine.monitor.statistics import statistics_document
from engine.monitor.violations import drift_distances, violations_document
from engine.options import parse_time

__all__ = [
    "DataQualityResult",
    "ModelQualityResult",
    "MonitorOptions",
    "run_baseline",
    "run_data_quality",
    "run_model_quality",
]

logger = logging.getLogger(__name__)

NAMESPACE = "/aws/sagemaker/Endpoints/data-metric"  # the built-in analyzer's namespace


@dataclass(frozen=True, kw_only=True)
class MonitorOptions:
    """How to read a monitoring source and name its metrics.

    Attributes:
        format: ``auto`` (by extension; a folder is a Parquet dataset), ``parquet``, ``csv`` or ``jsonl``.
        header: CSV: the first line names the columns (else ``_c0..``).
        features: the columns to profile; by default every column but the engine's provenance columns.
        start, end: a window on ``inference_time`` ([start, end), ISO-8601 UTC).
        endpoint, schedule: the ``Endpoint`` and ``MonitoringSchedule`` dimensions of the metric records.
        storage_options: fsspec options of the source and the output.
    """

    format: SourceFormat = "auto"
    header: bool = False
    features: tuple[str, ...] | None = None
    start: datetime | None = None
    end: datetime | None = None
    endpoint: str = "endpoint"
    schedule: str = "schedule"
    storage_options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("start", "end"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, datetime):
                object.__setattr__(self, name, parse_time(value))


@dataclass
class DataQualityResult:
    """What a data-quality run found: the documents it wrote, and where."""

    statistics: dict[str, Any]
    violations: dict[str, list[dict[str, str]]]
    metrics: list[dict[str, Any]]
    out: str


def _profile(source: str, options: MonitorOptions) -> Profile:
    batches = read_source(
        source,
        fmt=options.format,
        header=options.header,
        features=list(options.features) if options.features else None,
        start=options.start,
        end=options.end,
        storage_options=options.storage_options,
    )
    return profile_batches(batches)


def _write(out: str, name: str, doc: Any, options: MonitorOptions) -> None:
    loc = open_location(out, options.storage_options)
    path = loc.join(name)
    with translate_errors(loc.uri(path), sink=True):
        if loc.is_local:
            loc.fs.makedirs(loc.root, exist_ok=True)
        data = (
            b"".join(orjson.dumps(d) + b"\n" for d in doc)
            if isinstance(doc, list)
            else orjson.dumps(doc, option=orjson.OPT_INDENT_2)
        )
        with loc.fs.open(path, "wb") as f:
            f.write(data)


def _read_json(uri: str, options: MonitorOptions) -> dict[str, Any]:
    loc = open_location(uri, options.storage_options)
    with translate_errors(uri):
        if not loc.fs.exists(loc.root):
            raise SourceError("baseline file not found", uri=uri)
        raw = loc.fs.cat_file(loc.root)
    try:
        doc: dict[str, Any] = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise SourceError(f"not a JSON document ({exc})", uri=uri) from None
    return doc


def run_baseline(
    source: str, out: str, *, options: MonitorOptions | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Statistics and suggested constraints of a baseline dataset, written to ``out``; returns both documents."""
    options = options or MonitorOptions()
    profile = _profile(source, options)
    stats, cons = statistics_document(profile), constraints_document(profile)
    _write(out, "statistics.json", stats, options)
    _write(out, "constraints.json", cons, options)
    logger.info("baseline of %d records, %d features written to %s", profile.items, len(profile.features), out)
    return stats, cons


def _metrics(
    profile: Profile, distances: dict[str, float], options: MonitorOptions, when: datetime
) -> list[dict[str, Any]]:
    dims = [{"Name": "Endpoint", "Value": options.endpoint}, {"Name": "MonitoringSchedule", "Value": options.schedule}]
    stamp = when.strftime("%Y-%m-%dT%H:%M:%SZ")
    out: list[dict[str, Any]] = []
    for name, f in profile.features.items():
        total = f.present + f.missing
        if f.n and f.inferred_type in ("Integral", "Fractional"):
            stats = {"SampleCount": float(f.n), "Sum": f.total, "Minimum": f.minimum, "Maximum": f.maximum}
            out.append({"MetricName": f"feature_data_{name}", "Timestamp": stamp, "Dimensions": dims,
                        "StatisticValues": stats, "Unit": "None"})  # fmt: skip
        out.append({"MetricName": f"feature_non_null_{name}", "Timestamp": stamp, "Dimensions": dims,
                    "Value": f.present / total if total else 0.0, "Unit": "None"})  # fmt: skip
        if name in distances:
            out.append({"MetricName": f"feature_baseline_drift_{name}", "Timestamp": stamp, "Dimensions": dims,
                        "Value": distances[name], "Unit": "None"})  # fmt: skip
    return out


def run_data_quality(
    source: str,
    out: str,
    *,
    baseline_statistics: str,
    baseline_constraints: str,
    options: MonitorOptions | None = None,
) -> DataQualityResult:
    """A window's statistics, its violations against the baseline and its metric records, written to ``out``."""
    options = options or MonitorOptions()
    stats_b = _read_json(baseline_statistics, options)
    cons_b = _read_json(baseline_constraints, options)
    profile = _profile(source, options)
    stats = statistics_document(profile)
    violations = violations_document(stats_b, cons_b, profile)
    when = options.end or datetime.now(timezone.utc)
    metrics = _metrics(profile, drift_distances(stats_b, cons_b, profile), options, when)
    _write(out, "statistics.json", stats, options)
    _write(out, "constraint_violations.json", violations, options)
    _write(out, "cloudwatch_metrics.jsonl", metrics, options)
    return DataQualityResult(stats, violations, metrics, out)


MODEL_NAMESPACE = "aws/sagemaker/Endpoints/model-metrics"


@dataclass
class ModelQualityResult:
    """What a model-quality run wrote: statistics, suggested constraints, violations (if constraints were given)."""

    statistics: dict[str, Any]
    constraints: dict[str, Any]
    violations: dict[str, Any] | None
    metrics: list[dict[str, Any]]
    out: str


def run_model_quality(
    source: str,
    out: str,
    *,
    quality: QualityOptions,
    baseline_constraints: str | None = None,
    options: MonitorOptions | None = None,
) -> ModelQualityResult:
    """Model-quality metrics of merged predictions and labels, written to ``out``.

    Writes ``statistics.json`` and suggested ``constraints.json``, ``constraint_violations.json`` when
    `baseline_constraints` is given, and the metrics as CloudWatch records (``cloudwatch_metrics.jsonl``).
    """
    options = options or MonitorOptions()
    columns = [
        c for c in (quality.inference_attribute, quality.probability_attribute, quality.ground_truth_attribute) if c
    ]
    batches = read_source(
        source,
        fmt=options.format,
        header=options.header,
        features=columns,
        start=options.start,
        end=options.end,
        storage_options=options.storage_options,
    )
    state = model_quality(batches, quality)
    when = options.end or datetime.now(timezone.utc)
    stats = quality_statistics(state, evaluation_time=when)
    cons = quality_constraints(stats)
    violations = None
    if baseline_constraints is not None:
        violations = quality_violations(stats, _read_json(baseline_constraints, options))
    dims = [{"Name": "Endpoint", "Value": options.endpoint}, {"Name": "MonitoringSchedule", "Value": options.schedule}]
    key = next(k for k in stats if k.endswith("_metrics"))
    metrics = [
        {"MetricName": name, "Timestamp": when.strftime("%Y-%m-%dT%H:%M:%SZ"), "Dimensions": dims,
         "Value": m["value"], "Unit": "None"}
        for name, m in stats[key].items()
        if isinstance(m, dict) and isinstance(m.get("value"), float)
    ]  # fmt: skip
    _write(out, "statistics.json", stats, options)
    _write(out, "constraints.json", cons, options)
    if violations is not None:
        _write(out, "constraint_violations.json", violations, options)
    _write(out, "cloudwatch_metrics.jsonl", metrics, options)
    return ModelQualityResult(stats, cons, violations, metrics, out)
