"""The HTML report: the numbers behind every chart against polars on the dataset, the CLI, a real browser."""

from __future__ import annotations

import html
import json
import re
import struct
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from engine.errors import SourceError
from engine.html import ReportOptions, build_report, write_report
from engine.html.browser import Browser, find_chromium
from engine.html.demo import BAD_LINES, run_report_demo

SPEC = re.compile(r'<script type="application/json" data-chart="(chart-\d+)" data-key="([^"]+)">(.*?)</script>', re.S)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The report demo's datasets and outputs, small: a gap, rejects, unlabelled events, drift, four hours."""
    root = tmp_path_factory.mktemp("report") / "demo"
    run_report_demo(str(root), records=3_000)
    return root


def _charts(page: str) -> dict[str, list[dict[str, Any]]]:
    """Each chart's data as the page carries it (what the browser draws), by figure key."""
    return {html.unescape(key): json.loads(text)["datasets"]["table"] for _, key, text in SPEC.findall(page)}


def _scan(root: Path) -> pl.LazyFrame:
    return pl.scan_parquet(f"{root}/endpoint=*/**/*.parquet", hive_partitioning=True)


def _hour(col: str = "inference_time") -> pl.Expr:
    return pl.col(col).dt.truncate("1h").dt.strftime("%Y-%m-%dT%H:%M:%SZ").alias("hour")


def _series() -> pl.Expr:
    return pl.concat_str("endpoint", pl.lit(" / "), "variant").alias("series")


def _rows(data: list[dict[str, Any]], *keys: str) -> set[tuple[Any, ...]]:
    return {tuple(r[k] for k in keys) for r in data}


def test_every_chart_shows_what_polars_computes_from_the_dataset(demo: Path) -> None:
    sources = [demo / "decoded", demo / "merged", demo / "baseline", demo / "data-quality"]
    sources += sorted((demo / "model-quality").iterdir())
    options = ReportOptions(model_constraints=str(sorted((demo / "model-quality").iterdir())[0] / "constraints.json"))
    report = build_report([str(s) for s in sources], options=options)
    charts = _charts(report.html)
    decoded = _scan(demo / "decoded")

    # Volume: records and events per series and hour; the hour the demo removed is there, with zero records.
    expect = decoded.group_by(_series(), _hour()).agg(pl.len(), pl.col("event_id").n_unique()).collect()
    shown = charts["volume-0"]
    assert _rows([r for r in shown if r["records"]], "series", "hour", "records", "events") == set(expect.iter_rows())
    assert _rows([r for r in shown if not r["records"]], "series", "hour") == {
        ("churn-xgb-endpoint-2 / Variant2", "2026-11-01T02:00:00Z")
    }
    # Records per event.
    expect = (
        decoded.group_by(_series(), "event_id").len("n").group_by("series", "n").len("events").collect().iter_rows()
    )
    assert _rows(charts["records-per-event-0"], "series", "records_per_event", "events") == set(expect)

    # Rejects: by reason, by hour of the source folder, and the example lines are the raw bytes' heads.
    rejects = pl.scan_parquet(f"{demo / 'decoded'}/_rejects/**/*.parquet", hive_partitioning=True).collect()
    assert rejects.height == len(BAD_LINES) * 4
    by_reason = rejects.group_by("reason").len().iter_rows()
    assert _rows(charts["rejects-by-reason-0"], "reason", "rejects") == set(by_reason)
    by_hour = rejects.group_by(_hour("source_hour"), "reason").len().iter_rows()
    assert _rows(charts["rejects-by-hour-0"], "hour", "reason", "rejects") == set(by_hour)
    examples = report.datasets[0].reject_examples
    assert set(examples["raw"].to_list()) <= {b.decode() for b in BAD_LINES}
    assert examples.group_by("reason").len()["len"].max() == 3

    # Labels of the merged dataset (a left merge: unlabelled predictions are rows with a null label).
    merged = _scan(demo / "merged")
    coverage = merged.group_by(_series(), _hour()).agg(pl.len(), pl.col("label").is_not_null().sum()).collect()
    assert _rows(charts["label-coverage-1"], "series", "hour", "predictions", "labelled") == set(coverage.iter_rows())
    assert 0 < coverage["label"].sum() < coverage["len"].sum()  # some predictions have no label
    delay = (
        merged.filter(pl.col("label").is_not_null())
        .group_by(_series(), (pl.col("label_hour") - pl.col("inference_time").dt.truncate("1h")).dt.total_hours())
        .len()
        .collect()
    )
    assert _rows(charts["label-delay-1"], "series", "delay_hours", "labels") == set(delay.iter_rows())

    # Drift: the distances of the data-quality run's metric records, violated features first.
    metrics = [json.loads(line) for line in (demo / "data-quality" / "cloudwatch_metrics.jsonl").read_text().split()]
    drift = {m["MetricName"].removeprefix("feature_baseline_drift_"): m["Value"] for m in metrics
             if m["MetricName"].startswith("feature_baseline_drift_")}  # fmt: skip
    assert drift and _rows(charts["drift-0"], "feature", "drift") == set(drift.items())
    violations = json.loads((demo / "data-quality" / "constraint_violations.json").read_text())["violations"]
    table = report.figures()["drift-0"].table
    bad = {v["feature_name"] for v in violations}
    assert set(table["feature"].to_list()[: len(bad)]) == bad
    # Distributions: the window's and the baseline's bucket counts of statistics.json, as shares.
    for which, folder in (("window", "data-quality"), ("baseline", "baseline")):
        stats = json.loads((demo / folder / "statistics.json").read_text())
        f0 = next(f for f in stats["features"] if f["name"] == "f0")
        buckets = f0["numerical_statistics"]["distribution"]["kll"]["buckets"]
        shown = [r for r in charts["dist-0-f0"] if r["which"] == which]
        assert [(r["lower"], r["upper"], r["count"]) for r in shown] == [
            (b["lower_bound"], b["upper_bound"], b["count"]) for b in buckets
        ]
        assert sum(r["share"] for r in shown) == pytest.approx(1.0)

    # Model quality: each hour's metric values and the first hour's thresholds.
    points = _rows(charts["model-metrics"], "evaluation_time", "metric", "value", "threshold")
    first = json.loads((sorted((demo / "model-quality").iterdir())[0] / "constraints.json").read_text())
    rules = first["binary_classification_constraints"]
    for folder in sorted((demo / "model-quality").iterdir()):
        stats = json.loads((folder / "statistics.json").read_text())
        when = stats["dataset"]["evaluation_time"].replace("+00:00", "Z")
        for name in ("accuracy", "auc", "f1"):
            value = stats["binary_classification_metrics"][name]["value"]
            assert (when[:19] + "Z", name, value, rules[name]["threshold"]) in points


