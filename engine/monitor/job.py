"""The monitoring jobs: `baseline` (statistics and suggested constraints), `monitor data-quality` (a window's
statistics, its violations against a baseline, CloudWatch metric records) and `monitor model-quality`, in
Model Monitor's file names: ``statistics.json``, ``constraints.json``, ``constraint_violations.json`` and
``cloudwatch_metrics.jsonl`` (one PutMetricData record per line, as AWS's own samples write them).

SOURCE is a location (a dataset, a CSV or JSON Lines file, raw capture) or a table in memory: a pyarrow
Table or RecordBatch, or anything with ``to_arrow()`` (a polars DataFrame). With ``by``, every group
(hour, and/or endpoint and variant) also gets its own files under ``OUT/{endpoint}/{variant}/yyyy/mm/dd/hh/``
(Model Monitor's report layout) and its own result in ``groups``. ``out=None`` writes nothing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, TypeAlias

import orjson
import pyarrow as pa

from engine.errors import OptionsError, SourceError
from engine.io.storage import open_location, translate_errors
from engine.monitor.constraints import constraints_document
from engine.monitor.passes import Groups, PassSpec, default_workers, profile_pass, quality_pass, table_pass
from engine.monitor.profile import Profile
from engine.monitor.quality import (
    QualityOptions,
    QualityState,
    quality_constraints,
    quality_statistics,
    quality_violations,
)
from engine.monitor.sources import GroupBy, SourceFormat, group_path
from engine.monitor.statistics import statistics_document
from engine.monitor.violations import drift_distances, violations_document
from engine.options import parse_time

__all__ = [
    "DataQualityResult",
    "ModelQualityResult",
    "MonitorOptions",
    "Source",
    "Violation",
    "run_baseline",
    "run_data_quality",
    "run_model_quality",
]

logger = logging.getLogger(__name__)

# A location, or a table: pyarrow Table or RecordBatch, or anything with to_arrow() (a polars DataFrame).
Source: TypeAlias = Any

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
        ground_truth: labels to merge raw capture with on the way (model quality on ``capture``/``batch``).
        by: breakdowns, ``("hour",)``, ``("endpoint",)`` (endpoint and variant) or both (a comma-separated
            string is accepted too).
        workers: processes for a large source of many files (default: one per core).
    """

    format: SourceFormat = "auto"
    header: bool = False
    features: tuple[str, ...] | None = None
    start: datetime | None = None
    end: datetime | None = None
    endpoint: str = "endpoint"
    schedule: str = "schedule"
    storage_options: dict[str, Any] = field(default_factory=dict)
    ground_truth: str | None = None
    by: tuple[GroupBy, ...] = ()
    workers: int = field(default_factory=default_workers)

    def __post_init__(self) -> None:
        for name in ("start", "end"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, datetime):
                object.__setattr__(self, name, parse_time(value))
        raw: Any = self.by
        by = tuple(b.strip() for b in raw.split(",") if b.strip()) if isinstance(raw, str) else tuple(raw)
        bad = [b for b in by if b not in ("hour", "endpoint")]
        if bad:
            raise OptionsError(f"--by takes hour and/or endpoint, got {bad[0]!r}")
        object.__setattr__(self, "by", tuple(dict.fromkeys(by)))
        if self.workers < 1:
            raise OptionsError(f"workers must be at least 1, got {self.workers}")


@dataclass
class DataQualityResult:
    """What a data-quality run found: the documents it wrote, and where."""

    statistics: dict[str, Any]
    violations: dict[str, list[dict[str, str]]]
    metrics: list[dict[str, Any]]
    out: str | None
    groups: dict[str, DataQualityResult] = field(default_factory=dict)  # by group path, with `by`

    @property
    def found(self) -> list[Violation]:
        """The violations as typed records."""
        return [Violation(**v) for v in self.violations["violations"]]


