"""The real CLI in a subprocess: exit codes, one-line errors, the summary, the report."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import WriteCapture, record

RunCli = Callable[..., subprocess.CompletedProcess[str]]
H = "2026-11-01T10:15:00Z"


def _one_line_error(proc: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [x for x in proc.stderr.splitlines() if x.strip()]
    assert len(lines) == 1, proc.stderr
    return lines[0]


def test_realtime_prints_summary_and_writes_report(
    tmp_path: Path, write_capture: WriteCapture, run_cli: RunCli
) -> None:
    write_capture("2026/11/01/10", [record("a", H), record("b", H)])
    proc = run_cli("realtime", str(tmp_path / "capture"), str(tmp_path / "out"))
    assert proc.returncode == 0, proc.stderr
    assert "rows written" in proc.stdout and "2 in 1 partition\n" in proc.stdout
    report = json.loads((tmp_path / "out" / "_SUCCESS").read_text())
    assert report["status"] == "committed"
    assert report["records"] == 2 and report["rows_written"] == 2 and report["balanced"] is True
    assert report["engine_version"]
    assert set(report["stage_seconds"]) >= {"list", "decode", "write", "commit"}


def test_python_dash_m_engine_version(run_cli: RunCli) -> None:
    proc = run_cli("--version")
    assert proc.returncode == 0 and proc.stdout.startswith("capture-engine ")


def test_missing_source_is_one_line(tmp_path: Path, run_cli: RunCli) -> None:
    proc = run_cli("realtime", str(tmp_path / "missing"), str(tmp_path / "out"))
    assert proc.returncode == 1
    line = _one_line_error(proc)
    assert line == f"capture-engine: error: capture source not found: file://{tmp_path}/missing"


def test_reject_ratio_exceeded(tmp_path: Path, write_capture: WriteCapture, run_cli: RunCli) -> None:
    write_capture("2026/11/01/10", [record("a", H), "bad line"])
    proc = run_cli("realtime", str(tmp_path / "capture"), str(tmp_path / "out"))
    assert proc.returncode == 3
    line = _one_line_error(proc)
    assert "1 of 2 records rejected (50.00%), above --max-reject-ratio 1.00%" in line
    assert "_rejects" in line
    ok = run_cli("realtime", str(tmp_path / "capture"), str(tmp_path / "out"), "--max-reject-ratio", "0.5")
    assert ok.returncode == 0, ok.stderr


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--start", "yesterday"], "invalid time 'yesterday'"),
        (["--max-reject-ratio", "2"], "expected a number within 0..1"),
        (["--workers", "0"], "expected at least 1"),
        (["--storage-option", "novalue"], "--storage-option takes KEY=VALUE"),
        (["--start", "2026-11-02", "--end", "2026-11-01"], "empty window"),
        (["--compression", "zip"], "unknown compression 'zip'"),
    ],
)
def test_invalid_options(tmp_path: Path, run_cli: RunCli, args: list[str], needle: str) -> None:
    proc = run_cli("realtime", str(tmp_path), str(tmp_path / "out"), *args)
    assert proc.returncode == 2
    assert needle in proc.stderr
    assert "Traceback" not in proc.stderr


def test_empty_window_exit_zero_and_require_data(tmp_path: Path, write_capture: WriteCapture, run_cli: RunCli) -> None:
    write_capture("2026/11/01/10", [record("a", H)])
    window = ["--start", "2026-12-01T00", "--end", "2026-12-01T01"]
    proc = run_cli("realtime", str(tmp_path / "capture"), str(tmp_path / "out"), *window)
    assert proc.returncode == 0
    assert "no capture records" in proc.stdout
    proc = run_cli("realtime", str(tmp_path / "capture"), str(tmp_path / "out2"), *window, "--require-data")
    assert proc.returncode == 4
    assert "no capture records in the window" in _one_line_error(proc)


def test_debug_shows_traceback(tmp_path: Path, run_cli: RunCli) -> None:
    proc = run_cli("realtime", str(tmp_path / "missing"), str(tmp_path / "out"), "--debug")
    assert proc.returncode == 1
    assert "Traceback" in proc.stderr


def test_unknown_protocol_is_one_line(tmp_path: Path, run_cli: RunCli) -> None:
    proc = run_cli("realtime", "nosuchproto://bucket/x", str(tmp_path / "out"))
    assert proc.returncode == 1
    assert "nosuchproto://bucket/x" in _one_line_error(proc)
