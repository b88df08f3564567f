"""What a new user and a monitoring job meet first: windows, options, usage errors, progress, summaries, demo."""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pyarrow.dataset as ds
import pytest

from engine import BatchOptions, MergeOptions, OptionsError, RealtimeOptions, run_batch, run_merge, run_realtime
from engine.synth import BatchSynthOptions, synth_batch
from tests.conftest import ROOT, WriteCapture, record

RunCli = Callable[..., subprocess.CompletedProcess[str]]


def _one_line(proc: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [x for x in proc.stderr.splitlines() if x.strip()]
    assert len(lines) == 1, proc.stderr
    return lines[0]


def _label(key: str, data: str = "1") -> str:
    return json.dumps(
        {"groundTruthData": {"data": data, "encoding": "CSV"}, "eventMetadata": {"eventId": key}, "eventVersion": "0"}
    )


@pytest.fixture
def six_hours(write_capture: WriteCapture, tmp_path: Path) -> Path:
    """One object per hour 00..05 on 2026-11-01, two events each, within its hour."""
    for h in range(6):
        t = f"2026-11-01T{h:02d}:30:00Z"
        write_capture(f"2026/11/01/{h:02d}", [record(f"e{h}-{i}", t) for i in range(2)], name=f"{h}.jsonl")
    return tmp_path / "capture"


# Windows ------------------------------------------------------------------------------------------------------


def test_start_only_lists_from_the_hour_before_start(six_hours: Path, tmp_path: Path) -> None:
    report = run_realtime(str(six_hours), str(tmp_path / "out"), options=RealtimeOptions(start="2026-11-01T03"))
    # Hours 02 (slack), 03, 04, 05: the objects of 00 and 01 are never listed, so never read.
    assert report.objects == 4
    assert report.rows_written == 6 and report.out_of_window == 2


def test_end_only_lists_to_the_hour_after_end(six_hours: Path, tmp_path: Path) -> None:
    report = run_realtime(str(six_hours), str(tmp_path / "out"), options=RealtimeOptions(end="2026-11-01T02"))
    assert report.objects == 3  # 00, 01 and 02 (slack)
    assert report.rows_written == 4 and report.out_of_window == 2


def test_one_sided_window_within_a_date_root(six_hours: Path, tmp_path: Path) -> None:
    day = six_hours / "ep" / "AllTraffic" / "2026" / "11"
    report = run_realtime(str(day), str(tmp_path / "out"), options=RealtimeOptions(start="2026-11-01T04:30"))
    assert report.objects == 3 and report.rows_written == 4


def test_merge_labels_of_a_start_only_window(six_hours: Path, tmp_path: Path) -> None:
    gt = tmp_path / "gt"
    for h in range(6):
        (gt / f"2026/11/01/{h:02d}").mkdir(parents=True)
        (gt / f"2026/11/01/{h:02d}/x.jsonl").write_text(_label(f"e{h}-0") + "\n")
    options = MergeOptions(start="2026-11-01T04")
    report = run_merge(captures=str(six_hours), ground_truth=str(gt), dest=str(tmp_path / "m"), options=options)
    # Label hour folders from the hour before the window's start (--label-lead 1h) on: 03, 04, 05.
    assert report.counts["labels"] == 3 and report.counts["matched"] == 2
    options = MergeOptions(end="2026-11-01T01", label_delay="1h")
    report = run_merge(captures=str(six_hours), ground_truth=str(gt), dest=str(tmp_path / "m2"), options=options)
    assert report.counts["labels"] == 2 and report.counts["matched"] == 1  # hours 00 and 01 (end + delay)


def test_batch_manifests_of_a_start_only_window(tmp_path: Path) -> None:
    tree = synth_batch(str(tmp_path / "s"), BatchSynthOptions(jobs=3, files_per_job=1, records_per_file=5))
    every = run_batch(tree.capture_root, str(tmp_path / "a"))
    start = every.counts["manifests"]
    late = run_batch(tree.capture_root, str(tmp_path / "b"), options=BatchOptions(start="2026-11-01T02"))
    # Job n starts in hour n: a window from 02 lists the manifest folders of hour 02 on only.
    assert late.counts["manifests"] < start and late.counts["manifests"] > 0
    assert late.counts["transform_files"] < every.counts["transform_files"]


# Options and usage errors ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("source", "dest"), [("", "out"), ("SRC", ""), ("SRC", "   "), ("\t", "out")])
def test_blank_source_or_dest_is_an_options_error(
    six_hours: Path, tmp_path: Path, run_cli: RunCli, source: str, dest: str
) -> None:
    src = str(six_hours) if source == "SRC" else source
    dst = str(tmp_path / "out") if dest == "out" else dest
    proc = run_cli("realtime", src, dst)
    assert proc.returncode == 2
    assert "must be a path or URL" in _one_line(proc)
    assert not (ROOT / "_SUCCESS").exists() and not (ROOT / "endpoint=ep").exists()
    with pytest.raises(OptionsError, match="must be a path or URL"):
        run_realtime(src, dst)


def test_blank_merge_locations_are_options_errors(tmp_path: Path, run_cli: RunCli) -> None:
    proc = run_cli("merge", "--captures", "", "--ground-truth", str(tmp_path), str(tmp_path / "o"))
    assert proc.returncode == 2 and "captures must be a path or URL" in _one_line(proc)
    proc = run_cli("merge", "--predictions", str(tmp_path), "--ground-truth", " ", str(tmp_path / "o"))
    assert proc.returncode == 2 and "ground-truth must be a path or URL" in _one_line(proc)


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["realtime"],
        ["realtime", "a"],
        ["realtime", "a", "b", "--no-such-option"],
        ["merge", "out"],
        ["synth", "x", "--records", "many"],
        ["realtime", "a", "b", "--log-level", "LOUD"],
        ["nosuchcommand"],
    ],
)
def test_usage_errors_are_one_line(run_cli: RunCli, args: list[str]) -> None:
    proc = run_cli(*args)
    assert proc.returncode == 2
    line = _one_line(proc)
    assert line.startswith("capture-engine") and ": error: " in line and "--help" in line
    assert "usage:" not in proc.stderr