@dataclass(frozen=True)
class Violation:
    """One data-quality violation, as ``constraint_violations.json`` holds it."""

    feature_name: str
    constraint_check_type: str
    description: str


def _spec(source: str, options: MonitorOptions, features: tuple[str, ...] | None) -> PassSpec:
    return PassSpec(
        source=source,
        fmt=options.format,
        header=options.header,
        features=features,
        start=options.start,
        end=options.end,
        storage_options=options.storage_options,
        ground_truth=options.ground_truth,
        by=options.by,
        workers=options.workers,
    )


def _groups(
    source: Source, options: MonitorOptions, quality: QualityOptions | None = None, columns: tuple[str, ...] = ()
) -> Groups:
    features = columns or options.features or None
    if not isinstance(source, str):
        return table_pass(_arrow(source), _spec("the table", options, features), quality)
    spec = _spec(source, options, features)
    return profile_pass(spec) if quality is None else quality_pass(spec, quality)


def _arrow(source: Any) -> pa.Table:
    if isinstance(source, pa.Table):
        return source
    if isinstance(source, pa.RecordBatch):
        return pa.Table.from_batches([source])
    if hasattr(source, "to_arrow"):
        table = source.to_arrow()
        return table if isinstance(table, pa.Table) else pa.table(table)
    raise OptionsError(f"a monitoring source is a location or a table, got {type(source).__name__}")


def _where(out: str | None, key: str) -> str | None:
    return None if out is None else (out if not key else out.rstrip("/") + "/" + key)


