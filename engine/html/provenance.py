"""The provenance section: each dataset's run report and committed runs, each monitoring output, the page."""

from __future__ import annotations

import shlex
from datetime import datetime
from typing import Any

import orjson
import polars as pl

from engine._version import __version__
from engine.html.inputs import DatasetSource, Inputs
from engine.html.page import Section

__all__ = ["provenance_section"]

_RUN_KEYS = ("command", "status", "run_id", "engine_version", "source", "dest", "objects", "bytes_read", "records",
             "rows_written", "rejected", "out_of_window", "wall_seconds", "message")  # fmt: skip


def _pairs(rows: list[tuple[str, Any]]) -> pl.DataFrame:
    return pl.DataFrame(
        {"item": [k for k, _ in rows], "value": ["" if v is None else str(v) for _, v in rows]},
        schema={"item": pl.String, "value": pl.String},
    )


def _run(src: DatasetSource) -> pl.DataFrame:
    report = src.success or src.failed or {}
    window = report.get("window") or {}
    rows: list[tuple[str, Any]] = [("dataset", src.uri), ("committed", "yes" if src.success else "no (_FAILED)")]
    rows += [(k, report[k]) for k in _RUN_KEYS if k in report]
    rows.append(("window", f"{window.get('start') or '-'} .. {window.get('end') or '-'}"))
    rows += [(f"count: {k}", v) for k, v in sorted(report.get("counts", {}).items())]
    rows += [(f"CPU seconds: {k}", v) for k, v in report.get("stage_seconds", {}).items()]
    if "options" in report:
        rows.append(("options", orjson.dumps(report["options"], option=orjson.OPT_SORT_KEYS).decode()))
    return _pairs(rows)


def _runs(src: DatasetSource) -> pl.DataFrame:
    runs = (src.manifest or {}).get("runs", [])
    return pl.DataFrame(
        [
            {
                "run_id": r.get("run_id"),
                "command": r.get("command"),
                "window_start": (r.get("window") or {}).get("start"),
                "window_end": (r.get("window") or {}).get("end"),
                "committed_at": r.get("committed_at"),
                "records": r.get("records"),
                "rows_written": r.get("rows_written"),
                "rejected": r.get("rejected"),
            }
            for r in runs
        ],
        schema={
            "run_id": pl.String,
            "command": pl.String,
            "window_start": pl.String,
            "window_end": pl.String,
            "committed_at": pl.String,
            "records": pl.Int64,
            "rows_written": pl.Int64,
            "rejected": pl.Int64,
        },
    )


def provenance_section(
    inputs: Inputs, sources: list[str], command: list[str] | None, now: datetime, seconds: float
) -> Section:
    """What the page was made from and how: datasets' runs, monitoring outputs, the page's own command."""
    sec = Section(key="provenance", title="Provenance")
    page: list[tuple[str, Any]] = [("written at", f"{now:%Y-%m-%dT%H:%M:%SZ}"), ("engine version", __version__)]
    if command:
        page.append(("command", shlex.join(command)))
    page += [(f"source {i + 1}", s) for i, s in enumerate(sources)]
    page.append(("aggregation seconds", f"{seconds:.2f}"))
    sec.tables.append(("This page", _pairs(page)))
    for src in inputs.datasets:
        sec.tables.append((f"Last run of {src.uri}", _run(src)))
        runs = _runs(src)
        if not runs.is_empty():
            sec.tables.append((f"Committed runs of {src.uri} (from _manifest.json)", runs))
    if inputs.monitors:
        monitors = pl.DataFrame(
            [
                {
                    "output": m.uri,
                    "kind": m.kind,
                    "records": m.statistics.get("dataset", {}).get("item_count"),
                    "evaluation_time": m.statistics.get("dataset", {}).get("evaluation_time"),
                    "violations": len((m.violations or {}).get("violations", [])) if m.violations is not None else None,
                }
                for m in inputs.monitors
            ],
            schema={
                "output": pl.String,
                "kind": pl.String,
                "records": pl.Int64,
                "evaluation_time": pl.String,
                "violations": pl.Int64,
            },
        )
        sec.tables.append(("Monitoring outputs", monitors))
    return sec