def test_help_still_shows_the_usage(run_cli: RunCli) -> None:
    proc = run_cli("realtime", "--help")
    assert proc.returncode == 0 and proc.stdout.startswith("usage: capture-engine realtime")


def test_synth_refuses_a_non_empty_folder(tmp_path: Path, run_cli: RunCli) -> None:
    dest = tmp_path / "s"
    dest.mkdir()
    (dest / "mine.txt").write_text("keep me")
    proc = run_cli("synth", str(dest), "--records", "50", "--hours", "1")
    assert proc.returncode == 2 and "not empty" in _one_line(proc) and "--overwrite" in proc.stderr
    assert sorted(p.name for p in dest.iterdir()) == ["mine.txt"]
    proc = run_cli("synth", str(dest), "--records", "50", "--hours", "1", "--overwrite")
    assert proc.returncode == 0, proc.stderr
    assert (dest / "capture").is_dir()
    assert run_cli("synth", str(tmp_path / "new"), "--records", "50", "--hours", "1").returncode == 0


def test_make_clean_removes_the_benchmark_data() -> None:
    proc = subprocess.run(["make", "-n", "clean"], capture_output=True, text=True, cwd=ROOT, check=True)
    assert "benchmarks/.data" in proc.stdout


# Progress, logs and summaries -----------------------------------------------------------------------------------


