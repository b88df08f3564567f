"""The page's charts: Vega-Lite specifications built with altair from the aggregates, one `Figure` each.

Readable without colour: every series is told apart by position (one small multiple per endpoint / variant,
reason or metric, titled with its name) or by mark (window as filled bars, baseline as dashed outlines,
thresholds as dashed rules), never by hue alone. The data of a chart is the frame shown in the table
beneath it, carried as the spec's named dataset ``table``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache
from typing import Any

import orjson
import polars as pl

from engine.errors import OptionsError

__all__ = [
    "Figure",
    "distribution_chart",
    "drift_chart",
    "label_coverage_chart",
    "label_delay_chart",
    "metrics_chart",
    "records_per_event_chart",
    "rejects_by_hour_chart",
    "rejects_by_reason_chart",
    "volume_chart",
]

INK = "#1f4e79"  # dark blue: reads as near-black in grey scale and on paper
MUTED = "#6b6b6b"
WIDTH = 720
DATA = "table"
PLACEHOLDER = b"__NAME__"  # a template's stand-in for the feature name in its axis title
HOUR_AXIS = {"format": "%m-%d %H:%M", "labelAngle": 0, "labelOverlap": True, "title": "hour (UTC)"}


def _alt() -> Any:
    try:
        import altair as alt
    except ImportError:
        raise OptionsError(
            "the HTML report needs altair and vl-convert-python: pip install 'capture-engine[report]'"
        ) from None
    return alt


@dataclass(frozen=True, kw_only=True)
class Figure:
    """One chart (a Vega-Lite spec whose data is `table`) and the table behind it."""

    key: str
    title: str
    caption: str
    spec: dict[str, Any]
    table: pl.DataFrame


def values(frame: pl.DataFrame) -> list[dict[str, Any]]:
    """Rows as JSON-ready dicts: times as ISO-8601 UTC text, NaN as null."""
    cols = [
        pl.col(c).dt.strftime("%Y-%m-%dT%H:%M:%SZ") if isinstance(t, pl.Datetime) else pl.col(c)
        for c, t in frame.schema.items()
    ]
    rows = frame.select(cols).to_dicts()
    for row in rows:
        for k, v in row.items():
            if isinstance(v, float) and not math.isfinite(v):
                row[k] = None
    return rows


def _spec(chart: Any) -> bytes:
    """A chart's spec as JSON. Building a chart with altair costs ~0.1 s (schema checks), so each chart
    function builds its template once (cached) and a figure is that template with its title and data."""
    return orjson.dumps(chart.to_dict())


def _figure(
    key: str, title: str, caption: str, template: bytes, data: pl.DataFrame, table: pl.DataFrame, name: str = ""
) -> Figure:
    spec: dict[str, Any] = orjson.loads(template.replace(b'"' + PLACEHOLDER + b'"', orjson.dumps(name)))
    spec["description"] = f"{title}. {caption}"
    spec["datasets"] = {DATA: values(data)}
    spec.setdefault("config", {}).update(
        {"font": "system-ui, sans-serif", "view": {"stroke": "#999"}, "axis": {"labelFontSize": 11}}
    )
    return Figure(key=key, title=title, caption=caption, spec=spec, table=table)


def _hourly(frame: pl.DataFrame, column: str = "hour") -> pl.DataFrame:
    return frame.with_columns((pl.col(column) + pl.duration(hours=1)).alias(f"{column}_end"))


def _row(field: str) -> Any:
    alt = _alt()
    header = alt.Header(labelAngle=0, labelAlign="left", labelAnchor="start", labelOrient="top", labelFontWeight="bold")
    return alt.Row(f"{field}:N", title=None, header=header)


def _hour_x() -> Any:
    alt = _alt()
    return alt.X("hour:T", scale=alt.Scale(type="utc"), axis=alt.Axis(**HOUR_AXIS))


def _hour_tip() -> Any:
    return _alt().Tooltip("hour:T", timeUnit="utcyearmonthdatehours", title="hour (UTC)")


@cache
def _hourly_bars(measure: str, facet: str, tooltip: tuple[str, ...], height: int) -> bytes:
    """Bars per UTC hour (from ``hour`` to ``hour_end``), one small multiple per value of `facet`."""
    alt = _alt()
    return _spec(
        alt.Chart(alt.Data(name=DATA))
        .mark_bar(color=INK)
        .encode(
            x=_hour_x(),
            x2="hour_end:T",
            y=alt.Y(f"{measure}:Q", title=measure),
            y2=alt.datum(0),
            tooltip=[f"{facet}:N", _hour_tip(), *tooltip],
        )
        .properties(width=WIDTH, height=height)
        .facet(row=_row(facet))
    )


def volume_chart(volume: pl.DataFrame, key: str = "volume") -> Figure:
    """Records per hour, one small multiple per endpoint / variant; an hour without capture is an empty gap."""
    caption = "Payload records per UTC hour of inference time; hours of the range without a record are drawn empty."
    return _figure(
        key,
        "Volume per hour",
        caption,
        _hourly_bars("records", "series", ("records:Q", "events:Q"), 80),
        _hourly(volume),
        volume,
    )


@cache
def _records_per_event() -> bytes:
    alt = _alt()
    return _spec(
        alt.Chart(alt.Data(name=DATA))
        .mark_bar(color=INK)
        .encode(
            x=alt.X("records_per_event:O", title="records in the event's payload"),
            y=alt.Y("events:Q", title="events", scale=alt.Scale(type="symlog")),
            tooltip=["series:N", "records_per_event:O", "events:Q"],
        )
        .properties(width=WIDTH / 3, height=80)
        .facet(row=_row("series"))
    )


def records_per_event_chart(frame: pl.DataFrame, key: str = "records-per-event") -> Figure:
    """How many payload records each captured event carried."""
    caption = "Events by the number of payload records they carried (log scale)."
    return _figure(key, "Payload records per event", caption, _records_per_event(), frame, frame)


@cache
def _rejects_by_reason() -> bytes:
    alt = _alt()
    base = alt.Chart(alt.Data(name=DATA)).encode(
        y=alt.Y("reason:N", sort="-x", title=None), x=alt.X("rejects:Q", title="rejected records")
    )
    text = base.mark_text(align="left", dx=3).encode(text="rejects:Q")
    return _spec((base.mark_bar(color=INK) + text).properties(width=WIDTH / 1.5))


def rejects_by_reason_chart(frame: pl.DataFrame, key: str = "rejects-by-reason") -> Figure:
    caption = "Records written to _rejects, by reason."
    return _figure(key, "Rejects by reason", caption, _rejects_by_reason(), frame, frame)


def rejects_by_hour_chart(frame: pl.DataFrame, key: str = "rejects-by-hour") -> Figure:
    caption = "Rejects per UTC hour of the source folder they were read from, one row per reason."
    return _figure(
        key, "Rejects by hour", caption, _hourly_bars("rejects", "reason", ("rejects:Q",), 60), _hourly(frame), frame
    )


@cache
def _label_coverage() -> bytes:
    alt = _alt()
    return _spec(
        alt.Chart(alt.Data(name=DATA))
        .mark_line(color=INK, point=alt.OverlayMarkDef(color=INK, filled=True))
        .encode(
            x=_hour_x(),
            y=alt.Y("coverage:Q", title="labelled", axis=alt.Axis(format="%"), scale=alt.Scale(domain=[0, 1])),
            tooltip=["series:N", _hour_tip(), "predictions:Q", "labelled:Q", alt.Tooltip("coverage:Q", format=".1%")],
        )
        .properties(width=WIDTH, height=70)
        .facet(row=_row("series"))
    )


def label_coverage_chart(frame: pl.DataFrame, key: str = "label-coverage") -> Figure:
    caption = "Share of the merged dataset's predictions with a ground-truth label, per UTC hour of inference."
    return _figure(key, "Label coverage", caption, _label_coverage(), frame, frame)


@cache
def _label_delay() -> bytes:
    alt = _alt()
    return _spec(
        alt.Chart(alt.Data(name=DATA))
        .mark_bar(color=INK)
        .encode(
            x=alt.X("delay_hours:O", title="hours from the inference hour to the label's hour folder"),
            y=alt.Y("labels:Q", title="labels"),
            tooltip=["series:N", "delay_hours:O", "labels:Q"],
        )
        .properties(width=WIDTH / 2, height=70)
        .facet(row=_row("series"))
    )


def label_delay_chart(frame: pl.DataFrame, key: str = "label-delay") -> Figure:
    caption = "Labels by delay: the hour folder the label was found in, minus the prediction's hour."
    return _figure(key, "Label delay", caption, _label_delay(), frame, frame)


@cache
def _drift(threshold: float | None) -> bytes:
    alt = _alt()
    base = alt.Chart(alt.Data(name=DATA)).encode(
        y=alt.Y("feature:N", sort=alt.EncodingSortField("rank", order="ascending"), title=None),
        x=alt.X("drift:Q", title="drift distance (L-infinity)"),
    )
    chart = base.mark_bar(color=INK) + base.mark_text(align="left", dx=3, fontWeight="bold").encode(text="mark:N")
    if threshold is not None:
        chart = chart + alt.Chart(alt.Data(name=DATA)).mark_rule(strokeDash=[4, 3], color="black").encode(
            x=alt.datum(threshold)
        )
    return _spec(chart.properties(width=WIDTH / 1.5, height=alt.Step(14)))


def drift_chart(frame: pl.DataFrame, threshold: float | None, key: str = "drift") -> Figure:
    """Drift distance per feature in the table's order (violated first), violated ones marked in words."""
    data = (
        frame.with_row_index("rank")
        .filter(pl.col("drift").is_not_null())
        .with_columns(pl.when(pl.col("violations") != "").then(pl.lit("violated")).otherwise(pl.lit("")).alias("mark"))
        .select("rank", "feature", "drift", "violations", "mark")
    )
    caption = "Distance between the window's and the baseline's distribution of each feature"
    caption += f"; the dashed line is the threshold {threshold:g}." if threshold is not None else "."
    return _figure(key, "Drift distance by feature", caption, _drift(threshold), data, frame)


