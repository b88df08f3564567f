"""The monitoring outputs load with the SageMaker SDK's own classes (`sagemaker.model_monitor`).

The SDK needs boto3, and s3fs pins botocore, so it cannot share the dev environment: ``make monitor-sdk``
creates a venv of its own (``.venv-sagemaker``) and runs this module with ``MONITOR_SDK_PYTHON`` pointing
at it. Without that interpreter the test is skipped. The files are written by the engine straight to a real
S3 server (SeaweedFS) and read by the SDK from there, as ``Statistics.from_s3_uri`` reads them in a job.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pytest

from engine.monitor.job import MonitorOptions, run_baseline, run_data_quality, run_model_quality
from engine.monitor.quality import QualityOptions

if TYPE_CHECKING:
    from tests.s3_server import S3Endpoint

pytest_plugins = ["tests.s3_server"]

SDK_PYTHON = os.environ.get("MONITOR_SDK_PYTHON", "")
LOADER = r"""
import json, sys
import boto3
from sagemaker.session import Session
from sagemaker.model_monitor import Constraints, ConstraintViolations, Statistics

session = Session(boto_session=boto3.Session())
uris = json.loads(sys.argv[1])
out = {}
for name, uri in uris.items():
    cls = {"statistics": Statistics, "constraints": Constraints, "violations": ConstraintViolations}[name.split("-")[0]]
    obj = cls.from_s3_uri(uri, sagemaker_session=session)
    out[name] = obj.body_dict
base = Constraints.from_s3_uri(uris["constraints-dq"], sagemaker_session=session)
base.set_monitoring(enable_monitoring=False, feature_name="x")  # the SDK's own edit of a feature
out["set_monitoring"] = base.body_dict["features"][0]
print(json.dumps(out))
"""


@pytest.mark.s3
@pytest.mark.skipif(not Path(SDK_PYTHON).is_file(), reason="no SageMaker SDK venv (make monitor-sdk makes one)")
def test_outputs_load_with_the_sagemaker_sdk(s3_server: S3Endpoint, s3_bucket: str) -> None:
    rng = np.random.default_rng(0)
    table = pa.table({"x": rng.normal(size=3000), "c": rng.choice(["a", "b"], 3000), "label": rng.integers(0, 2, 3000)})
    options = MonitorOptions(storage_options=s3_server.storage_options())
    root = f"s3://{s3_bucket}"
    stats, cons = run_baseline(table, f"{root}/base", options=options)
    drifted = table.set_column(0, "x", pa.array(np.asarray(table["x"]) + 1.0))
    dq = run_data_quality(drifted, f"{root}/dq", baseline_statistics=stats, baseline_constraints=cons, options=options)
    quality = QualityOptions(problem_type="BinaryClassification", probability_attribute="x")
    mq = run_model_quality(table, f"{root}/mq", quality=quality, options=options)
    uris = {
        "statistics-dq": f"{root}/base/statistics.json",
        "constraints-dq": f"{root}/base/constraints.json",
        "violations-dq": f"{root}/dq/constraint_violations.json",
        "statistics-mq": f"{root}/mq/statistics.json",
        "constraints-mq": f"{root}/mq/constraints.json",
    }
    env = {**os.environ, **s3_server.env(), "SAGEMAKER_SUPPRESS_V2_WARNING": "1"}
    done = subprocess.run(
        [SDK_PYTHON, "-c", LOADER, json.dumps(uris)], capture_output=True, text=True, env=env, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    assert loaded["statistics-dq"] == stats and loaded["constraints-dq"] == cons
    assert loaded["violations-dq"] == dq.violations and dq.violations["violations"]
    assert loaded["statistics-mq"] == mq.statistics and loaded["constraints-mq"] == mq.constraints
    # What the docs do with the suggestion: pd.DataFrame(body_dict["binary_classification_constraints"]).T
    assert "auc" in loaded["constraints-mq"]["binary_classification_constraints"]
    assert loaded["set_monitoring"]["name"] == "x"
    disabled = loaded["set_monitoring"]
    assert disabled["monitoring_config_overrides"] == {"evaluate_constraints": "Disabled"}
    # The SDK's edit is a constraints file the engine honours: the feature is not checked any more.
    cons_edited = {**cons, "features": [disabled, *cons["features"][1:]]}
    again = run_data_quality(drifted, None, baseline_statistics=stats, baseline_constraints=cons_edited)
    assert {v["feature_name"] for v in again.violations["violations"]} == set()
