"""capture-engine transform against a real model server process on loopback, read back by the batch reader.

Every case: synth features -> transform (a numpy model behind SageMaker's container protocol, in its own
process) -> the batch capture it wrote -> the engine's batch reader -> the original records and the model's
outputs exactly. Failures (model down, slow, 4xx, 5xx, fewer records) end as SageMaker documents: no .out for
a failed file, the others written, one line, nothing half-written.
"""

from __future__ import annotations

import gzip
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl
import pytest

from engine.emulate import TransformFailed, TransformOptions, TransformUnavailable, run_transform
from engine.emulate.records import recordio_frame
from engine.jobs.batch import BatchOptions, read_batch
from engine.synth import BatchSynthOptions, synth_batch
from tests.transform_model import score_rows

if TYPE_CHECKING:
    from tests.s3_server import S3Endpoint

pytest_plugins = ["tests.s3_server"]

ROOT = Path(__file__).resolve().parents[2]
START = datetime(2026, 11, 1, 13, 5, 9, tzinfo=timezone.utc)
TIME = "2026-11-01T13:05:09Z"


@pytest.fixture(scope="module")
def model_url() -> Iterator[str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.transform_model"], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    port = int(proc.stdout.readline())
    proc.stdout.close()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture(scope="module")
def features(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[str]]:
    """Feature rows from the batch synth: CSV (the churn layout) and JSON Lines (``{"features": [...]}``)."""
    root = tmp_path_factory.mktemp("synth")
    synth_batch(
        str(root),
        BatchSynthOptions(
            jobs=2,
            files_per_job=1,
            records_per_file=40,
            jsonl_share=0.5,
            gzip_share=0.0,
            failed_file_share=0.0,
            single_object_job=False,
            features=12,
        ),
    )
    rows: dict[str, list[str]] = {}
    for path in sorted((root / "transform-input").rglob("data-*")):
        kind = "jsonl" if path.name.endswith(".jsonl") else "csv"
        rows[kind] = path.read_text().splitlines()
    assert set(rows) == {"csv", "jsonl"}
    return rows


def _scores(rows: list[list[float]]) -> list[str]:
    return [f"{s:.6f}" for s in score_rows(rows)]


def _answer(s: float) -> str:
    return json.dumps({"predicted_label": int(s >= 0.5), "score": round(float(s), 6)}, separators=(",", ":"))


def _csv_rows(lines: list[str]) -> list[list[float]]:
    return [[float(v) for v in line.split(",")] for line in lines]


def _json_rows(lines: list[str]) -> list[list[float]]:
    return [json.loads(line)["features"] for line in lines]


def _layout(tmp_path: Path, files: dict[str, bytes]) -> tuple[Path, Path, Path]:
    src, out, cap = tmp_path / "in", tmp_path / "out", tmp_path / "capture"
    src.mkdir()
    for name, data in files.items():
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_bytes(data)
    return src, out, cap


def _read(cap: Path) -> dict[str, list[Any]]:
    table = read_batch(str(cap)).read_all()
    return {name: table[name].to_pylist() for name in table.column_names}


def _no_leftovers(out: Path) -> None:
    assert not (out / "_temporary").exists()
    assert not [p for p in out.rglob("*") if p.is_file() and not p.name.endswith(".out")]


CSV, JSONL, JSON = "text/csv", "application/jsonlines", "application/json"

# (name, content type, options, input filter applied by the test to compute what the model sees)
CASES = [
    ("csv-multi", CSV, {"split_type": "Line", "batch_strategy": "MultiRecord", "assemble_with": "Line"}),
    (
        "csv-single-ids",
        CSV,
        {
            "split_type": "Line",
            "batch_strategy": "SingleRecord",
            "assemble_with": "Line",
            "generate_inference_id": True,
        },
    ),
    (
        "csv-join-ids",
        CSV,
        {"split_type": "Line", "assemble_with": "Line", "join_source": "Input", "generate_inference_id": True},
    ),
    (
        "csv-filters-join-ids",
        CSV,
        {
            "split_type": "Line",
            "assemble_with": "Line",
            "input_filter": "$[1:]",
            "join_source": "Input",
            "output_filter": "$[0,-1]",
            "generate_inference_id": True,
        },
    ),
    ("csv-whole-object-ids", CSV, {"generate_inference_id": True, "assemble_with": "Line"}),
    ("csv-assemble-none", CSV, {"split_type": "Line", "max_payload_mb": 1}),
    ("jsonl-multi-ids", JSONL, {"split_type": "Line", "assemble_with": "Line", "generate_inference_id": True}),
    (
        "jsonl-single-join-ids",
        JSONL,
        {
            "split_type": "Line",
            "batch_strategy": "SingleRecord",
            "assemble_with": "Line",
            "join_source": "Input",
            "generate_inference_id": True,
        },
    ),
    (
        "jsonl-filters-join",
        JSONL,
        {
            "split_type": "Line",
            "assemble_with": "Line",
            "input_filter": "$.features",
            "join_source": "Input",
            "output_filter": "$['features','SageMakerOutput']",
        },
    ),
    ("json-doc-ids", JSON, {"generate_inference_id": True, "assemble_with": "Line"}),
    ("json-doc-join-ids", JSON, {"join_source": "Input", "generate_inference_id": True}),
    ("json-doc-plain", JSON, {}),
]


@pytest.mark.parametrize(("name", "ctype", "opts"), CASES, ids=[c[0] for c in CASES])
def test_round_trip(
    name: str, ctype: str, opts: dict[str, Any], model_url: str, features: dict[str, list[str]], tmp_path: Path
) -> None:
    lines = features["csv"] if ctype == CSV else features["jsonl"]
    if ctype == JSON:
        docs = [lines[:25], lines[25:]]
        bodies = ['{"instances": [' + ", ".join(d) + "]}" for d in docs]
        files = {f"part-{i}.json": b.encode() for i, b in enumerate(bodies)}
    else:
        files = {"a/data.txt": ("\n".join(lines[:30]) + "\n").encode(), "b.txt": ("\n".join(lines[30:])).encode()}
    src, out, cap = _layout(tmp_path, files)
    options = TransformOptions(content_type=ctype, accept=ctype, capture=str(cap), start_time=START, **opts)
    report = run_transform(str(src), str(out), model_url, options=options)
    whole = opts.get("split_type", "None") == "None"
    assert report.status == "Completed" and report.records == (2 if whole else len(lines))
    got = _read(cap)
    join, ids = opts.get("join_source") == "Input", opts.get("generate_inference_id", False)
    if ctype == JSON:
        assert got["input_data"] == bodies
        expected = []
        for doc, body in zip(docs, bodies, strict=True):
            answer = json.dumps({"predictions": [json.loads(_answer(s)) for s in score_rows(_json_rows(doc))]})
            expected.append('{"SageMakerOutput":' + answer + "," + body[1:] if join else answer)
        assert got["output_data"] == expected
        assert (out / "part-0.json.out").read_bytes().endswith(b"\n") == (opts.get("assemble_with") == "Line")
    else:
        assert got["input_data"] == lines
        if ctype == CSV:
            sent = [line.split(",", 1)[1] for line in lines] if opts.get("input_filter") else lines
            outs = _scores(_csv_rows(sent))
        else:
            outs = [_answer(s) for s in score_rows(_json_rows(lines))]
        if join and ctype == CSV:
            expected = [f"{i},{o}" for i, o in zip(lines, outs, strict=True)]
            if opts.get("output_filter"):
                expected = [f"{i.split(',')[0]},{o}" for i, o in zip(lines, outs, strict=True)]
        elif join:
            expected = ['{"SageMakerOutput":' + o + "," + i[1:] for i, o in zip(lines, outs, strict=True)]
            if opts.get("output_filter"):
                expected = [
                    json.dumps(
                        {"features": json.loads(i)["features"], "SageMakerOutput": json.loads(o)}, separators=(",", ":")
                    )
                    for i, o in zip(lines, outs, strict=True)
                ]
        else:
            expected = outs
        assert got["output_data"] == expected
        assert (out / "a" / "data.txt.out").exists() and (out / "b.txt.out").exists()
    if ids:
        # One ID per record sent: with SplitType=None the record is the object, whatever its answer holds.
        per_record = 2 if whole else len(got["inference_id"])
        assert len(set(got["inference_id"])) == per_record and None not in got["inference_id"]
        assert {t.strftime("%Y-%m-%dT%H:%M:%SZ") for t in got["inference_time"]} == {TIME}
    else:
        assert set(got["inference_id"]) == {None}
    manifests = sorted(cap.rglob("*.json"))
    assert [p.relative_to(cap).parts[:5] for p in manifests] == [
        ("input", "2026", "11", "01", "13"),
        ("output", "2026", "11", "01", "13"),
    ]
    _no_leftovers(out)


def test_payload_limit_and_concurrency(model_url: str, features: dict[str, list[str]], tmp_path: Path) -> None:
    """MultiRecord fills each request up to MaxPayloadInMB; MaxConcurrentTransforms bounds the requests in flight."""
    row = features["csv"][0]
    lines = [row] * (2**20 // len(row) * 5 // 2)  # about 2.5 MiB of records: 3 requests of at most 1 MiB
    src, out, _ = _layout(tmp_path, {"big.csv": ("\n".join(lines) + "\n").encode()})
    urllib.request.urlopen(urllib.request.Request(f"{model_url}/reset", b"", method="POST")).close()
    options = TransformOptions(
        content_type=CSV, split_type="Line", assemble_with="Line", max_payload_mb=1, max_concurrent=3
    )
    report = run_transform(str(src), str(out), f"{model_url}/delay", options=options)
    with urllib.request.urlopen(f"{model_url}/stats") as resp:
        stats = json.load(resp)
    assert stats["max_body"] <= 2**20 and report.requests == stats["requests"] >= 3
    assert stats["max_in_flight"] == 3
    assert (out / "big.csv.out").read_text().splitlines() == _scores(_csv_rows([row])) * len(lines)


def test_execution_parameters_and_precedence(model_url: str) -> None:
    """Unset options come from /execution-parameters, the job's own win, then 1, MultiRecord, 6."""
    from engine.emulate import HttpModel
    from engine.errors import OptionsError

    with_params, without = (
        HttpModel(model_url, timeout=5, retries=0),
        HttpModel(f"{model_url}/noexec", timeout=5, retries=0),
    )
    try:
        suggested = with_params.execution_parameters()
        assert suggested == {"MaxConcurrentTransforms": 2, "BatchStrategy": "MULTI_RECORD", "MaxPayloadInMB": 1}
        assert without.execution_parameters() == {}
    finally:
        with_params.close()
        without.close()
    mine = TransformOptions(split_type="Line", max_payload_mb=8).resolved(suggested)
    assert (mine.max_concurrent, mine.batch_strategy, mine.max_payload_mb) == (2, "MultiRecord", 8)
    default = TransformOptions(split_type="Line").resolved({})
    assert (default.max_concurrent, default.batch_strategy, default.max_payload_mb) == (1, "MultiRecord", 6)
    single = TransformOptions(split_type="Line", batch_strategy="SingleRecord").resolved(suggested)
    assert single.batch_strategy == "SingleRecord"
    with pytest.raises(OptionsError, match="at most 100"):
        TransformOptions(split_type="Line", max_payload_mb=60).resolved(suggested)


def test_callable_model_and_interrupt(features: dict[str, list[str]], tmp_path: Path) -> None:
    """A Python callable as the model; an interrupt (SIGTERM's flag) stops the job at a safe point: the files done
    keep their .out, the one in progress gets none and no temporary object is left."""
    from engine import interrupts

    rows = features["csv"][:3]
    src, out, _ = _layout(
        tmp_path, {"a.csv": ("\n".join(rows) + "\n").encode(), "b.csv": ("\n".join(rows) + "\n").encode()}
    )
    opts = TransformOptions(content_type=CSV, split_type="Line", batch_strategy="SingleRecord", assemble_with="Line")
    run_transform(str(src), str(out / "plain"), "tests.transform_model:invoke", options=opts)
    assert (out / "plain" / "b.csv.out").read_text().splitlines() == _scores(_csv_rows(rows))
    try:
        with pytest.raises(KeyboardInterrupt):
            run_transform(str(src), str(out / "stopped"), "tests.transform_model:invoke_then_interrupt", options=opts)
    finally:
        interrupts.reset()
    assert [p.name for p in (out / "stopped").rglob("*") if p.is_file()] == [] or not (out / "stopped").exists()
    with pytest.raises(TransformUnavailable, match="cannot load the model"):
        run_transform(str(src), str(out / "x"), "tests.transform_model:nope", options=opts)


def test_recordio_gzip_and_manifest_input(model_url: str, features: dict[str, list[str]], tmp_path: Path) -> None:
    rows = features["csv"][:10]
    framed = recordio_frame([r.encode() for r in rows])
    src, out, cap = _layout(tmp_path, {"r.rec": framed, "g/x.csv.gz": gzip.compress(("\n".join(rows) + "\n").encode())})
    for strategy, ctype in (
        ("MultiRecord", "application/x-recordio"),
        ("SingleRecord", "application/x-recordio-single"),
    ):
        opts = TransformOptions(
            content_type=ctype, split_type="RecordIO", batch_strategy=strategy, assemble_with="Line"
        )
        run_transform(str(src / "r.rec"), str(out / strategy), model_url, options=opts)
        assert (out / strategy / "r.rec.out").read_text().splitlines() == _scores(_csv_rows(rows))
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps([{"prefix": f"file://{src}/"}, "g/x.csv.gz"]))
    opts = TransformOptions(
        content_type=CSV,
        split_type="Line",
        assemble_with="Line",
        compression="Gzip",
        manifest=True,
        capture=str(cap),
        generate_inference_id=True,
        start_time=START,
    )
    run_transform(str(manifest), str(out / "m"), model_url, options=opts)
    got = _read(cap)
    assert got["input_data"] == rows and got["output_data"] == _scores(_csv_rows(rows))
    assert json.loads(next((cap / "input").rglob("*.json")).read_text()) == [{"prefix": f"file://{src}/"}, "g/x.csv.gz"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def test_model_down_or_unhealthy_writes_nothing(model_url: str, tmp_path: Path) -> None:
    src, out, cap = _layout(tmp_path, {"x.csv": b"1,2\n"})
    for url, why in ((f"http://127.0.0.1:{_free_port()}", "connection refused"), (f"{model_url}/sick", "HTTP 503")):
        with pytest.raises(TransformUnavailable, match=why) as info:
            run_transform(str(src), str(out), url, options=TransformOptions(capture=str(cap), ping_timeout=0))
        assert "\n" not in str(info.value)
    assert not out.exists() and not cap.exists()


@pytest.mark.parametrize(
    ("mode", "opts", "why"),
    [
        ("slow", {"invocations_timeout": 1, "max_retries": 0}, "no answer within 1 s (InvocationsTimeoutInSeconds)"),
        ("e500", {"max_retries": 1}, "HTTP 500 model exploded second line (2 attempts)"),
        ("e400", {"max_retries": 3}, "HTTP 400 unsupported input"),
        ("fewer", {"generate_inference_id": True}, "the model returned 2 records for 3 sent"),
    ],
)
def test_failed_files(mode: str, opts: dict[str, Any], why: str, model_url: str, tmp_path: Path) -> None:
    """The failing model: every file fails, none gets a .out, the capture manifests still list the job."""
    src, out, cap = _layout(tmp_path, {"x.csv": b"1,2\n3,4\n5,6\n", "y.csv": b"7,8\n"})
    options = TransformOptions(content_type=CSV, split_type="Line", assemble_with="Line", capture=str(cap), **opts)
    t0 = time.monotonic()
    with pytest.raises(TransformFailed) as info:
        run_transform(str(src), str(out), f"{model_url}/{mode}", options=options)
    message = str(info.value)
    assert "\n" not in message and message.startswith("transform failed: ")
    failed = dict(info.value.report.failed)
    first = failed[f"file://{src}/x.csv"]
    assert first.startswith("records 1-3: ") and first.endswith(why), first
    assert failed[f"file://{src}/y.csv"].startswith("record 1: ")  # fewer: an empty answer holds no record
    assert not list(out.rglob("*.out"))
    _no_leftovers(out) if out.exists() else None
    assert time.monotonic() - t0 < 8
    assert len(list(cap.rglob("*.json"))) == 2


def test_one_bad_file_fails_alone(model_url: str, tmp_path: Path) -> None:
    """A file the model refuses (HTTP 400, also after a first record was written) or one with a record over the
    payload limit gets no .out; the others do."""
    big = b"1," * (2**20 // 2) + b"1\n"
    src, out, cap = _layout(
        tmp_path, {"a.csv": b"1,2\n", "b.csv": b"1,x\n", "c.csv": big, "d.csv": b"3,4\n", "e.csv": b"5,6\n1,y\n"}
    )
    options = TransformOptions(
        content_type=CSV,
        split_type="Line",
        batch_strategy="SingleRecord",
        assemble_with="Line",
        max_payload_mb=1,
        capture=str(cap),
    )
    with pytest.raises(TransformFailed, match=r"3 of 5 input files got no \.out: .*b\.csv: record 1: .*HTTP 400"):
        run_transform(str(src), str(out), model_url, options=options)
    assert sorted(p.name for p in out.rglob("*.out")) == ["a.csv.out", "d.csv.out"]
    _no_leftovers(out)
    got = _read(cap)  # the failed files' outputs are missing, which the reader notes and skips
    assert got["input_data"] == ["1,2", "3,4"]


def test_fewer_lines_without_processing_are_written_as_returned(
    model_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    src, out, _ = _layout(tmp_path, {"x.csv": b"1,2\n3,4\n5,6\n"})
    run_transform(
        str(src),
        str(out),
        f"{model_url}/fewer",
        options=TransformOptions(content_type=CSV, split_type="Line", assemble_with="Line"),
    )
    assert len((out / "x.csv.out").read_text().splitlines()) == 2
    assert "the model returned 2 lines for 3 records" in caplog.text


def test_options_checked_as_sagemaker_does() -> None:
    from engine.errors import OptionsError

    bad = [
        ({"join_source": "Input", "content_type": "text/plain", "accept": CSV}, "must be one of"),
        ({"join_source": "Input", "content_type": CSV, "accept": CSV, "split_type": "Line"}, "assemble-with Line"),
        ({"output_filter": "$.a.['b']", "content_type": JSON, "accept": JSON}, "nesting"),
        ({"max_payload_mb": 0}, "1..100"),
        ({"max_retries": 4}, "0..3"),
        ({"generate_inference_id": True, "split_type": "Line"}, "assemble-with Line"),
    ]
    for opts, why in bad:
        with pytest.raises(OptionsError, match=why):
            TransformOptions(**opts)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "engine", *args], capture_output=True, text=True, env=env, timeout=120)


def test_cli_transform_then_batch_decode(model_url: str, features: dict[str, list[str]], tmp_path: Path) -> None:
    """The real CLI end to end: transform with capture -> batch --decode -> Parquet with the features and scores."""
    lines = features["csv"]
    src, out, cap = _layout(tmp_path, {"data.csv": ("\n".join(lines) + "\n").encode()})
    run = _cli(
        "transform",
        str(src),
        str(out),
        "--model",
        model_url,
        "--content-type",
        CSV,
        "--accept",
        CSV,
        "--split-type",
        "Line",
        "--assemble-with",
        "Line",
        "--join-source",
        "Input",
        "--generate-inference-id",
        "--capture",
        str(cap),
        "--start-time",
        TIME,
    )
    assert run.returncode == 0, run.stderr
    assert "transform Completed: 1 input files, 40 records" in run.stdout
    dest = tmp_path / "dataset"
    run = _cli("batch", str(cap), str(dest), "--decode", "-q")
    assert run.returncode == 0, run.stderr
    frame = pl.read_parquet(str(dest / "**" / "*.parquet")).sort("line")
    assert frame["prediction"].to_list() == [float(s) for s in _scores(_csv_rows(lines))]
    assert frame["f0"].to_list() == [row[0] for row in _csv_rows(lines)]
    assert frame["inference_id"].n_unique() == len(lines)
    # A failing model: exit 1, one line on stderr after the per-file warning, no traceback.
    run = _cli(
        "transform", str(src), str(tmp_path / "out2"), "--model", f"{model_url}/e500", "--max-retries", "0", "-q"
    )
    assert run.returncode == 1
    assert run.stderr.splitlines()[-1].startswith("capture-engine: error: transform failed: 1 of 1 input files")
    assert "Traceback" not in run.stderr


@pytest.mark.s3
def test_s3_input_output_and_capture(
    model_url: str, features: dict[str, list[str]], s3_server: S3Endpoint, s3_bucket: str
) -> None:
    """On S3: the input prefix is a key-name prefix (in/data matches in/data-0.csv, not in/other.csv); the .out
    objects, the capture manifests and the batch reader all go through the same storage options."""
    so = s3_server.storage_options()
    fs = s3_server.filesystem()
    lines = features["csv"]
    for name, part in (("data-0.csv", lines[:20]), ("data-1.csv", lines[20:]), ("other.csv", ["1,2"])):
        fs.pipe_file(f"{s3_bucket}/in/{name}", ("\n".join(part) + "\n").encode())
    options = TransformOptions(
        content_type=CSV,
        accept=CSV,
        split_type="Line",
        assemble_with="Line",
        generate_inference_id=True,
        capture=f"s3://{s3_bucket}/capture",
        storage_options=so,
        start_time=START,
        max_concurrent=2,
    )
    report = run_transform(f"s3://{s3_bucket}/in/data", f"s3://{s3_bucket}/out", model_url, options=options)
    assert report.files == 2 and report.records == len(lines)
    assert sorted(fs.find(f"{s3_bucket}/out")) == [f"{s3_bucket}/out/data-0.csv.out", f"{s3_bucket}/out/data-1.csv.out"]
    manifest = json.loads(fs.cat_file(next(iter(fs.find(f"{s3_bucket}/capture/input")))))
    assert manifest == [{"prefix": f"s3://{s3_bucket}/in/data"}, "-0.csv", "-1.csv"]
    table = read_batch(f"s3://{s3_bucket}/capture", options=BatchOptions(storage_options=so)).read_all()
    assert table["input_data"].to_pylist() == lines
    assert table["output_data"].to_pylist() == _scores(_csv_rows(lines))
