"""The processing-container entry point against a temporary ``/opt/ml`` laid out as SageMaker lays it out.

Every job kind runs the real entry point (``python -m engine``, without arguments as the image runs it) in a
subprocess, with Model Monitor's environment: a data-quality baseline, data-quality schedules on endpoint
capture (hours outside the window mounted, ``start_time`` with the documentation's stray spaces) and on batch
capture, model quality on SageMaker's merged JSON Lines, and a plain processing job. Expected numbers are
recounted from the raw capture with the standard library.
"""

from __future__ import annotations

import base64
import json
import shutil
import statistics
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.dataset as ds
import pytest
from container_layout import base_environment, local, message, opt_ml, read_json, run_entry, write_job_config

import engine
from engine.container import MlPaths, load_config, ml_paths, run_container
from engine.errors import EngineError, OptionsError
from engine.synth import BatchSynthOptions, SynthOptions, synth, synth_batch

COMPLETED = "Completed: Job completed successfully with no violations."
CAPTURE_FORMAT = '{"sagemakerCaptureJson": {"captureIndexNames": ["endpointInput", "endpointOutput"]}}'
ENDPOINT = "churn-xgb-endpoint-1"
METRICS = "output/metrics/cloudwatch/cloudwatch_metrics.jsonl"


def _capture_events(capture: Path, hour: str) -> list[dict[str, Any]]:
    """Capture records whose inferenceTime lies in `hour` (``2026-11-01T01``), read with json."""
    out = []
    for path in sorted(capture.rglob("*.jsonl")):
        for line in path.read_text().splitlines():
            if line.strip():
                rec = json.loads(line)
                if rec["eventMetadata"]["inferenceTime"].startswith(hour):
                    out.append(rec)
    return out


def _body(side: dict[str, str]) -> float:
    """A CSV score, as text or base64."""
    data = base64.b64decode(side["data"]).decode() if side["encoding"] == "BASE64" else side["data"]
    return float(data)


def _drift(capture: Path, hour_folder: str, feature: int, factor: float) -> None:
    """Multiply CSV feature `feature` of the hour folder's requests by `factor` (base64 bodies stay as they are)."""
    for path in capture.rglob(f"{hour_folder}/*.jsonl"):
        lines = []
        for line in path.read_text().splitlines():
            rec = json.loads(line)
            side = rec["captureData"]["endpointInput"]
            if side["encoding"] == "CSV":
                data = side["data"].split(",")
                data[feature] = f"{float(data[feature]) * factor:.2f}"
                side["data"] = ",".join(data)
            lines.append(json.dumps(rec))
        path.write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def capture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three hours of CSV capture (5 features and a score); the second hour's feature f1 tripled."""
    root = tmp_path_factory.mktemp("synth")
    opts = SynthOptions(
        records=1500, hours=3, endpoints=1, variants=1, seed=5, features=5, json_share=0.0, multi_record_share=0.0,
        records_per_file=250,
    )  # fmt: skip
    synth(str(root), opts)
    _drift(root / "capture", "2026/11/01/01", 1, 3.0)
    return root


@pytest.fixture(scope="module")
def baseline(capture: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Any]]:
    """A data-quality baseline job on the first hour of capture, as ``suggest_baseline`` would run it."""
    root = opt_ml(tmp_path_factory.mktemp("baseline"))
    shutil.copytree(capture / "capture", local(root, "/opt/ml/processing/input/baseline_dataset_input"))
    env = {
        "dataset_format": CAPTURE_FORMAT,
        "dataset_source": "/opt/ml/processing/input/baseline_dataset_input",
        "output_path": "/opt/ml/processing/output",
        "publish_cloudwatch_metrics": "Disabled",
        "start_time": "2026-11-01T00:00:00Z",
        "end_time": "2026-11-01T01:00:00Z",
    }
    yield root, run_entry(root, env)