def _run_in_pty(args: list[str], timeout: float = 120) -> tuple[int, str]:
    """Run `python -m engine ARGS` with stdout and stderr on a pseudo-terminal; the exit code and all output."""
    leader, follower = pty.openpty()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "engine", *args], stdout=follower, stderr=follower, cwd=ROOT, env=env
    )
    os.close(follower)
    out = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([leader], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the follower side closed: the process is gone
                break
            if not chunk:
                break
            out += chunk
        elif proc.poll() is not None:
            break
    os.close(leader)
    return proc.wait(timeout=10), out.decode()


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from engine.synth import SynthOptions, synth

    root = tmp_path_factory.mktemp("sample")
    synth(str(root), SynthOptions(records=6_000, hours=2, endpoints=1, variants=1))
    return root


@pytest.mark.parametrize("job", ["realtime", "merge"])
def test_progress_on_a_terminal_shows_bytes_percent_eta_and_is_cleared(sample: Path, tmp_path: Path, job: str) -> None:
    if job == "realtime":
        args = ["realtime", str(sample / "capture"), str(tmp_path / "o")]
    else:
        args = ["merge", "--captures", str(sample / "capture"), "--ground-truth", str(sample / "ground-truth")]
        args.append(str(tmp_path / "o"))
    # Small units: many progress calls even for a small sample, so that a line is surely drawn.
    code, out = _run_in_pty([*args, "--unit-size", "16KiB", "--workers", "1"])
    assert code == 0, out
    status = [part for part in out.split("\r") if " MB of " in part]
    assert status, out
    assert any("%" in s and "ETA" in s for s in status), status
    before_summary = out[: out.index("status ")]
    assert before_summary.endswith("\r\x1b[K"), repr(before_summary[-80:])  # cleared before the summary


def test_plain_progress_log_lines_without_a_terminal(sample: Path, tmp_path: Path, run_cli: RunCli) -> None:
    args = ["realtime", str(sample / "capture"), str(tmp_path / "o"), "--unit-size", "16KiB", "--workers", "1"]
    proc = run_cli(*args, "--progress-interval", "0")
    assert proc.returncode == 0, proc.stderr
    lines = [x for x in proc.stderr.splitlines() if "progress:" in x]
    assert lines and all("\r" not in x and "\x1b" not in x for x in lines)
    assert " INFO engine.progress: progress: " in lines[0] and " MB of " in lines[0] and "%)" in lines[0]
    # The default interval (30 s) leaves a short run with no progress line at all.
    quiet = run_cli("realtime", str(sample / "capture"), str(tmp_path / "o2"))
    assert "progress:" not in quiet.stderr


def test_log_format_json(sample: Path, tmp_path: Path, run_cli: RunCli) -> None:
    args = ["realtime", str(sample / "capture"), str(tmp_path / "o"), "--unit-size", "16KiB", "--workers", "1"]
    proc = run_cli(*args, "--progress-interval", "0", "--log-format", "json", "--log-level", "info")
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in proc.stderr.splitlines()]
    progress = [r for r in records if r["logger"] == "engine.progress"]
    assert progress and {"time", "level", "message", "bytes_done", "bytes_total", "percent"} <= set(progress[0])
    assert any(r["logger"].startswith("engine.") and r["logger"] != "engine.progress" for r in records)
    report = json.loads(proc.stdout)  # the summary is the run report, one JSON line
    assert report["status"] == "committed" and report["rows_written"] == 6_000


def test_merge_summary_has_its_own_lines(sample: Path, tmp_path: Path, run_cli: RunCli) -> None:
    proc = run_cli(
        "merge", "--captures", str(sample / "capture"), "--ground-truth", str(sample / "ground-truth"), str(tmp_path)
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "_SUCCESS").read_text())
    c = report["counts"]
    rows = dict(line.split("  ", 1) for line in proc.stdout.splitlines() if "  " in line)
    rows = {k.strip(): v.strip() for k, v in rows.items()}
    assert rows["predictions read"] == f"{c['predictions']:,}"
    assert rows["labels read"] == f"{c['labels']:,}"
    assert rows["matched predictions"] == f"{c['matched']:,}"
    assert rows["unmatched predictions"] == f"{c['unmatched_predictions']:,}"
    assert rows["unmatched labels"] == f"{c['unmatched_labels']:,}"
    assert rows["duplicate labels"] == f"{c['duplicate_labels']:,}"
    n = len(report["partitions"])
    assert rows["rows written"] == f"{report['rows_written']:,} in {n} partition{'s' if n != 1 else ''}"
    assert "events written" not in rows and "records" not in rows  # the decode counts that contradicted the join
    assert "CPU seconds by stage (summed over workers)" in rows


def test_one_partition_is_singular(six_hours: Path, tmp_path: Path) -> None:
    report = run_realtime(
        str(six_hours), str(tmp_path), options=RealtimeOptions(start="2026-11-01T01", end="2026-11-01T02")
    )
    assert "2 in 1 partition\n" in report.summary()


# The SageMaker merged layout beside the Parquet dataset ----------------------------------------------------------


