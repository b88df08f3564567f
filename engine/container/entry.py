"""The container job: read the Model Monitor environment, run the job, leave the status where SageMaker reads it.

A run ends in one of three ways, as the built-in analyzer's do:

- ``Completed: Job completed successfully with no violations.`` in ``/opt/ml/output/message``, exit 0;
- ``CompletedWithViolations: Job completed successfully with N violations.``, exit 0 (SageMaker maps the prefix
  to the execution status ``CompletedWithViolations``);
- the one-line error as the message and the engine's exit code (1 source, 2 options, 3 rejects, 4 no data,
  70 internal), which SageMaker reports as ``Failed`` with that ``ExitMessage``.

The reports go to ``output_path`` (``statistics.json``, ``constraints.json``, ``constraint_violations.json``,
``cloudwatch_metrics.jsonl``); with ``publish_cloudwatch_metrics=Enabled`` the metric records also go to
``/opt/ml/output/metrics/cloudwatch/cloudwatch_metrics.jsonl``, stamped with ``metric_time``.
"""

from __future__ import annotations

import importlib.util
import logging
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pyarrow.parquet as pq

from engine.container.config import ContainerConfig, load_config
from engine.container.datasets import Prepared, prepare_dataset
from engine.container.paths import MlPaths, ml_paths
from engine.errors import EngineError, OptionsError, SourceError
from engine.io.storage import redact
from engine.monitor.job import MonitorOptions, run_baseline, run_data_quality, run_model_quality
from engine.monitor.quality import QualityOptions

__all__ = ["MESSAGE_LIMIT", "ContainerOutcome", "run_container", "write_message"]

logger = logging.getLogger(__name__)

MESSAGE_LIMIT = 1024  # bytes of /opt/ml/output/message that become ExitMessage
METRICS_FILE = "cloudwatch_metrics.jsonl"


@dataclass(frozen=True)
class ContainerOutcome:
    """What a container run did: its job, the violations found, the message written."""

    job: str
    violations: int
    message: str
    output_path: str
    records: int


def write_message(paths: MlPaths, text: str) -> None:
    """The exit message: one line of UTF-8, cut to 1 KB on a character boundary."""
    line = " ".join(text.split())
    data = line.encode("utf-8")[:MESSAGE_LIMIT].decode("utf-8", "ignore").encode("utf-8")
    if not paths.root.is_dir():  # not in a container (a dry run on a workstation): nothing to leave a status in
        logger.warning("%s does not exist: the exit message is not written", paths.root)
        return
    try:
        paths.message.parent.mkdir(parents=True, exist_ok=True)
        paths.message.write_bytes(data)
    except OSError as exc:  # the status is lost, but the exit code and the log still carry it
        logger.error("cannot write the exit message %s: %s", paths.message, exc)


def _document(name: str, path: str | None) -> dict[str, Any] | None:
    if path is None:
        return None
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise SourceError(f"cannot read {name} ({exc.strerror or exc})", uri=path) from None
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise SourceError(f"{name} is not a JSON document ({exc})", uri=path) from None
    if not isinstance(doc, dict):
        raise SourceError(f"{name} is not a JSON object", uri=path)
    return doc


def _feature_names(*docs: dict[str, Any] | None) -> list[str] | None:
    for doc in docs:
        features = (doc or {}).get("features")
        if isinstance(features, list) and features:
            return [str(f.get("name")) for f in features if isinstance(f, dict)]
    return None


def _columns(prepared: Prepared) -> list[str]:
    files = sorted(Path(prepared.source).glob("*.parquet"))
    return list(pq.read_schema(files[0]).names) if files else []


def _attribute(name: str | None, columns: list[str], role: str) -> str | None:
    """A capture's attribute as the analyzer names it (``0``: the first output value) mapped to a decoded column."""
    if name is None or name in columns:
        return name
    if name.isdigit():
        for candidate in (f"prediction_{name}", "prediction" if name == "0" else ""):
            if candidate in columns:
                return candidate
    raise OptionsError(f"{role} {name!r} is not a column of the decoded records ({', '.join(columns)})")


def _quality_options(config: ContainerConfig, prepared: Prepared) -> QualityOptions:
    decoded = prepared.format == "parquet" and config.dataset_format.kind in ("capture", "merged")
    inference, probability = config.inference_attribute, config.probability_attribute
    truth = config.ground_truth_attribute
    if decoded:
        columns = _columns(prepared)
        inference = _attribute(inference, columns, "inference_attribute")
        if inference is None and probability is None:
            inference = "prediction"
        probability = _attribute(probability, columns, "probability_attribute")
        if config.dataset_format.kind == "merged" and (truth is None or truth not in columns):
            truth = "label"  # the label of the merged line's groundTruthData
    return QualityOptions(
        problem_type=config.problem_type,  # type: ignore[arg-type]  # checked by load_config
        inference_attribute=inference,
        probability_attribute=probability,
        probability_threshold=config.probability_threshold,
        ground_truth_attribute=truth or "label",
        positive_label=config.positive_label,
    )


def _metrics(records: list[dict[str, Any]], config: ContainerConfig) -> list[dict[str, Any]]:
    """Metric records with the job's own time and dimensions (an unknown dimension is left out, not invented)."""
    stamp = config.metric_time.strftime("%Y-%m-%dT%H:%M:%SZ") if config.metric_time else None
    known = {"Endpoint": config.endpoint_name, "MonitoringSchedule": config.schedule_name}
    out = []
    for record in records:
        r = dict(record)
        if stamp:
            r["Timestamp"] = stamp
        r["Dimensions"] = [{"Name": n, "Value": v} for n, v in known.items() if v]
        out.append(r)
    return out