def test_data_quality_baseline_on_capture(baseline: tuple[Path, Any], capture: Path) -> None:
    root, proc = baseline
    assert proc.returncode == 0, proc.stderr
    assert message(root) == COMPLETED
    assert "Traceback" not in proc.stderr
    out = local(root, "/opt/ml/processing/output")
    stats, cons = read_json(out / "statistics.json"), read_json(out / "constraints.json")
    events = _capture_events(capture / "capture", "2026-11-01T00")
    assert stats["dataset"]["item_count"] == len(events) > 0
    # The analyzer's names: Spark's _c0.. with the model's output first (output_columns_position START).
    assert [f["name"] for f in stats["features"]] == ["_c0", "_c1", "_c2", "_c3", "_c4", "_c5"]
    assert [f["name"] for f in cons["features"]] == [f["name"] for f in stats["features"]]
    by_name = {f["name"]: f for f in stats["features"]}
    scores = [_body(e["captureData"]["endpointOutput"]) for e in events]
    assert by_name["_c0"]["numerical_statistics"]["common"]["num_present"] == len(events)
    assert by_name["_c0"]["numerical_statistics"]["mean"] == pytest.approx(statistics.fmean(scores))


def _schedule(tmp: Path, capture: Path, baseline_root: Path, hour: int) -> tuple[Path, dict[str, str]]:
    """A data-quality schedule's container: every hour of capture mounted, the window is `hour` only."""
    root = opt_ml(tmp)
    shutil.copytree(capture / "capture", local(root, "/opt/ml/processing/input/endpoint"))
    base_out = local(baseline_root, "/opt/ml/processing/output")
    for kind, name in (("stats", "statistics.json"), ("constraints", "constraints.json")):
        dest = local(root, f"/opt/ml/processing/baseline/{kind}/{name}")
        dest.parent.mkdir(parents=True)
        shutil.copy(base_out / name, dest)
    env = {
        "dataset_format": CAPTURE_FORMAT,
        "dataset_source": "/opt/ml/processing/input/endpoint",
        "output_path": "/opt/ml/processing/output",
        "baseline_statistics": "/opt/ml/processing/baseline/stats/statistics.json",
        "baseline_constraints": "/opt/ml/processing/baseline/constraints/constraints.json",
        "publish_cloudwatch_metrics": "Enabled",
        "sagemaker_endpoint_name": ENDPOINT,
        "sagemaker_monitoring_schedule_name": "hourly-dq",
        # The documentation's own sample carries these spaces.
        "start_time": f"2026-11-01T{hour:02d}: 00: 00Z",
        "end_time": f"2026-11-01T{hour + 1:02d}: 00: 00Z",
        "metric_time": f"2026-11-01T{hour:02d}:00:00Z",
    }
    write_job_config(root, env, inputs={"endpoint_input_1": env["dataset_source"]}, output=env["output_path"])
    return root, env


def test_data_quality_schedule_on_endpoint_capture(baseline: tuple[Path, Any], capture: Path, tmp_path: Path) -> None:
    root, env = _schedule(tmp_path, capture, baseline[0], hour=2)
    proc = run_entry(root, env)
    assert proc.returncode == 0, proc.stderr
    assert message(root) == COMPLETED
    out = local(root, "/opt/ml/processing/output")
    stats = read_json(out / "statistics.json")
    # Hours 00 and 01 are mounted too (01 drifted): only hour 02's records are in the analysis.
    assert stats["dataset"]["item_count"] == len(_capture_events(capture / "capture", "2026-11-01T02"))
    assert read_json(out / "constraint_violations.json") == {"violations": []}
    published = [json.loads(line) for line in (root / METRICS).read_text().splitlines()]
    names = {"feature_data__c0", "feature_non_null__c5", "feature_baseline_drift__c2"}
    assert {r["MetricName"] for r in published} >= names
    assert {r["Timestamp"] for r in published} == {"2026-11-01T02:00:00Z"}
    dims = [{"Name": "Endpoint", "Value": ENDPOINT}, {"Name": "MonitoringSchedule", "Value": "hourly-dq"}]
    assert all(r["Dimensions"] == dims for r in published)
    assert (out / "cloudwatch_metrics.jsonl").read_text() == (root / METRICS).read_text()