def test_sagemaker_layout_does_not_break_parquet_readers(sample: Path, tmp_path: Path) -> None:
    dest = tmp_path / "merged"
    report = run_merge(
        captures=str(sample / "capture"),
        ground_truth=str(sample / "ground-truth"),
        dest=str(dest),
        options=MergeOptions(sagemaker_format=True),
    )
    jsonl = list((dest / "_sagemaker" / "merge").rglob("*.jsonl"))
    assert jsonl and not (dest / "merge").exists()
    assert ds.dataset(str(dest), partitioning="hive").to_table().num_rows == report.rows_written
    assert len(pd.read_parquet(str(dest))) == report.rows_written


# The demo ------------------------------------------------------------------------------------------------------


def test_demo_prints_what_it_runs_and_commands_that_work(tmp_path: Path, run_cli: RunCli) -> None:
    proc = run_cli("demo", str(tmp_path / "demo"), timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""  # no warnings about the sample's deliberate failures
    step6 = next(line for line in proc.stdout.splitlines() if line.startswith("6/6 "))
    assert step6.endswith("--format sagemaker")
    # The steps are commands that work as printed (here, without an activated virtual environment).
    step2 = next(line for line in proc.stdout.splitlines() if line.startswith("2/6 "))[4:]
    run = subprocess.run(step2, shell=True, capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert run.returncode == 0 and "committed" in run.stdout, (step2, run.stderr)
    commands = proc.stdout.split("Read it back with, for example:\n", 1)[1].splitlines()
    commands = [c.strip() for c in commands if c.startswith("  ") and " -c " in c]
    assert len(commands) == 4  # pyarrow, polars, DuckDB and pandas (installed by make demo, and here)
    for command in commands:
        run = subprocess.run(command, shell=True, capture_output=True, text=True, cwd=ROOT, timeout=120)
        assert run.returncode == 0, (command, run.stderr)
        assert run.stdout.strip()
    quiet = run_cli("demo", str(tmp_path / "quiet"), "--quiet", timeout=300)
    assert quiet.returncode == 0 and quiet.stderr == ""
    assert len(quiet.stdout.splitlines()) <= 3, quiet.stdout


# Pointing at the wrong data ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def wrong_sources(sample: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("wrong")
    run_realtime(str(sample / "capture"), str(root / "dataset"), options=RealtimeOptions(end="2026-11-01T01"))
    tree = synth_batch(str(root / "b"), BatchSynthOptions(jobs=1, files_per_job=1, records_per_file=5))
    return {
        "dataset": root / "dataset",
        "ground-truth": sample / "ground-truth",
        "batch": Path(tree.capture_root),
        "capture": sample / "capture",
    }


@pytest.mark.parametrize(
    ("job", "source", "looks"),
    [
        ("realtime", "dataset", "it looks like a Parquet dataset"),
        ("realtime", "ground-truth", "it looks like ground truth"),
        ("realtime", "batch", "it looks like batch transform capture"),
        ("batch", "capture", "it looks like real-time endpoint capture"),
        ("batch", "dataset", "it looks like a Parquet dataset"),
    ],
)
def test_wrong_data_is_named_in_one_line(
    wrong_sources: dict[str, Path], tmp_path: Path, run_cli: RunCli, job: str, source: str, looks: str
) -> None:
    src = wrong_sources[source]
    proc = run_cli(job, str(src), str(tmp_path / "out"), "--require-data")
    assert proc.returncode == 4
    line = _one_line(proc)
    assert line.startswith("capture-engine: error: no ") and f"under {src}" in line.replace("file://", "")
    assert looks in line
    assert not (tmp_path / "out" / "_SUCCESS").exists()
    assert not [p for p in (tmp_path / "out").rglob("*.parquet")] if (tmp_path / "out").exists() else True
    # Without --require-data the line is still given, never an empty dataset without a word.
    proc = run_cli(job, str(src), str(tmp_path / "out2"))
    assert looks in proc.stderr + proc.stdout and "Traceback" not in proc.stderr
    if proc.returncode == 0:
        report = json.loads((tmp_path / "out2" / "_SUCCESS").read_text())
        assert looks in report["message"] and report["rows_written"] == 0
    else:  # objects were found and none was capture: nothing is committed
        assert proc.returncode == 4 and not (tmp_path / "out2" / "_SUCCESS").exists()