def _write_lines(path: Path, records: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))


def _html_report(config: ContainerConfig, job: str) -> None:
    """``report.html`` next to the JSON reports: the page Studio used to show, from the files just written.

    A page that cannot be drawn (the image without the ``[report]`` extra, say) is a warning, never a failed job:
    the JSON reports are the contract.
    """
    from engine.html.build import ReportOptions, write_report

    model = job == "model-quality"
    options = ReportOptions(
        title=f"capture-engine {job}",
        baseline_statistics=None if model else config.baseline_statistics,
        baseline_constraints=None if model else config.baseline_constraints,
        model_constraints=config.baseline_constraints if model else None,
        command=["capture-engine", "container"],
    )
    try:
        write_report([config.output_path], str(Path(config.output_path) / "report.html"), options=options)
    except Exception as exc:  # auxiliary output: reported, never fatal
        logger.warning("the HTML report could not be written: %s", str(exc).splitlines()[0] if str(exc) else exc)


def _post_analytics(script: str | None) -> None:
    """Run ``postprocess_handler()`` of ``post_analytics_processor_script``, the documented contract."""
    if script is None:
        return
    spec = importlib.util.spec_from_file_location("post_analytics_processor", script)
    if spec is None or spec.loader is None or not Path(script).is_file():
        raise SourceError("post_analytics_processor_script not found", uri=script)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
        handler = getattr(module, "postprocess_handler", None)
        if handler is None:
            raise OptionsError(f"post_analytics_processor_script {script} defines no postprocess_handler()")
        handler()
    except EngineError:
        raise
    except Exception as exc:
        raise OptionsError(f"post_analytics_processor_script {script} failed: {type(exc).__name__}: {exc}") from None


def _run(config: ContainerConfig, paths: MlPaths) -> ContainerOutcome:
    job = config.job
    if job == "data-quality" and not (config.baseline_statistics and config.baseline_constraints):
        given = "baseline_statistics" if config.baseline_statistics else "baseline_constraints"
        raise OptionsError(f"data quality needs baseline_statistics and baseline_constraints; only {given} is set")
    stats_b = _document("baseline_statistics", config.baseline_statistics) if job == "data-quality" else None
    cons_b = _document("baseline_constraints", config.baseline_constraints)
    out = config.output_path
    Path(out).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="capture-engine-container-") as tmp:
        names = _feature_names(cons_b, stats_b) if job == "data-quality" else None
        prepared = prepare_dataset(config, Path(tmp), baseline_features=names, positional=job != "model-quality")
        decoded = prepared.format == "parquet" and prepared.rows >= 0
        options = MonitorOptions(
            format=prepared.format,  # type: ignore[arg-type]
            header=prepared.header,
            # Decoded records are windowed already; plain files are the window SageMaker mounted.
            start=config.start if prepared.windowed else None,
            end=config.end if prepared.windowed else None,
            endpoint=config.endpoint_name or "endpoint",
            schedule=config.schedule_name or "schedule",
        )
        metrics: list[dict[str, Any]] = []
        if job == "baseline":
            stats, _ = run_baseline(prepared.source, out, options=options)
            found = 0
        elif job == "data-quality":
            assert config.baseline_statistics and config.baseline_constraints
            dq = run_data_quality(
                prepared.source,
                out,
                baseline_statistics=config.baseline_statistics,
                baseline_constraints=config.baseline_constraints,
                options=options,
            )
            stats, found, metrics = dq.statistics, len(dq.violations["violations"]), dq.metrics
        else:
            mq = run_model_quality(
                prepared.source,
                out,
                quality=_quality_options(config, prepared),
                baseline_constraints=config.baseline_constraints,
                options=options,
            )
            stats, metrics = mq.statistics, mq.metrics
            found = len((mq.violations or {}).get("violations", []))
    records = int(stats.get("dataset", {}).get("item_count", prepared.rows if decoded else 0))
    if metrics:
        metrics = _metrics(metrics, config)
        _write_lines(Path(out) / METRICS_FILE, metrics)
        if config.publish_cloudwatch_metrics:
            _write_lines(paths.metrics_dir / METRICS_FILE, metrics)
    _html_report(config, job)
    _post_analytics(config.post_analytics_processor_script)
    if found:
        message = f"CompletedWithViolations: Job completed successfully with {found} violations."
    else:
        message = "Completed: Job completed successfully with no violations."
    return ContainerOutcome(job=job, violations=found, message=message, output_path=out, records=records)


def run_container(*, environ: Mapping[str, str] | None = None) -> ContainerOutcome:
    """Run the Model Monitor job the environment describes; the status goes to ``/opt/ml/output/message``.

    Raises:
        EngineError: the job failed; its one-line message is in the exit message file already.
    """
    paths = ml_paths(environ)
    started = datetime.now()
    try:
        config = load_config(paths, environ)
        logger.info(
            "container job %s: %s (%s) -> %s", config.job, config.dataset_source, config.dataset_format.kind,
            config.output_path,
        )  # fmt: skip
        outcome = _run(config, paths)
    except EngineError as exc:
        write_message(paths, redact(str(exc)))
        raise
    except KeyboardInterrupt as exc:  # SIGTERM (SageMaker stopping the job) or SIGINT, at a safe point
        write_message(paths, f"interrupted ({exc or 'signal'}) before the job finished; no report was completed")
        raise
    except Exception as exc:
        write_message(paths, redact(f"internal error: {type(exc).__name__}: {exc}"))
        raise
    write_message(paths, outcome.message)
    logger.info("%s (%.1f s)", outcome.message, (datetime.now() - started).total_seconds())
    return outcome