def test_data_quality_schedule_with_violations_from_the_job_config(
    baseline: tuple[Path, Any], capture: Path, tmp_path: Path
) -> None:
    root, _ = _schedule(tmp_path, capture, baseline[0], hour=1)
    # Only processingjobconfig.json holds the environment here (as the built-in analyzer reads it).
    proc = run_entry(root, {}, "container")
    assert proc.returncode == 0, proc.stderr
    found = read_json(local(root, "/opt/ml/processing/output/constraint_violations.json"))["violations"]
    assert found, "the tripled feature f1 (_c2: the output is _c0) must drift"
    assert {v["feature_name"] for v in found if v["constraint_check_type"] == "baseline_drift_check"} == {"_c2"}
    assert message(root) == f"CompletedWithViolations: Job completed successfully with {len(found)} violations."
    assert proc.stdout.strip() == message(root)
    # The page Studio used to show, next to the JSON reports: the drifted feature is on it.
    page = local(root, "/opt/ml/processing/output/report.html").read_text()
    assert page.lstrip().lower().startswith("<!doctype html") and "_c2" in page


def test_data_quality_on_batch_capture(tmp_path: Path) -> None:
    root = opt_ml(tmp_path)
    inputs = local(root, "/opt/ml/processing/input")
    opts = BatchSynthOptions(
        jobs=2, files_per_job=2, records_per_file=120, features=5, jsonl_share=0.0, join_share=0.0,
        failed_file_share=0.0, single_object_job=False, seed=3,
    )  # fmt: skip
    synth_batch(str(inputs), opts)
    common = {
        "dataset_format": '{"csv": {"header": false}}',
        "dataset_source": "/opt/ml/processing/input/batch-capture",
        "publish_cloudwatch_metrics": "Disabled",
    }
    first = {**common, "output_path": "/opt/ml/processing/baseline", "start_time": "2026-11-01T00:00:00Z",
             "end_time": "2026-11-01T01:00:00Z"}  # fmt: skip
    # The baseline in-process (the subject here is the monitoring run below, through the real entry point).
    assert run_container(environ=base_environment(root) | first).message == COMPLETED
    base = local(root, "/opt/ml/processing/baseline")
    second = {
        **common,
        "output_path": "/opt/ml/processing/output",
        "baseline_statistics": "/opt/ml/processing/baseline/statistics.json",
        "baseline_constraints": "/opt/ml/processing/baseline/constraints.json",
        "start_time": "2026-11-01T01: 00: 00Z",
        "end_time": "2026-11-01T02: 00: 00Z",
    }
    proc = run_entry(root, second)
    assert proc.returncode == 0, proc.stderr
    # Job n starts in hour n: each window holds one job's .out lines.
    for folder, job in ((base, "job-0"), (local(root, "/opt/ml/processing/output"), "job-1")):
        lines = sum(len(p.read_text().splitlines()) for p in (inputs / "transform-output" / job).rglob("*.out"))
        assert read_json(folder / "statistics.json")["dataset"]["item_count"] == lines == 240
    # The second job's records come from the same generator as the first's: nothing to report.
    assert read_json(local(root, "/opt/ml/processing/output/constraint_violations.json")) == {"violations": []}
    assert message(root) == COMPLETED
    assert [f["name"] for f in read_json(base / "statistics.json")["features"]][:2] == ["_c0", "_c1"]


