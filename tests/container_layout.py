"""A temporary ``/opt/ml`` laid out as SageMaker lays out a processing container, and the real entry point run in it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
OPT_ML = "/opt/ml"
# What SageMaker sets in a Model Monitor container, and the engine's own switches: never leaked from the test run.
_MANAGED = {
    "dataset_format", "dataset_source", "output_path", "start_time", "end_time", "metric_time", "analysis_type",
    "problem_type", "inference_attribute", "probability_attribute", "probability_threshold_attribute",
    "ground_truth_attribute", "baseline_constraints", "baseline_statistics", "publish_cloudwatch_metrics",
    "sagemaker_endpoint_name", "sagemaker_monitoring_schedule_name", "record_preprocessor_script",
    "post_analytics_processor_script", "CAPTURE_ENGINE_OPT_ML", "CLOUDWATCH_METRICS_DIRECTORY",
}  # fmt: skip


def opt_ml(base: Path) -> Path:
    """``base/opt/ml`` with the folders SageMaker creates before the container starts."""
    root = base / "opt" / "ml"
    for sub in ("config", "output", "processing/input", "processing/output"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    (root / "config" / "resourceconfig.json").write_text(json.dumps({"current_host": "algo-1", "hosts": ["algo-1"]}))
    return root


def local(root: Path, path: str) -> Path:
    """Where SageMaker's ``/opt/ml/...`` path lies in the temporary layout."""
    return root / Path(path).relative_to(OPT_ML)


def write_job_config(root: Path, env: dict[str, str], *, inputs: dict[str, str], output: str) -> None:
    """``config/processingjobconfig.json``: the CreateProcessingJob request, as the service writes it."""
    request: dict[str, Any] = {
        "ProcessingJobArn": "arn:aws:sagemaker:us-east-1:111122223333:processing-job/test",
        "ProcessingJobName": "model-monitoring-202611010200-0123456789abcdef",
        "Environment": env,
        "AppSpecification": {"ImageUri": "111122223333.dkr.ecr.us-east-1.amazonaws.com/capture-engine:latest"},
        "ProcessingInputs": [
            {"InputName": name, "S3Input": {"LocalPath": path, "S3Uri": f"s3://bucket/{name}", "S3InputMode": "File"}}
            for name, path in inputs.items()
        ],
        "ProcessingOutputConfig": {
            "Outputs": [{"OutputName": "result", "S3Output": {"LocalPath": output, "S3Uri": "s3://bucket/out"}}]
        },
        "ProcessingResources": {"ClusterConfig": {"InstanceCount": 1, "InstanceType": "ml.m5.xlarge"}},
        "RoleArn": "arn:aws:iam::111122223333:role/monitor",
    }
    (root / "config" / "processingjobconfig.json").write_text(json.dumps(request))


def base_environment(root: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_") and k not in _MANAGED}
    env["CAPTURE_ENGINE_OPT_ML"] = str(root)
    return env


def run_entry(
    root: Path,
    env: dict[str, str],
    *args: str,
    python: str = sys.executable,
    cwd: Path = ROOT,
    user: int | None = None,
    extra: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """``python -m engine ARGS`` with the job's environment, re-rooted to `root` (no arguments: automatic entry)."""
    full = base_environment(root) | env | (extra or {})
    return subprocess.run(
        [python, "-m", "engine", *args],
        env=full,
        capture_output=True,
        text=True,
        timeout=180,
        cwd=cwd,
        user=user,
    )


def message(root: Path) -> str:
    data = (root / "output" / "message").read_bytes()
    assert len(data) <= 1024
    return data.decode("utf-8")


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())
