"""`make report-demo`: sample capture with the troubles a report is for, every job on it, then the page.

The sample is the engine's synthetic capture, then damaged on purpose: one endpoint variant misses an hour
of capture (a gap), one capture object ends in lines that are not capture (rejects), and some events get no
label. On it: ``realtime --decode``, ``merge --decode --how left``, a data-quality baseline of the first
hour's features with two of them shifted (they drift), data quality of the last hours against it, model
quality of each hour against the first hour's constraints, and the report of it all (with a screenshot when
Chromium is there).

    python -m engine.html.demo DIR [--screenshot FILE]
"""

from __future__ import annotations

import argparse
import shutil
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import polars as pl

from engine.html.build import ReportOptions, write_report
from engine.jobs.merge import run_merge
from engine.jobs.realtime import run_realtime
from engine.monitor.job import MonitorOptions, run_baseline, run_data_quality, run_model_quality
from engine.monitor.quality import QualityOptions
from engine.options import MergeOptions, RealtimeOptions
from engine.synth import SynthOptions, synth

__all__ = ["main", "run_report_demo"]

START = datetime(2026, 11, 1, tzinfo=timezone.utc)
HOURS = 4
FEATURES = ("f0", "f1", "f2", "f3", "f4", "f5", "prediction")
BAD_LINES = [b"this line is not JSON", b'{"eventMetadata": {"inferenceTime": "2026-11-01T01:30:00Z"}}',
             b'{"captureData": {}, "eventMetadata": {"eventId": "x", "inferenceTime": "yesterday"}}']  # fmt: skip


def _damage(capture: Path) -> None:
    # A gap: the last variant of the last endpoint captured nothing in the third hour.
    hour = START + timedelta(hours=2)
    variants = sorted(p for p in capture.glob("*/*") if p.is_dir())
    shutil.rmtree(variants[-1] / f"{hour:%Y/%m/%d/%H}")
    # Rejects: one object of the second hour ends in lines that are not capture records.
    victim = sorted(variants[0].glob(f"{START + timedelta(hours=1):%Y/%m/%d/%H}/*.jsonl"))[0]
    with victim.open("ab") as f:
        f.write(b"".join(line + b"\n" for line in BAD_LINES * 4))


def _hour(n: int) -> datetime:
    return START + timedelta(hours=n)


def run_report_demo(directory: str, *, records: int = 16_000) -> Path:
    """Build the demo's datasets and monitoring outputs under `directory` (`records` capture events over
    four hours); returns the report's path."""
    root = Path(directory)  # as given: the page names its sources as the user would
    if root.exists():
        shutil.rmtree(root)
    summary = synth(str(root / "sample"), SynthOptions(records=records, hours=HOURS, label_share=0.85))
    _damage(Path(summary.capture_root))
    decoded, merged = root / "decoded", root / "merged"
    run_realtime(summary.capture_root, str(decoded), options=RealtimeOptions(decode=True))
    run_merge(captures=summary.capture_root, ground_truth=summary.ground_truth_root, dest=str(merged),
              options=MergeOptions(decode=True, how="left"))  # fmt: skip
    base, window = root / "baseline", root / "data-quality"
    # The baseline is "training data": the first hour's features, two of them shifted, so that they drift.
    training = root / "training.parquet"
    first = pl.scan_parquet(f"{decoded}/endpoint=*/**/*.parquet", hive_partitioning=True)
    first = first.filter(pl.col("inference_time") < _hour(1)).select(FEATURES)
    first.with_columns(pl.col("f1") * 1.5 + 4, pl.col("f3") + 20).collect().write_parquet(training)
    run_baseline(str(training), str(base), options=MonitorOptions(features=FEATURES))
    run_data_quality(
        str(decoded), str(window), baseline_statistics=str(base / "statistics.json"),
        baseline_constraints=str(base / "constraints.json"),
        options=MonitorOptions(features=FEATURES, start=_hour(HOURS - 2), end=_hour(HOURS)),
    )  # fmt: skip
    quality = QualityOptions(
        problem_type="BinaryClassification", probability_attribute="prediction", ground_truth_attribute="label_value"
    )
    hourly: list[Path] = []
    for n in range(HOURS):
        out = root / "model-quality" / f"{_hour(n):%Y-%m-%dT%H}"
        constraints = str(hourly[0] / "constraints.json") if hourly else None
        run_model_quality(str(merged), str(out), quality=quality, baseline_constraints=constraints,
                          options=MonitorOptions(start=_hour(n), end=_hour(n + 1)))  # fmt: skip
        hourly.append(out)
    page = root / "report.html"
    options = ReportOptions(
        title="capture-engine demo report",
        model_constraints=str(hourly[0] / "constraints.json"),
        command=["capture-engine", "report", "decoded", "merged", "baseline", "data-quality", "model-quality/*"],
    )
    write_report([str(decoded), str(merged), str(base), str(window), *map(str, hourly)], str(page), options=options)
    return page


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m engine.html.demo", description=__doc__.split("\n")[0])
    parser.add_argument("dir", help="working directory (replaced)")
    parser.add_argument("--screenshot", type=Path, help="also write a PNG of the page's top (needs Chromium)")
    args = parser.parse_args(argv)
    page = run_report_demo(args.dir)
    print(f"report: {page} ({page.stat().st_size / 1e6:.2f} MB)")
    if args.screenshot is not None:
        from engine.html.browser import check_page

        check = check_page(page, screenshot=args.screenshot, max_height=2300, scale=0.6)
        if check.state != "rendered" or check.errors:
            print(f"the page did not render cleanly: {check.state}, {check.errors[:1]}", file=sys.stderr)
            return 1
        print(f"screenshot: {args.screenshot} ({args.screenshot.stat().st_size / 1e3:.0f} kB, charts drawn in "
              f"{check.render_ms:.0f} ms)")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
