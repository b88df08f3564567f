"""Merge fidelity on real upload habits: labels uploaded in the hour before the predictions' hour are found,
and a merge that matches nothing says why."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.conftest import WriteCapture, record
from tests.jobs import test_merge
from tests.jobs.test_merge import label, merge

gt = test_merge.gt  # the ground-truth writer fixture


# 17. Every public notebook uploads labels into hour folders H-1 and H.
def test_labels_in_the_hour_before_the_predictions_are_read(
    tmp_path: Path,
    write_capture: WriteCapture,
    gt: Callable[..., Path],
) -> None:
    write_capture(
        "2026/11/01/10", [record(f"e{i}", f"2026-11-01T10:{i:02d}:00Z", inference_id=f"k{i}") for i in range(6)]
    )
    gt("2026/11/01/09", [label(f"k{i}") for i in range(3)])  # uploaded in hour H-1
    gt("2026/11/01/10", [label(f"k{i}") for i in range(3, 6)])
    report, rows = merge(tmp_path, start="2026-11-01T10", end="2026-11-01T11")
    assert sorted(r["inference_id"] for r in rows) == [f"k{i}" for i in range(6)]
    assert report.counts["matched"] == 6 and report.counts["labels"] == 6
    assert "warnings" not in report.notes


def test_a_merge_that_matches_nothing_names_labels_just_outside_its_window(
    tmp_path: Path,
    write_capture: WriteCapture,
    gt: Callable[..., Path],
    run_cli: Callable[..., Any],
) -> None:
    write_capture(
        "2026/11/01/10", [record(f"e{i}", f"2026-11-01T10:{i:02d}:00Z", inference_id=f"k{i}") for i in range(4)]
    )
    gt("2026/11/01/06", [label(f"k{i}") for i in range(4)])  # four hours early: outside the 1h lead
    report, rows = merge(tmp_path, start="2026-11-01T10", end="2026-11-01T11")
    assert not rows and report.counts["matched"] == 0
    (warning,) = report.notes["warnings"]
    assert "0 of 4 predictions matched" in warning and "2026/11/01/06" in warning and "--label-lead" in warning
    cli = run_cli(
        "merge", "--captures", str(tmp_path / "capture"), "--ground-truth", str(tmp_path / "gt"), str(tmp_path / "o2"),
        "--start", "2026-11-01T10", "--end", "2026-11-01T11",
    )  # fmt: skip
    assert cli.returncode == 0, cli.stderr
    assert "2026/11/01/06" in cli.stdout + cli.stderr
    again = run_cli(
        "merge", "--captures", str(tmp_path / "capture"), "--ground-truth", str(tmp_path / "gt"), str(tmp_path / "o3"),
        "--start", "2026-11-01T10", "--end", "2026-11-01T11", "--label-lead", "5h",
    )  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert "matched" in again.stdout and "warning" not in again.stdout
