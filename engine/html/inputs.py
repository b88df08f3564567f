"""What a report is made from: each SOURCE told apart (a dataset the engine wrote, or a monitoring output).

A dataset is a folder with the engine's ``_SUCCESS`` / ``_manifest.json`` (or, written by something else,
hive-partitioned Parquet files). A monitoring output is a folder holding ``statistics.json`` (a file of
that name may be given instead of its folder): a data-quality window when it has violations or metric
records beside it, else a baseline; model quality when its statistics hold ``<problem>_metrics``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

from engine.errors import SourceError
from engine.io.storage import Location, open_location, translate_errors
from engine.sinks.manifest import read_manifest

__all__ = ["DatasetSource", "Inputs", "MonitorOutput", "load_inputs", "read_json"]

MonitorKind = Literal["data-quality", "data-baseline", "model-quality"]


@dataclass(frozen=True, kw_only=True)
class DatasetSource:
    """A dataset: where it is, its run report (``_SUCCESS``, or ``_FAILED``) and its manifest, when present."""

    uri: str
    loc: Location
    success: dict[str, Any] | None
    failed: dict[str, Any] | None
    manifest: dict[str, Any] | None


@dataclass(frozen=True, kw_only=True)
class MonitorOutput:
    """The documents of one monitoring run (or baseline) folder."""

    uri: str
    kind: MonitorKind
    statistics: dict[str, Any]
    constraints: dict[str, Any] | None = None
    violations: dict[str, Any] | None = None
    metrics: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True, kw_only=True)
class Inputs:
    """Every source of a report, sorted by kind (in the order they were given)."""

    datasets: list[DatasetSource]
    monitors: list[MonitorOutput]


def read_json(loc: Location, path: str) -> Any:
    """A JSON document at `path` of `loc`, or None when it does not exist; bad JSON is a SourceError naming it."""
    uri = loc.uri(path)
    with translate_errors(uri):
        try:
            raw = loc.fs.cat_file(path)
        except FileNotFoundError:
            return None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise SourceError(f"not a JSON document ({exc})", uri=uri) from None


def _read_jsonl(loc: Location, path: str) -> list[dict[str, Any]]:
    uri = loc.uri(path)
    with translate_errors(uri):
        try:
            raw: bytes = loc.fs.cat_file(path)
        except FileNotFoundError:
            return []
    out = []
    for n, line in enumerate(raw.splitlines(), 1):
        if line.strip():
            try:
                out.append(orjson.loads(line))
            except orjson.JSONDecodeError as exc:
                raise SourceError(f"line {n} is not JSON ({exc})", uri=uri) from None
    return out


def _monitor(loc: Location, uri: str) -> MonitorOutput:
    stats = read_json(loc, loc.join("statistics.json"))
    if not isinstance(stats, dict):
        raise SourceError("statistics.json is not a JSON object", uri=loc.uri(loc.join("statistics.json")))
    constraints = read_json(loc, loc.join("constraints.json"))
    violations = read_json(loc, loc.join("constraint_violations.json"))
    metrics = _read_jsonl(loc, loc.join("cloudwatch_metrics.jsonl"))
    model = any(k.endswith("_metrics") for k in stats)
    if not model and "features" not in stats:
        raise SourceError("statistics.json holds neither features nor model metrics", uri=loc.uri(loc.root))
    # A baseline is written without violations or metric records; a monitoring run writes both.
    run = violations is not None or bool(metrics)
    # model-quality always writes metric records, so each of its outputs is a point in time.
    kind: MonitorKind = "model-quality" if model else ("data-quality" if run else "data-baseline")
    return MonitorOutput(
        uri=uri, kind=kind, statistics=stats, constraints=constraints, violations=violations, metrics=metrics
    )


def _dataset(loc: Location, uri: str) -> DatasetSource | None:
    success = read_json(loc, loc.join("_SUCCESS"))
    failed = read_json(loc, loc.join("_FAILED"))
    manifest = read_manifest(loc)
    if success is None and failed is None and manifest is None:
        with translate_errors(uri):
            if not any(p.endswith(".parquet") for p in loc.fs.find(loc.root)):
                return None
    return DatasetSource(uri=uri, loc=loc, success=success, failed=failed, manifest=manifest)


def load_inputs(sources: list[str], storage_options: dict[str, Any] | None = None) -> Inputs:
    """Tell each source apart and read its documents.

    Raises:
        SourceError: a source does not exist, is neither a dataset nor a monitoring output, or holds bad JSON.
    """
    datasets: list[DatasetSource] = []
    monitors: list[MonitorOutput] = []
    for uri in sources:
        loc = open_location(uri, storage_options or {})
        with translate_errors(uri):
            if not loc.fs.exists(loc.root):
                raise SourceError("report source not found", uri=uri)
            is_dir = loc.fs.isdir(loc.root)
        if not is_dir:
            if loc.root.rsplit("/", 1)[-1] != "statistics.json":
                raise SourceError("a report source is a dataset or monitoring folder (or its statistics.json)", uri=uri)
            uri = uri.rstrip("/").rsplit("/", 1)[0]
            loc = open_location(uri, storage_options or {})
        with translate_errors(uri):
            has_stats = loc.fs.exists(loc.join("statistics.json"))
        if has_stats:
            monitors.append(_monitor(loc, uri))
            continue
        dataset = _dataset(loc, uri)
        if dataset is None:
            raise SourceError("neither a dataset (no _SUCCESS, manifest or Parquet) nor a monitoring output", uri=uri)
        datasets.append(dataset)
    return Inputs(datasets=datasets, monitors=monitors)
