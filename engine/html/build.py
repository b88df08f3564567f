"""`write_report`: the sources of a run or a window in, one self-contained HTML page out.

Sections, each present when its sources are: at a glance; capture volume per hour (gaps listed); rejects
by reason and hour with example lines; payload records and column types; label coverage and delay
(merged datasets); drift against the baseline (data-quality outputs); model quality over time
(model-quality outputs); provenance of every source and of the page itself.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any

import polars as pl

from engine._version import __version__
from engine.errors import OptionsError, SourceError
from engine.html import charts
from engine.html.dataset import DatasetAggregates, aggregate_dataset, capture_gaps
from engine.html.inputs import Inputs, MonitorOutput, load_inputs, read_json
from engine.html.monitoring import distribution, drift_table, metric_series
from engine.html.page import Glance, Section, render_page, vega_runtime
from engine.html.provenance import provenance_section
from engine.io.storage import open_location, translate_errors

__all__ = ["Report", "ReportOptions", "build_report", "write_report"]

logger = logging.getLogger(__name__)

DEFAULT_DRIFT_THRESHOLD = 0.1  # the analyzer's comparison_threshold when constraints give none


@dataclass(frozen=True, kw_only=True)
class ReportOptions:
    """What goes on the page besides its sources.

    Attributes:
        title: the page's title (default: "capture-engine report").
        baseline_statistics, baseline_constraints: the data-quality baseline (``statistics.json``,
            ``constraints.json``); by default those of a baseline folder among the sources.
        model_constraints: model-quality ``constraints.json`` whose thresholds are drawn with the metrics.
        max_features: distribution charts drawn at most (violated and most drifted first; all are in the table).
        command: the command that made the sources, shown in the provenance (e.g. the monitor's argv).
        storage_options: fsspec options of the sources and the output.
    """

    title: str = "capture-engine report"
    baseline_statistics: str | None = None
    baseline_constraints: str | None = None
    model_constraints: str | None = None
    max_features: int = 24
    command: list[str] | None = None
    storage_options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.max_features < 0:
            raise OptionsError(f"max_features must be 0 or more, got {self.max_features}")


@dataclass(frozen=True, kw_only=True)
class Report:
    """A built page and what went into it (the tests compare its figures with the datasets)."""

    html: str
    sections: list[Section]
    datasets: list[DatasetAggregates]
    seconds: float

    def figures(self) -> dict[str, charts.Figure]:
        return {f.key: f for s in self.sections for f in s.figures}


def _doc(uri: str | None, options: ReportOptions) -> dict[str, Any] | None:
    if uri is None:
        return None
    loc = open_location(uri, options.storage_options)
    doc = read_json(loc, loc.root)
    if doc is None:
        raise SourceError("report input not found", uri=uri)
    if not isinstance(doc, dict):
        raise SourceError("not a JSON object", uri=uri)
    return doc


def _name(agg: DatasetAggregates, many: bool) -> str:
    return f" ({agg.source.uri})" if many else ""


def _titled(fig: charts.Figure, suffix: str) -> charts.Figure:
    return replace(fig, title=fig.title + suffix) if suffix else fig


def _capture(aggs: list[DatasetAggregates]) -> Section:
    sec = Section(key="capture", title="Capture volume")
    many = len(aggs) > 1
    for i, agg in enumerate(aggs):
        if agg.volume.is_empty():
            sec.notes.append(f"No rows in {agg.source.uri}.")
            continue
        sec.figures.append(_titled(charts.volume_chart(agg.volume, key=f"volume-{i}"), _name(agg, many)))
        gaps = capture_gaps(agg.volume)
        if gaps.is_empty():
            sec.notes.append(f"Every hour from the first to the last holds records{_name(agg, many)}.")
        else:
            sec.tables.append((f"Hours without capture{_name(agg, many)}", gaps))
    return sec


def _rejects(aggs: list[DatasetAggregates]) -> Section:
    sec = Section(key="rejects", title="Rejects")
    many = len(aggs) > 1
    for i, agg in enumerate(aggs):
        report = agg.source.success or agg.source.failed or {}
        if report:
            sec.notes.append(
                f"Run {report.get('run_id', '?')}{_name(agg, many)}: {report.get('records', 0):,} records read, "
                f"{report.get('rejected', 0):,} rejected ({float(report.get('reject_ratio', 0.0)):.3%})."
            )
        if agg.rejects_by_reason.is_empty():
            sec.notes.append(f"No rejects in the dataset{_name(agg, many)}.")
            continue
        by_reason = charts.rejects_by_reason_chart(agg.rejects_by_reason, key=f"rejects-by-reason-{i}")
        by_hour = charts.rejects_by_hour_chart(agg.rejects_by_hour, key=f"rejects-by-hour-{i}")
        sec.figures += [_titled(by_reason, _name(agg, many)), _titled(by_hour, _name(agg, many))]
        sec.tables.append((f"Example rejected lines (first of each reason){_name(agg, many)}", agg.reject_examples))
    return sec


def _columns_table(agg: DatasetAggregates) -> pl.DataFrame:
    frames = [t.columns.with_columns(pl.lit(t.series).alias("series")) for t in agg.tables]
    if not frames:
        return pl.DataFrame()
    cols = pl.concat(frames).with_row_index("order")
    types = cols.group_by("column").agg(
        pl.col("order").min(), pl.col("type").unique(maintain_order=True).str.join(" | "), pl.col("role").first()
    )
    shares = cols.pivot(on="series", index="column", values="null_share", aggregate_function="first")
    shares = shares.rename({c: f"null share: {c}" for c in shares.columns if c != "column"})
    return types.join(shares, on="column").sort("order").drop("order")


def _payload(aggs: list[DatasetAggregates]) -> Section:
    sec = Section(key="payload", title="Payload records and columns")
    many = len(aggs) > 1
    for i, agg in enumerate(aggs):
        tables = pl.DataFrame(
            [{"series": t.series, "kind": t.kind, "files": t.files, "rows": t.rows} for t in agg.tables],
            schema={"series": pl.String, "kind": pl.String, "files": pl.Int64, "rows": pl.Int64},
        )
        if tables.is_empty():
            continue
        events = agg.volume.group_by("series").agg(pl.col("events").sum()) if not agg.volume.is_empty() else None
        if events is not None:
            tables = tables.join(events, on="series", how="left").with_columns(
                (pl.col("rows") / pl.col("events")).alias("records_per_event")
            )
        sec.tables.append((f"Tables{_name(agg, many)}", tables))
        # Records per event where events can hold several (decoded real-time capture; batch rows are records).
        if any({"event_id", "record_index"} <= set(t.columns["column"].to_list()) for t in agg.tables):
            fig = charts.records_per_event_chart(agg.records_per_event, key=f"records-per-event-{i}")
            sec.figures.append(_titled(fig, _name(agg, many)))
        sec.tables.append((f"Columns and their types{_name(agg, many)}", _columns_table(agg)))
    return sec


def _labels(aggs: list[DatasetAggregates]) -> Section | None:
    merged = [(i, a) for i, a in enumerate(aggs) if not a.labels.is_empty()]
    if not merged:
        return None
    sec = Section(key="labels", title="Labels")
    many = len(merged) > 1
    for i, agg in merged:
        counts = (agg.source.success or {}).get("counts", {})
        if counts:
            how = (agg.source.success or {}).get("options", {}).get("how", "inner")
            sec.notes.append(
                f"The merge matched {counts.get('matched', 0):,} of {counts.get('predictions', 0):,} predictions "
                f"({counts.get('unmatched_predictions', 0):,} without a label, "
                f"{counts.get('unmatched_labels', 0):,} labels without a prediction)"
                + ("; with --how inner the dataset holds the matched ones only." if how == "inner" else ".")
            )
        sec.figures.append(
            _titled(charts.label_coverage_chart(agg.labels, key=f"label-coverage-{i}"), _name(agg, many))
        )
        if not agg.label_delay.is_empty():
            delay = charts.label_delay_chart(agg.label_delay, key=f"label-delay-{i}")
            sec.figures.append(_titled(delay, _name(agg, many)))
    return sec


def _baseline(inputs: Inputs, options: ReportOptions) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    stats = _doc(options.baseline_statistics, options)
    cons = _doc(options.baseline_constraints, options)
    for m in inputs.monitors:
        if m.kind == "data-baseline":
            stats = stats if stats is not None else m.statistics
            cons = cons if cons is not None else m.constraints
    return stats, cons


def _drift(windows: list[MonitorOutput], inputs: Inputs, options: ReportOptions) -> Section | None:
    if not windows:
        return None
    base_stats, base_cons = _baseline(inputs, options)
    dist = (base_cons or {}).get("monitoring_config", {}).get("distribution_constraints", {})
    threshold = float(dist.get("comparison_threshold", DEFAULT_DRIFT_THRESHOLD)) if base_cons else None
    sec = Section(key="drift", title="Drift against the baseline")
    if base_stats is None:
        sec.notes.append("No baseline statistics among the sources: the window's distributions are drawn alone.")
    baseline = {f["name"]: f for f in (base_stats or {}).get("features", [])}
    for i, win in enumerate(windows):
        table = drift_table(win, base_stats)
        bad = table.filter(pl.col("violations") != "")
        sec.notes.append(
            f"{win.uri}: {win.statistics.get('dataset', {}).get('item_count', 0):,} records, "
            f"{bad.height} of {table.height} features with a violation."
        )
        if table["drift"].is_not_null().any():
            sec.figures.append(charts.drift_chart(table, threshold, key=f"drift-{i}"))
        sec.tables.append((f"Features, violated first{' (' + win.uri + ')' if len(windows) > 1 else ''}", table))
        features = {f["name"]: f for f in win.statistics.get("features", [])}
        shown = [n for n in table["feature"].to_list() if n in features][: options.max_features]
        drift = dict(zip(table["feature"].to_list(), table["drift"].to_list(), strict=True))
        for name in shown:
            kind, frame = distribution(features[name], baseline.get(name))
            if frame.is_empty():
                continue
            sec.figures.append(charts.distribution_chart(name, kind, frame, drift.get(name), key=f"dist-{i}-{name}"))
        if len(features) > len(shown):
            sec.notes.append(f"Distributions drawn for the first {len(shown)} features of {len(features)}.")
    return sec


def _model(outputs: list[MonitorOutput], options: ReportOptions) -> Section | None:
    if not outputs:
        return None
    series = metric_series(outputs, _doc(options.model_constraints, options))
    sec = Section(key="model", title="Model quality")
    if series.is_empty():
        sec.notes.append("The model-quality outputs hold no scalar metric.")
        return sec
    sec.notes.append(f"{len(outputs)} model-quality output(s); evaluation times from their statistics.json.")
    sec.figures.append(charts.metrics_chart(series))
    return sec


def _glance(aggs: list[DatasetAggregates], sections: dict[str, Section | None]) -> list[Glance]:
    out = []
    volume = [a.volume for a in aggs if not a.volume.is_empty()]
    if volume:
        v = pl.concat(volume, how="vertical_relaxed")
        gaps = int((v["records"] == 0).sum())
        last = v.filter(pl.col("records") > 0)["hour"].max()
        when = last.strftime("%Y-%m-%d %H:00Z") if isinstance(last, datetime) else "-"
        text = f"{int(v['records'].sum()):,} records in {v['hour'].n_unique()} hours; last hour with data {when}"
        text += f"; {gaps} series-hours without capture." if gaps else "; no gap."
        out.append(
            Glance(question="Is capture arriving?", status="check" if gaps else "ok", answer=text, anchor="capture")
        )
    else:
        out.append(Glance(question="Is capture arriving?", status="n/a", answer="No dataset rows.", anchor="capture"))
    if aggs:
        rejects = sum(int(a.rejects_by_reason["rejects"].sum()) for a in aggs)
        rows = sum(t.rows for a in aggs for t in a.tables)
        ratio = rejects / (rows + rejects) if rows + rejects else 0.0
        answer = f"{rejects:,} rejected records ({ratio:.2%} of rows + rejects)."
        out.append(
            Glance(question="Is it clean?", status="check" if rejects else "ok", answer=answer, anchor="rejects")
        )
    labelled = [a.labels for a in aggs if not a.labels.is_empty()]
    if labelled:
        lab = pl.concat(labelled, how="vertical_relaxed")
        share = float(lab["labelled"].sum()) / max(1, int(lab["predictions"].sum()))
        matched = sum((a.source.success or {}).get("counts", {}).get("matched", 0) for a in aggs)
        preds = sum((a.source.success or {}).get("counts", {}).get("predictions", 0) for a in aggs)
        answer = f"{share:.1%} of merged rows labelled"
        answer += f"; the merge matched {matched:,} of {preds:,} predictions ({matched / preds:.1%})." if preds else "."
        low = share < 1.0 or (preds and matched < preds)
        out.append(
            Glance(question="Are labels arriving?", status="check" if low else "ok", answer=answer, anchor="labels")
        )
    else:
        out.append(Glance(question="Are labels arriving?", status="n/a", answer="No merged dataset.", anchor="labels"))
    drift = sections.get("drift")
    if drift is not None:
        bad = sum(int((t["violations"] != "").sum()) for _, t in drift.tables)
        answer = f"{bad} feature(s) with a violation." if bad else "No feature violates its constraints."
        out.append(
            Glance(question="Has anything drifted?", status="check" if bad else "ok", answer=answer, anchor="drift")
        )
    else:
        out.append(
            Glance(question="Has anything drifted?", status="n/a", answer="No data-quality output.", anchor="drift")
        )
    model = sections.get("model")
    if model is not None and model.figures:
        t = model.figures[0].table
        latest = t.filter(pl.col("evaluation_time") == pl.col("evaluation_time").max())
        bad = int(latest["violated"].sum())
        answer = f"{bad} metric(s) violated at the latest evaluation." if bad else "No metric violates its constraint."
        out.append(
            Glance(question="How is the model doing?", status="check" if bad else "ok", answer=answer, anchor="model")
        )
    else:
        answer = "No model-quality output."
        out.append(Glance(question="How is the model doing?", status="n/a", answer=answer, anchor="model"))
    return out


def build_report(sources: list[str], *, options: ReportOptions | None = None) -> Report:
    """Read `sources`, aggregate them and render the page (not written anywhere).

    Raises:
        SourceError: a source cannot be read, or is neither a dataset nor a monitoring output.
        OptionsError: no source given, or the plotting extra is not installed.
    """
    options = options or ReportOptions()
    if not sources:
        raise OptionsError("a report needs at least one source (a dataset or a monitoring output)")
    started = time.perf_counter()
    inputs = load_inputs(list(sources), options.storage_options)
    aggs = [aggregate_dataset(d) for d in inputs.datasets]
    windows = [m for m in inputs.monitors if m.kind == "data-quality"]
    models = [m for m in inputs.monitors if m.kind == "model-quality"]
    optional = {"labels": _labels(aggs), "drift": _drift(windows, inputs, options), "model": _model(models, options)}
    sections: list[Section] = []
    if aggs:
        sections += [_capture(aggs), _rejects(aggs), _payload(aggs)]
    sections += [s for s in optional.values() if s is not None]
    now = datetime.now(timezone.utc)
    seconds = time.perf_counter() - started
    sections.append(provenance_section(inputs, list(sources), options.command, now, seconds))
    glance = _glance(aggs, optional)
    subtitle = f"{len(sources)} source(s), written {now:%Y-%m-%d %H:%M}Z by capture-engine {__version__}"
    page = render_page(options.title, subtitle, glance, sections, vega_runtime())
    return Report(html=page, sections=sections, datasets=aggs, seconds=time.perf_counter() - started)


def write_report(sources: list[str], out: str, *, options: ReportOptions | None = None) -> Report:
    """Build the page of `sources` and write it to `out` (a path or URL); returns the report.

    Raises:
        SourceError: a source cannot be read. SinkError: `out` cannot be written. OptionsError: bad options.
    """
    options = options or ReportOptions()
    report = build_report(sources, options=options)
    loc = open_location(out, options.storage_options)
    with translate_errors(loc.uri(loc.root), sink=True):
        if loc.is_local:
            parent = loc.root.rsplit("/", 1)[0]
            if parent:
                loc.fs.makedirs(parent, exist_ok=True)
        with loc.fs.open(loc.root, "wb") as f:
            f.write(report.html.encode("utf-8"))
    logger.info("report of %d source(s) written to %s (%d bytes)", len(sources), out, len(report.html))
    return report