def test_model_quality_on_merged_capture(capture: Path, tmp_path: Path) -> None:
    merged = tmp_path / "merged"
    engine.run_merge(
        captures=str(capture / "capture"),
        ground_truth=str(capture / "ground-truth"),
        dest=str(merged),
        options=engine.MergeOptions(sagemaker_format=True),
    )
    root = opt_ml(tmp_path / "job")
    shutil.copytree(merged / "_sagemaker" / "merge", local(root, "/opt/ml/processing/input_data"))
    lines = [json.loads(x) for p in sorted(local(root, "/opt/ml/processing/input_data").rglob("*.jsonl"))
             for x in p.read_text().splitlines()]  # fmt: skip
    window = [r for r in lines if r["eventMetadata"]["inferenceTime"].startswith("2026-11-01T01")]
    assert window and len(window) < len(lines)
    # Recomputed from the merged text: score >= 0.5 is the positive class.
    hits = sum((_body(r["captureData"]["endpointOutput"]) >= 0.5) == (r["groundTruthData"]["data"] == "1")
               for r in window)  # fmt: skip
    accuracy = hits / len(window)
    constraints = local(root, "/opt/ml/processing/baseline/constraints/constraints.json")
    constraints.parent.mkdir(parents=True)
    constraints.write_text(json.dumps({"version": 0.0, "binary_classification_constraints": {
        "accuracy": {"threshold": accuracy + 0.01, "comparison_operator": "LessThanThreshold"},
        "recall": {"threshold": 0.0, "comparison_operator": "LessThanThreshold"}}}))  # fmt: skip
    env = {
        "dataset_format": '{"sagemakerMergeJson": {"captureIndexNames": ["endpointOutput"]}}',
        "dataset_source": "/opt/ml/processing/input_data",
        "output_path": "/opt/ml/processing/output",
        "analysis_type": "MODEL_QUALITY",
        "problem_type": "BinaryClassification",
        "probability_attribute": "0",
        "probability_threshold_attribute": "0.5",
        "baseline_constraints": "/opt/ml/processing/baseline/constraints/constraints.json",
        "start_time": "2026-11-01T01:00:00Z",
        "end_time": "2026-11-01T02:00:00Z",
        "metric_time": "2026-11-01T01:00:00Z",
        "publish_cloudwatch_metrics": "Enabled",
        "sagemaker_endpoint_name": ENDPOINT,
        "sagemaker_monitoring_schedule_name": "hourly-mq",
    }
    proc = run_entry(root, env)
    assert proc.returncode == 0, proc.stderr
    out = local(root, "/opt/ml/processing/output")
    stats = read_json(out / "statistics.json")
    assert stats["dataset"]["item_count"] == len(window)
    assert stats["binary_classification_metrics"]["accuracy"]["value"] == pytest.approx(accuracy)
    found = read_json(out / "constraint_violations.json")["violations"]
    assert [v["metric_name"] for v in found] == ["accuracy"]
    assert message(root) == "CompletedWithViolations: Job completed successfully with 1 violations."
    published = (root / METRICS).read_text().splitlines()
    assert any(json.loads(r)["MetricName"] == "accuracy" for r in published)


def test_plain_processing_job_realtime(capture: Path, tmp_path: Path) -> None:
    root = opt_ml(tmp_path)
    source = local(root, "/opt/ml/processing/input/capture")
    shutil.copytree(capture / "capture", source)
    dest = local(root, "/opt/ml/processing/output/dataset")
    # A Processor's arguments: the paths are its LocalPaths (here under the temporary root); stderr is a pipe.
    proc = run_entry(root, {}, "realtime", str(source), str(dest), "--progress-interval", "0")
    assert proc.returncode == 0, proc.stderr
    assert "progress: " in proc.stderr and "\r" not in proc.stderr
    assert "records" in proc.stdout  # the summary table
    report = read_json(dest / "_SUCCESS")
    table = ds.dataset(dest, format="parquet", partitioning="hive").to_table()
    events = sum(len(_capture_events(capture / "capture", f"2026-11-01T0{h}")) for h in range(3))
    assert table.num_rows == report["rows_written"] == events - report["rejected"]
    assert not (root / "output" / "message").exists()  # a plain processing job keeps its own status


def _bad(tmp_path: Path, **env: str) -> tuple[Path, dict[str, str]]:
    root = opt_ml(tmp_path)
    data = local(root, "/opt/ml/processing/input/data/train.csv")
    data.parent.mkdir(parents=True)
    data.write_text("1,2.5\n0,3.5\n")
    base = {
        "dataset_format": '{"csv": {"header": false}}',
        "dataset_source": "/opt/ml/processing/input/data",
        "output_path": "/opt/ml/processing/output",
    }
    return root, {k: v for k, v in (base | env).items() if v}