@cache
def _distribution(kind: str) -> bytes:
    alt = _alt()
    window = alt.datum.which == "window"
    base = alt.Chart(alt.Data(name=DATA))
    name = PLACEHOLDER.decode()
    if kind == "numeric":
        enc = {"x": alt.X("lower:Q", title=name), "x2": "upper:Q", "y": alt.Y("share:Q", axis=alt.Axis(format="%")),
               "y2": alt.datum(0)}  # fmt: skip
        tip = ["which:N", "lower:Q", "upper:Q", "count:Q", alt.Tooltip("share:Q", format=".1%")]
        bars = base.transform_filter(window).mark_bar(color=INK, opacity=0.75).encode(**enc, tooltip=tip)
        other = base.transform_filter(~window).mark_bar(fill=None, stroke="black", strokeWidth=2, strokeDash=[5, 3])
    else:
        enc = {"x": alt.X("value:N", title=name, sort="-y"), "y": alt.Y("share:Q", axis=alt.Axis(format="%"))}
        tip = ["which:N", "value:N", "count:Q", alt.Tooltip("share:Q", format=".1%")]
        bars = base.transform_filter(window).mark_bar(color=INK, opacity=0.75).encode(**enc, tooltip=tip)
        other = base.transform_filter(~window).mark_tick(color="black", thickness=3)
    return _spec((bars + other.encode(**enc, tooltip=tip)).properties(width=WIDTH / 2.2, height=110))