def test_report_lists_gaps_and_the_glance_says_where_to_look(demo: Path) -> None:
    report = build_report([str(demo / "decoded"), str(demo / "data-quality")])
    capture = next(s for s in report.sections if s.key == "capture")
    (_, gaps), *_ = capture.tables
    assert gaps.select("series", "hours").rows() == [("churn-xgb-endpoint-2 / Variant2", 1)]
    assert 'Is capture arriving?</a></th><td class="status">! check' in report.html
    assert 'How is the model doing?</a></th><td class="status">\u2013 not in the sources' in report.html
    # No baseline among the sources: the distributions are drawn without one, and the page says so.
    assert "No baseline statistics among the sources" in report.html


def test_cli_report_and_monitor_report(demo: Path, tmp_path: Path, run_cli: Callable[..., Any]) -> None:
    out = tmp_path / "pages" / "report.html"
    done = run_cli("report", str(demo / "decoded"), str(demo / "merged"), "--out", str(out), "--title", "hourly")
    assert done.returncode == 0, done.stderr
    page = out.read_text()
    assert "<title>hourly</title>" in page and page.count("<script") == len(SPEC.findall(page)) + 2
    assert "capture-engine report " + str(demo / "decoded") in page  # the command, in the provenance
    assert not re.search(r"(src|href)=\"(https?:)?//", page)  # nothing to fetch
    missing = run_cli("report", str(tmp_path / "nope"), "--out", str(tmp_path / "x.html"))
    assert missing.returncode == 1 and missing.stderr.count("\n") == 1 and "nope" in missing.stderr
    stray = tmp_path / "notes.txt"
    stray.write_text("hello")
    with pytest.raises(SourceError, match=r"notes\.txt"):
        write_report([str(demo / "decoded"), str(stray)], str(tmp_path / "x.html"))
    assert not (tmp_path / "x.html").exists()

    window = tmp_path / "dq"
    dq = run_cli(
        "monitor", "data-quality", str(demo / "decoded"), str(window), "--features", "f0,f1",
        "--baseline-statistics", str(demo / "baseline" / "statistics.json"),
        "--baseline-constraints", str(demo / "baseline" / "constraints.json"), "--report", str(window / "report.html"),
    )  # fmt: skip
    assert dq.returncode == 0, dq.stderr
    page = (window / "report.html").read_text()
    keys = {key for _, key, _ in SPEC.findall(page)}
    assert {"volume-0", "drift-0", "dist-0-f0", "dist-0-f1"} <= keys
    assert "missing_column_check" in page  # the baseline's other features are missing from this window


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    chromium = find_chromium()
    if chromium is None:
        pytest.skip("Chromium not installed (make test installs Debian's chromium when run as root)")
    with Browser(chromium) as b:
        yield b


def test_page_renders_offline_in_chromium(demo: Path, tmp_path: Path, browser: Browser) -> None:
    page = tmp_path / "report.html"
    sources = [demo / "decoded", demo / "merged", demo / "baseline", demo / "data-quality"]
    sources += sorted((demo / "model-quality").iterdir())
    write_report([str(s) for s in sources], str(page))
    expected = len(SPEC.findall(page.read_text()))
    shot = tmp_path / "report.png"
    check = browser.check(page, screenshot=shot, max_height=4000)
    assert check.errors == [] and check.requests == []
    assert check.state == "rendered"
    assert len(check.charts) == expected > 10
    for chart in check.charts:
        assert chart["rendered"] and chart["svg"] and chart["marks"] > 5 and chart["width"] > 100, chart
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">II", data[16:24]) == (1100, 4000)


def test_a_broken_chart_is_seen_by_the_browser_check(tmp_path: Path, demo: Path, browser: Browser) -> None:
    # The check must be able to fail: a spec Vega cannot draw gives a console error and a failed page.
    page = tmp_path / "broken.html"
    write_report([str(demo / "data-quality")], str(page))
    text = page.read_text()
    text = text.replace('"mark":{"type":"bar"', '"mark":{"type":"no-such-mark"', 1)
    page.write_text(text)
    check = browser.check(page)
    assert check.errors and check.state == "failed"
