"""The Model Monitor environment (process environment and ``processingjobconfig.json``) as typed options.

SageMaker passes a monitoring job its inputs as environment variables (``dataset_source``, ``dataset_format``,
``output_path``, ``start_time``...); the same map is in ``/opt/ml/config/processingjobconfig.json`` under
``Environment``, which the built-in analyzer reads. Both are read here: the file first, the process
environment over it (the two agree in SageMaker; the process wins for a local run). Times are parsed
leniently: the documentation's own sample is ``"2019-12-01T15: 20: 00Z"``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import orjson

from engine.container.paths import MlPaths
from engine.errors import OptionsError, SourceError
from engine.options import parse_time

__all__ = [
    "TRIGGERS",
    "ContainerConfig",
    "DatasetFormat",
    "JobKind",
    "load_config",
    "load_environment",
    "model_monitor_environment",
]

# Without command-line arguments, `python -m engine` runs the container job when one of these is set.
TRIGGERS = ("dataset_format", "dataset_source")
DatasetKind = Literal["capture", "merged", "csv", "jsonl", "parquet"]
JobKind = Literal["baseline", "data-quality", "model-quality"]
PROBLEM_TYPES = ("BinaryClassification", "MulticlassClassification", "Regression")
_FORMATS = {"sagemakercapturejson": "capture", "sagemakermergejson": "merged", "csv": "csv", "json": "jsonl"}
_CAPTURE_SIDES = ("endpointInput", "endpointOutput")


@dataclass(frozen=True, kw_only=True)
class DatasetFormat:
    """``dataset_format``, parsed.

    Attributes:
        kind: ``capture`` (sagemakerCaptureJson), ``merged`` (sagemakerMergeJson), ``csv``, ``jsonl`` or ``parquet``.
        header: CSV: the first line names the columns.
        output_columns_position: where the model's outputs sit among a positional dataset's columns
            (``START``: ``_c0`` is the prediction or label, as in XGBoost's training CSV).
        capture_index_names: which sides of a capture record are features.
    """

    kind: DatasetKind
    header: bool = False
    output_columns_position: Literal["START", "END"] = "START"
    capture_index_names: tuple[str, ...] = _CAPTURE_SIDES


@dataclass(frozen=True, kw_only=True)
class ContainerConfig:
    """One Model Monitor job, as its environment describes it (local paths already re-rooted)."""

    dataset_source: str
    output_path: str
    dataset_format: DatasetFormat
    analysis_type: str | None = None
    start: datetime | None = None
    end: datetime | None = None
    metric_time: datetime | None = None
    problem_type: str | None = None
    inference_attribute: str | None = None
    probability_attribute: str | None = None
    probability_threshold: float = 0.5
    ground_truth_attribute: str | None = None
    positive_label: str = "1"
    baseline_statistics: str | None = None
    baseline_constraints: str | None = None
    publish_cloudwatch_metrics: bool = False
    endpoint_name: str | None = None
    schedule_name: str | None = None
    post_analytics_processor_script: str | None = None
    prefix_map: dict[str, str] = field(default_factory=dict)
    max_reject_ratio: float = 0.01
    columns: str | None = None

    @property
    def job(self) -> JobKind:
        """Model quality when asked; else a data-quality run against a baseline when one is given; else a baseline."""
        if self.analysis_type == "MODEL_QUALITY":
            return "model-quality"
        if self.baseline_statistics or self.baseline_constraints:
            return "data-quality"
        return "baseline"


def model_monitor_environment(environ: Mapping[str, str] | None = None) -> bool:
    """Whether the process runs as a Model Monitor job: one of `TRIGGERS` is in the environment."""
    env = os.environ if environ is None else environ
    return any(env.get(name) for name in TRIGGERS)


def load_environment(paths: MlPaths, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """``Environment`` of ``processingjobconfig.json`` (when the file exists) overlaid with the process environment.

    Raises:
        SourceError: the file exists but is not a JSON object.
    """
    merged: dict[str, str] = {}
    path = paths.processing_job_config
    if path.is_file():
        try:
            doc = orjson.loads(path.read_bytes())
        except (OSError, orjson.JSONDecodeError) as exc:
            raise SourceError(f"cannot read the processing job configuration ({exc})", uri=str(path)) from None
        env = doc.get("Environment") if isinstance(doc, dict) else None
        if env is not None and not isinstance(env, dict):
            raise SourceError("Environment of the processing job configuration is not an object", uri=str(path))
        merged.update({str(k): str(v) for k, v in (env or {}).items()})
    merged.update(os.environ if environ is None else environ)
    return merged


def _flag(value: Any, name: str) -> bool | None:
    """A boolean of dataset_format (true, "true"); None for the documentation's ["true", "false"] notation."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    if value is None or isinstance(value, list):
        return None
    raise OptionsError(f"dataset_format: {name} must be true or false, got {value!r}")


def parse_dataset_format(text: str | None) -> DatasetFormat:
    """``dataset_format`` (a JSON object with one key) as a `DatasetFormat`."""
    if not text or not text.strip():
        raise OptionsError("dataset_format is not set (the environment or processingjobconfig.json Environment)")
    try:
        doc = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise OptionsError(f"dataset_format is not JSON: {text[:200]!r}") from None
    if not isinstance(doc, dict) or len(doc) != 1:
        raise OptionsError(f"dataset_format must be a JSON object with one key (csv, json...), got {text[:200]!r}")
    key, params = next(iter(doc.items()))
    params = params if isinstance(params, dict) else {}
    low = key.lower()
    if low == "parquet":
        return DatasetFormat(kind="parquet")
    if low not in _FORMATS:
        raise OptionsError(
            f"unknown dataset_format {key!r}: expected sagemakerCaptureJson, sagemakerMergeJson, csv, json or parquet"
        )
    kind: DatasetKind = _FORMATS[low]  # type: ignore[assignment]
    if kind == "jsonl":
        lines = _flag(params.get("lines", params.get("line")), "lines")
        if lines is False:
            raise OptionsError('dataset_format json with "lines": false is not supported: give JSON Lines')
        return DatasetFormat(kind="jsonl")
    if kind == "csv":
        position = str(params.get("output_columns_position", "START")).upper()
        if position not in ("START", "END"):
            raise OptionsError(f"dataset_format: output_columns_position must be START or END, got {position!r}")
        return DatasetFormat(
            kind="csv",
            header=bool(_flag(params.get("header"), "header")),
            output_columns_position=position,  # type: ignore[arg-type]
        )
    sides = params.get("captureIndexNames") or list(_CAPTURE_SIDES)
    if not isinstance(sides, list) or not sides or any(s not in _CAPTURE_SIDES for s in sides):
        raise OptionsError(f"dataset_format: captureIndexNames takes endpointInput, endpointOutput, not {sides!r}")
    return DatasetFormat(kind=kind, capture_index_names=tuple(sides))


def lenient_time(name: str, value: str | None) -> datetime | None:
    """An ISO-8601 time with any whitespace removed (``2019-12-01T15: 20: 00Z``); None when unset."""
    if value is None or not value.strip():
        return None
    try:
        return parse_time(re.sub(r"\s+", "", value))
    except OptionsError:
        raise OptionsError(f"{name} is not an ISO-8601 time: {value!r}") from None


def _prefix_map(text: str | None, paths: MlPaths) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in (text or "").split():
        src, sep, dst = pair.partition("=")
        if not sep or not src or not dst:
            raise OptionsError(f"CAPTURE_ENGINE_PREFIX_MAP takes FROM=TO pairs separated by spaces, got {pair!r}")
        out[src] = paths.local(dst)
    return out


def load_config(paths: MlPaths, environ: Mapping[str, str] | None = None) -> ContainerConfig:
    """The job's options from its environment (see `load_environment`).

    Raises:
        OptionsError: a required variable is missing, or a value is invalid (the message names the variable).
        SourceError: processingjobconfig.json cannot be read.
    """
    env = load_environment(paths, environ)

    def get(name: str) -> str | None:
        value = env.get(name)
        return value.strip() if value and value.strip() else None

    for script in ("record_preprocessor_script",):
        if get(script):
            # A per-record Python hook defeats the vectorized decoders; payloads are decoded by column instead.
            raise OptionsError(
                f"{script} is not supported by this container: payloads are decoded into columns without a "
                "per-record hook; name and type them with a column spec instead (CAPTURE_ENGINE_COLUMNS=spec.json)"
            )
    fmt = parse_dataset_format(get("dataset_format"))
    source, out = get("dataset_source"), get("output_path")
    if source is None:
        raise OptionsError("dataset_source is not set (the environment or processingjobconfig.json Environment)")
    if out is None:
        raise OptionsError("output_path is not set (the environment or processingjobconfig.json Environment)")
    analysis = (get("analysis_type") or "").upper() or None
    if analysis not in (None, "DATA_QUALITY", "MODEL_QUALITY"):
        raise OptionsError(f"analysis_type must be DATA_QUALITY or MODEL_QUALITY, got {get('analysis_type')!r}")
    problem = get("problem_type")
    if analysis == "MODEL_QUALITY" and problem not in PROBLEM_TYPES:
        raise OptionsError(f"problem_type must be one of {', '.join(PROBLEM_TYPES)} for MODEL_QUALITY, got {problem!r}")
    threshold_text = get("probability_threshold_attribute")
    try:
        threshold = float(threshold_text) if threshold_text is not None else 0.5
    except ValueError:
        raise OptionsError(f"probability_threshold_attribute is not a number: {threshold_text!r}") from None
    ratio_text = get("CAPTURE_ENGINE_MAX_REJECT_RATIO") or "0.01"
    try:
        ratio = float(ratio_text)
    except ValueError:
        ratio = -1.0
    if not 0.0 <= ratio <= 1.0:
        raise OptionsError(f"CAPTURE_ENGINE_MAX_REJECT_RATIO must be a number within 0..1, got {ratio_text!r}")
    publish = (get("publish_cloudwatch_metrics") or "Disabled").lower()
    if publish not in ("enabled", "disabled"):
        raise OptionsError(f"publish_cloudwatch_metrics must be Enabled or Disabled, got {publish!r}")
    start, end = lenient_time("start_time", get("start_time")), lenient_time("end_time", get("end_time"))
    if start is not None and end is not None and end <= start:
        raise OptionsError(f"end_time {end:%Y-%m-%dT%H:%M:%SZ} is not after start_time {start:%Y-%m-%dT%H:%M:%SZ}")

    def local(name: str) -> str | None:
        value = get(name)
        return paths.local(value) if value is not None else None

    return ContainerConfig(
        dataset_source=paths.local(source),
        output_path=paths.local(out),
        dataset_format=fmt,
        analysis_type=analysis,
        start=start,
        end=end,
        metric_time=lenient_time("metric_time", get("metric_time")),
        problem_type=problem,
        inference_attribute=get("inference_attribute"),
        probability_attribute=get("probability_attribute"),
        probability_threshold=threshold,
        ground_truth_attribute=get("ground_truth_attribute"),
        positive_label=get("positive_label") or "1",
        baseline_statistics=local("baseline_statistics"),
        baseline_constraints=local("baseline_constraints"),
        publish_cloudwatch_metrics=publish == "enabled",
        endpoint_name=get("sagemaker_endpoint_name"),
        schedule_name=get("sagemaker_monitoring_schedule_name"),
        post_analytics_processor_script=local("post_analytics_processor_script"),
        prefix_map=_prefix_map(get("CAPTURE_ENGINE_PREFIX_MAP"), paths),
        max_reject_ratio=ratio,
        columns=local("CAPTURE_ENGINE_COLUMNS"),
    )