def distribution_chart(feature: str, kind: str, frame: pl.DataFrame, drift: float | None, key: str) -> Figure:
    """A feature's window (filled bars) against its baseline (dashed outlines, or black ticks for categories)."""
    shown = "window: filled bars; baseline: " + ("dashed outlines" if kind == "numeric" else "black ticks")
    caption = f"{shown}; drift distance {drift:.4g}." if drift is not None else f"{shown}."
    return _figure(key, feature, caption, _distribution(kind), frame, frame, name=feature)


@cache
def _metrics() -> bytes:
    alt = _alt()
    base = alt.Chart()
    x = alt.X("evaluation_time:T", scale=alt.Scale(type="utc"), axis=alt.Axis(format="%m-%d %H:%M", title=None))
    tip = ["metric:N", alt.Tooltip("evaluation_time:T", timeUnit="utcyearmonthdatehoursminutes", title="evaluated"),
           "value:Q", "threshold:Q", "violated:N"]  # fmt: skip
    point = alt.OverlayMarkDef(color=INK, filled=True, size=40)
    line = base.mark_line(color=INK, point=point).encode(
        x=x, y=alt.Y("value:Q", title=None, scale=alt.Scale(zero=False)), tooltip=tip
    )
    rule = base.mark_rule(color="black", strokeDash=[4, 3]).encode(y="threshold:Q")
    flagged = base.transform_filter(alt.datum.violated).mark_text(dy=-9, text="✕", fontSize=13).encode(x=x, y="value:Q")
    return _spec(
        alt.layer(line, rule, flagged, data=alt.Data(name=DATA))
        .properties(width=WIDTH / 2.2, height=70)
        .facet(facet=alt.Facet("metric:N", title=None, header=alt.Header(labelFontWeight="bold")), columns=2)
        .resolve_scale(y="independent")
    )


def metrics_chart(frame: pl.DataFrame, key: str = "model-metrics") -> Figure:
    """Each metric over evaluation times, its constraint's threshold as a dashed rule."""
    caption = "Metric values per evaluation time; dashed line: the constraint's threshold; ✕: violated."
    return _figure(key, "Model quality over time", caption, _metrics(), frame.drop("source"), frame)