@pytest.mark.parametrize(
    ("env", "code", "text"),
    [
        ({"dataset_format": '{"avro": {}}'}, 2, "unknown dataset_format 'avro'"),
        ({"dataset_format": "csv"}, 2, "dataset_format is not JSON"),
        ({"output_path": ""}, 2, "output_path is not set"),
        ({"baseline_statistics": "/opt/ml/processing/baseline/statistics.json",
          "baseline_constraints": "/opt/ml/processing/baseline/constraints.json"}, 1, "cannot read baseline_"),
        ({"baseline_statistics": "/opt/ml/processing/input/data/train.csv",
          "baseline_constraints": "/opt/ml/processing/input/data/train.csv"}, 1, "is not a JSON document"),
        ({"baseline_constraints": "/opt/ml/processing/input/data/train.csv"}, 2, "only baseline_constraints is set"),
        ({"start_time": "yesterday"}, 2, "start_time is not an ISO-8601 time"),
        ({"record_preprocessor_script": "/opt/ml/processing/code/pre.py"}, 2, "record_preprocessor_script is not"),
        ({"analysis_type": "MODEL_QUALITY"}, 2, "problem_type must be one of"),
        ({"dataset_source": "/opt/ml/processing/input/missing"}, 1, "dataset_source does not exist"),
    ],
)  # fmt: skip
def test_bad_environment(tmp_path: Path, env: dict[str, str], code: int, text: str) -> None:
    # The entry function in-process (the CLI around it is checked in a subprocess below): one line, the code.
    root, full = _bad(tmp_path, **env)
    with pytest.raises(EngineError) as failure:
        run_container(environ=base_environment(root) | full)
    written = message(root)
    assert failure.value.exit_code == code
    assert text in written and "\n" not in written and written == str(failure.value)
    assert not (local(root, "/opt/ml/processing/output") / "statistics.json").exists()


def test_bad_environment_in_the_container_is_one_line(tmp_path: Path) -> None:
    root, full = _bad(tmp_path, dataset_source="")
    proc = run_entry(root, full)  # no arguments: dataset_format alone selects the container job
    written = message(root)
    assert proc.returncode == 2
    assert written.startswith("dataset_source is not set")
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == f"capture-engine: error: {written}"


def test_bad_environment_traceback_only_with_debug(tmp_path: Path) -> None:
    root, full = _bad(tmp_path, dataset_format='{"avro": {}}')
    proc = run_entry(root, full, "container", "--debug")
    assert proc.returncode == 2
    assert "Traceback" in proc.stderr
    assert message(root).startswith("unknown dataset_format 'avro'")


def test_empty_window_fails_with_the_window_in_the_message(capture: Path, tmp_path: Path) -> None:
    root = opt_ml(tmp_path)
    shutil.copytree(capture / "capture", local(root, "/opt/ml/processing/input/endpoint"))
    env = {"dataset_format": CAPTURE_FORMAT, "dataset_source": "/opt/ml/processing/input/endpoint",
           "output_path": "/opt/ml/processing/output", "start_time": "2026-11-02T00:00:00Z",
           "end_time": "2026-11-02T01:00:00Z"}  # fmt: skip
    with pytest.raises(EngineError) as failure:
        run_container(environ=base_environment(root) | env)
    assert failure.value.exit_code == 4
    assert message(root).startswith("no records in [2026-11-02T00:00:00Z, 2026-11-02T01:00:00Z) under ")


def test_paths_come_from_one_root(tmp_path: Path) -> None:
    paths = ml_paths({"CAPTURE_ENGINE_OPT_ML": str(tmp_path)})
    assert paths.message == tmp_path / "output" / "message"
    assert paths.processing_job_config == tmp_path / "config" / "processingjobconfig.json"
    assert paths.metrics_dir == tmp_path / "output" / "metrics" / "cloudwatch"
    assert paths.local("/opt/ml/processing/input/endpoint") == str(tmp_path / "processing/input/endpoint")
    assert paths.local("/opt/mlx/a") == "/opt/mlx/a" and paths.local("s3://b/opt/ml") == "s3://b/opt/ml"
    assert ml_paths({}).message == Path("/opt/ml/output/message")
    moved = ml_paths({"CAPTURE_ENGINE_OPT_ML": str(tmp_path), "CLOUDWATCH_METRICS_DIRECTORY": "/opt/ml/m"})
    assert moved.metrics_dir == tmp_path / "m"