def _write(out: str | None, name: str, doc: Any, options: MonitorOptions) -> None:
    if out is None:
        return
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
    source: Source, out: str | None, *, options: MonitorOptions | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Statistics and suggested constraints of a baseline dataset, written to ``out``; returns both documents."""
    options = options or MonitorOptions()
    profile: Profile = _groups(source, MonitorOptions(**{**options.__dict__, "by": ()})).whole
    stats, cons = statistics_document(profile), constraints_document(profile)
    _write(out, "statistics.json", stats, options)
    _write(out, "constraints.json", cons, options)
    logger.info("baseline of %d records, %d features written to %s", profile.items, len(profile.features), out)
    return stats, cons


def _dims(options: MonitorOptions) -> list[dict[str, str]]:
    return [{"Name": "Endpoint", "Value": options.endpoint}, {"Name": "MonitoringSchedule", "Value": options.schedule}]


def _stamp(options: MonitorOptions, key: tuple[str, ...]) -> str:
    """The metric time: the group's hour, else the window's start (as the analyzer's ``metric_time``)."""
    if "hour" in options.by and key and key[-1][:1].isdigit():
        h = key[-1]
        return f"{h[:4]}-{h[4:6]}-{h[6:8]}T{h[8:10]}:00:00Z"
    when = options.start or options.end or datetime.now(timezone.utc)
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def _metrics(
    profile: Profile, distances: dict[str, float], dims: list[dict[str, str]], stamp: str
) -> list[dict[str, Any]]:
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


def _group_dims(options: MonitorOptions, key: tuple[str, ...]) -> list[dict[str, str]]:
    dims = _dims(options)
    if "endpoint" in options.by and len(key) >= 2:
        dims = [{"Name": "Endpoint", "Value": key[0]}, dims[1], {"Name": "Variant", "Value": key[1]}]
    return dims


def run_data_quality(
    source: Source,
    out: str | None,
    *,
    baseline_statistics: str | dict[str, Any],
    baseline_constraints: str | dict[str, Any],
    options: MonitorOptions | None = None,
) -> DataQualityResult:
    """A window's statistics, its violations against the baseline and its metric records, written to ``out``.

    The baseline is given as its files' locations or as the documents themselves.
    """
    options = options or MonitorOptions()
    stats_b = _read_json(baseline_statistics, options) if isinstance(baseline_statistics, str) else baseline_statistics
    cons_b = (
        _read_json(baseline_constraints, options) if isinstance(baseline_constraints, str) else baseline_constraints
    )
    found = _groups(source, options)

    def one(profile: Profile, where: str | None, dims: list[dict[str, str]], stamp: str) -> DataQualityResult:
        stats = statistics_document(profile)
        violations = violations_document(stats_b, cons_b, profile)
        metrics = _metrics(profile, drift_distances(stats_b, cons_b, profile), dims, stamp)
        _write(where, "statistics.json", stats, options)
        _write(where, "constraint_violations.json", violations, options)
        _write(where, "cloudwatch_metrics.jsonl", metrics, options)
        return DataQualityResult(stats, violations, metrics, where)

    result = one(found.whole, out, _dims(options), _stamp(options, ()))
    for key, profile in found.groups.items():
        path = group_path(options.by, key)
        result.groups[path] = one(profile, _where(out, path), _group_dims(options, key), _stamp(options, key))
    return result


MODEL_NAMESPACE = "aws/sagemaker/Endpoints/model-metrics"


@dataclass
class ModelQualityResult:
    """What a model-quality run wrote: statistics, suggested constraints, violations (if constraints were given)."""

    statistics: dict[str, Any]
    constraints: dict[str, Any]
    violations: dict[str, Any] | None
    metrics: list[dict[str, Any]]
    out: str | None
    groups: dict[str, ModelQualityResult] = field(default_factory=dict)  # by group path, with `by`

    def metric(self, name: str) -> float:
        """A metric's value (e.g. ``auc``, ``rmse``)."""
        key = next(k for k in self.statistics if k.endswith("_metrics"))
        return float(self.statistics[key][name]["value"])


def run_model_quality(
    source: Source,
    out: str | None,
    *,
    quality: QualityOptions,
    baseline_constraints: str | dict[str, Any] | None = None,
    options: MonitorOptions | None = None,
) -> ModelQualityResult:
    """Model-quality metrics of merged predictions and labels, written to ``out``.

    Writes ``statistics.json`` and suggested ``constraints.json``, ``constraint_violations.json`` when
    `baseline_constraints` is given, and the metrics as CloudWatch records (``cloudwatch_metrics.jsonl``).
    SOURCE is merged data, or raw capture with ``options.ground_truth`` (merged on the way).
    """
    options = options or MonitorOptions()
    columns = tuple(
        c for c in (quality.inference_attribute, quality.probability_attribute, quality.ground_truth_attribute) if c
    )
    found = _groups(source, options, quality, columns)
    wanted = None
    if baseline_constraints is not None:
        wanted = (
            _read_json(baseline_constraints, options) if isinstance(baseline_constraints, str) else baseline_constraints
        )

    def one(state: QualityState, where: str | None, dims: list[dict[str, str]], stamp: str) -> ModelQualityResult:
        stats = quality_statistics(state, evaluation_time=options.end)
        cons = quality_constraints(stats)
        violations = quality_violations(stats, wanted) if wanted is not None else None
        key = next(k for k in stats if k.endswith("_metrics"))
        metrics = [
            {"MetricName": name, "Timestamp": stamp, "Dimensions": dims, "Value": m["value"], "Unit": "None"}
            for name, m in stats[key].items()
            if isinstance(m, dict) and isinstance(m.get("value"), float)  # not "NaN": CloudWatch takes numbers
        ]
        _write(where, "statistics.json", stats, options)
        _write(where, "constraints.json", cons, options)
        if violations is not None:
            _write(where, "constraint_violations.json", violations, options)
        _write(where, "cloudwatch_metrics.jsonl", metrics, options)
        return ModelQualityResult(stats, cons, violations, metrics, where)

    result = one(found.whole, out, _dims(options), _stamp(options, ()))
    for key, state in found.groups.items():
        path = group_path(options.by, key)
        result.groups[path] = one(state, _where(out, path), _group_dims(options, key), _stamp(options, key))
    return result