def test_dataset_format_spellings(tmp_path: Path) -> None:
    paths = MlPaths(root=tmp_path)
    base = {"dataset_source": "/opt/ml/processing/input", "output_path": "/opt/ml/processing/output"}
    for text, kind, header in (
        ('{"csv": {"header": true, "output_columns_position": "START"}}', "csv", True),
        ('{"csv": {"header": ["true", "false"]}}', "csv", False),  # the documentation's "one of" notation
        ('{"json": {"lines": true}}', "jsonl", False),
        ('{"json": {"line": "true"}}', "jsonl", False),
        ('{"parquet": {}}', "parquet", False),
        ('{"sageMakerCaptureJson": {"captureIndexNames": ["endpointInput"]}}', "capture", False),
    ):
        fmt = load_config(paths, {**base, "dataset_format": text}).dataset_format
        assert (fmt.kind, fmt.header) == (kind, header), text
    with pytest.raises(OptionsError, match="lines"):
        load_config(paths, {**base, "dataset_format": '{"json": {"lines": false}}'})


def test_post_analytics_processor_script(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    script = tmp_path / "opt/ml/processing/code/post.py"
    root, full = _bad(tmp_path, post_analytics_processor_script="/opt/ml/processing/code/post.py")
    script.parent.mkdir(parents=True)
    # The documented contract: postprocess_handler(), run after the reports are written.
    script.write_text(
        "import json, os, pathlib\n"
        "def postprocess_handler():\n"
        "    out = pathlib.Path(os.environ['CAPTURE_ENGINE_OPT_ML']) / 'processing/output'\n"
        "    n = json.loads((out / 'statistics.json').read_text())['dataset']['item_count']\n"
        "    (out / 'post.txt').write_text(str(n))\n"
    )
    env = base_environment(root) | full
    monkeypatch.setenv("CAPTURE_ENGINE_OPT_ML", str(root))  # what the script reads, as a container's would be
    assert run_container(environ=env).message == COMPLETED
    assert (local(root, "/opt/ml/processing/output") / "post.txt").read_text() == "2"
    script.write_text("def postprocess_handler():\n    raise RuntimeError('boom')\n")
    with pytest.raises(EngineError, match=r"post_analytics_processor_script .* failed: RuntimeError: boom"):
        run_container(environ=env)
    assert message(root).endswith("failed: RuntimeError: boom")


def _event(i: int, data: str) -> str:
    return json.dumps({
        "captureData": {
            "endpointInput": {"observedContentType": "text/csv", "mode": "INPUT", "data": data, "encoding": "CSV"},
            "endpointOutput": {"observedContentType": "text/csv", "mode": "OUTPUT", "data": "0.5", "encoding": "CSV"},
        },
        "eventMetadata": {"eventId": f"e-{i}", "inferenceTime": f"2026-11-01T05:{i:02d}:00Z"},
        "eventVersion": "0",
    })  # fmt: skip


@pytest.mark.parametrize(("ratio", "code"), [(None, 3), ("0.5", 0)])
def test_undecodable_capture_over_the_reject_ratio_fails(tmp_path: Path, ratio: str | None, code: int) -> None:
    root = opt_ml(tmp_path)
    hour = local(root, "/opt/ml/processing/input/endpoint/ep/AllTraffic/2026/11/01/05/00-00-000-a.jsonl")
    hour.parent.mkdir(parents=True)
    lines = [_event(i, f"{i},{i * 2}") for i in range(6)] + ["{not json", _event(9, "1,2")]
    hour.write_text("\n".join(lines) + "\n")
    env = base_environment(root) | {
        "dataset_format": CAPTURE_FORMAT,
        "dataset_source": "/opt/ml/processing/input/endpoint",
        "output_path": "/opt/ml/processing/output",
    }
    if ratio is not None:
        env["CAPTURE_ENGINE_MAX_REJECT_RATIO"] = ratio
    if code:
        with pytest.raises(EngineError) as failure:
            run_container(environ=env)
        assert failure.value.exit_code == code
        assert message(root).startswith("1 of 8 records under ") and "12.5%" in message(root)
    else:
        assert run_container(environ=env).message == COMPLETED
        stats = read_json(local(root, "/opt/ml/processing/output/statistics.json"))
        assert stats["dataset"]["item_count"] == 7


@pytest.mark.parametrize(
    ("sides", "features"),
    [
        (["endpointInput", "endpointOutput"], ["f0", "f1", "predicted_label", "score"]),
        (["endpointInput"], ["_c0", "_c1"]),  # CSV input alone: positional, Spark's names
        (["endpointOutput"], ["predicted_label", "score"]),
    ],
)
def test_capture_index_names_and_json_outputs(tmp_path: Path, sides: list[str], features: list[str]) -> None:
    root = opt_ml(tmp_path)
    hour = local(root, "/opt/ml/processing/input/endpoint/ep/AllTraffic/2026/11/01/05/00-00-000-a.jsonl")
    hour.parent.mkdir(parents=True)
    events = []
    for i in range(10):
        rec = json.loads(_event(i, f"{i},{i * 2}"))
        body = json.dumps({"predicted_label": i % 2, "score": i / 10})
        rec["captureData"]["endpointOutput"].update(observedContentType="application/json", encoding="JSON", data=body)
        events.append(json.dumps(rec))
    hour.write_text("\n".join(events) + "\n")
    env = base_environment(root) | {
        "dataset_format": json.dumps({"sagemakerCaptureJson": {"captureIndexNames": sides}}),
        "dataset_source": "/opt/ml/processing/input/endpoint",
        "output_path": "/opt/ml/processing/output",
    }
    assert run_container(environ=env).message == COMPLETED
    stats = read_json(local(root, "/opt/ml/processing/output/statistics.json"))
    # JSON fields keep their names; the decoder's `prediction` copy of predicted_label is not a second feature.
    assert [f["name"] for f in stats["features"]] == features


def test_parquet_dataset_with_inference_times_is_windowed(capture: Path, tmp_path: Path) -> None:
    root = opt_ml(tmp_path)
    dataset = local(root, "/opt/ml/processing/input/dataset")
    engine.run_realtime(str(capture / "capture"), str(dataset), options=engine.RealtimeOptions(decode=True))
    env = base_environment(root) | {
        "dataset_format": '{"parquet": {}}',
        "dataset_source": "/opt/ml/processing/input/dataset",
        "output_path": "/opt/ml/processing/output",
        "start_time": "2026-11-01T02: 00: 00Z",
        "end_time": "2026-11-01T03: 00: 00Z",
    }
    assert run_container(environ=env).message == COMPLETED
    stats = read_json(local(root, "/opt/ml/processing/output/statistics.json"))
    assert stats["dataset"]["item_count"] == len(_capture_events(capture / "capture", "2026-11-01T02"))
    assert "f0" in {f["name"] for f in stats["features"]}  # a dataset's columns keep their names


def test_column_spec_names_the_payload_columns(tmp_path: Path) -> None:
    root = opt_ml(tmp_path)
    hour = local(root, "/opt/ml/processing/input/endpoint/ep/AllTraffic/2026/11/01/05/00-00-000-a.jsonl")
    hour.parent.mkdir(parents=True)
    hour.write_text("\n".join(_event(i, f"{i},{i * 2}") for i in range(10)) + "\n")
    spec = local(root, "/opt/ml/processing/input/spec/columns.json")
    spec.parent.mkdir(parents=True)
    spec.write_text(json.dumps({"input": {"columns": [{"name": "calls", "type": "int64"}, {"name": "minutes"}]},
                                "output": {"columns": [{"name": "churn"}]}}))  # fmt: skip
    env = base_environment(root) | {
        "dataset_format": CAPTURE_FORMAT,
        "dataset_source": "/opt/ml/processing/input/endpoint",
        "output_path": "/opt/ml/processing/output",
        "CAPTURE_ENGINE_COLUMNS": "/opt/ml/processing/input/spec/columns.json",
    }
    assert run_container(environ=env).message == COMPLETED
    stats = read_json(local(root, "/opt/ml/processing/output/statistics.json"))
    assert [(f["name"], f["inferred_type"]) for f in stats["features"]] == [
        ("calls", "Integral"), ("minutes", "Integral"), ("churn", "Fractional")
    ]  # fmt: skip
