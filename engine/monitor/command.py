"""The monitoring commands of the CLI: ``baseline``, ``monitor data-quality`` and ``monitor model-quality``."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from engine import arguments
from engine.monitor.job import MonitorOptions, run_baseline, run_data_quality, run_model_quality
from engine.monitor.quality import QualityOptions

__all__ = ["add_commands"]

Handler = Callable[[argparse.Namespace], int]


def _add_source(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "source", help="a Parquet dataset (one this engine wrote, or any), a CSV or JSON Lines file, or raw capture"
    )
    p.add_argument("out", help="output folder (path or URL)")
    p.add_argument(
        "--format",
        choices=("auto", "parquet", "csv", "jsonl", "capture", "batch"),
        default="auto",
        help="default: by name; capture / batch: raw real-time / batch transform capture, decoded on the way",
    )
    p.add_argument("--header", action="store_true", help="CSV: the first line names the columns (else _c0, _c1, ...)")
    p.add_argument("--features", help="comma-separated columns to profile (default: all but provenance columns)")
    p.add_argument("--storage-option", action="append", default=[], metavar="KEY=VALUE", help="fsspec option")
    p.add_argument(
        "--workers",
        type=arguments.positive_int,
        help="processes for a large source of many files (default: one per core)",
    )


def _options(args: argparse.Namespace, **extra: Any) -> MonitorOptions:
    storage = arguments.storage_options(args.storage_option)
    features = tuple(f.strip() for f in args.features.split(",") if f.strip()) if args.features else None
    if args.workers is not None:
        extra["workers"] = args.workers
    return MonitorOptions(format=args.format, header=args.header, features=features, storage_options=storage, **extra)


def _add_window(p: argparse.ArgumentParser) -> None:
    p.add_argument("--start", type=arguments.time, help="window start on inference_time, ISO-8601 UTC (inclusive)")
    p.add_argument("--end", type=arguments.time, help="window end, ISO-8601 UTC (exclusive)")
    p.add_argument("--endpoint", default="endpoint", help="the Endpoint dimension of the metric records")
    p.add_argument("--schedule-name", default="schedule", help="the MonitoringSchedule dimension")
    p.add_argument(
        "--by",
        default="",
        metavar="hour,endpoint",
        help="also a breakdown per hour and/or per (endpoint, variant): OUT/{endpoint}/{variant}/yyyy/mm/dd/hh/",
    )


def _cmd_baseline(args: argparse.Namespace) -> int:
    stats, _ = run_baseline(args.source, args.out, options=_options(args))
    if not args.quiet:
        print(
            f"baseline: {stats['dataset']['item_count']:,} records, {len(stats['features'])} features -> "
            f"{args.out}/statistics.json, {args.out}/constraints.json"
        )
    return 0


def _cmd_data_quality(args: argparse.Namespace) -> int:
    options = _options(
        args, start=args.start, end=args.end, endpoint=args.endpoint, schedule=args.schedule_name, by=args.by
    )
    result = run_data_quality(
        args.source,
        args.out,
        baseline_statistics=args.baseline_statistics,
        baseline_constraints=args.baseline_constraints,
        options=options,
    )
    if not args.quiet:
        found = result.violations["violations"]
        print(
            f"data quality: {result.statistics['dataset']['item_count']:,} records, {len(found)} violation"
            f"{'' if len(found) == 1 else 's'} -> {args.out}/constraint_violations.json"
        )
        for v in found:
            print(f"  {v['feature_name']}: {v['constraint_check_type']}: {v['description'].strip()}")
    return 0


def _cmd_model_quality(args: argparse.Namespace) -> int:
    quality = QualityOptions(
        problem_type=args.problem_type,
        inference_attribute=args.inference_attribute,
        probability_attribute=args.probability_attribute,
        probability_threshold=args.probability_threshold,
        ground_truth_attribute=args.ground_truth_attribute,
        positive_label=args.positive_label,
    )
    options = _options(
        args,
        start=args.start,
        end=args.end,
        endpoint=args.endpoint,
        schedule=args.schedule_name,
        by=args.by,
        ground_truth=args.ground_truth,
    )
    result = run_model_quality(
        args.source, args.out, quality=quality, baseline_constraints=args.baseline_constraints, options=options
    )
    if not args.quiet:
        key = next(k for k in result.statistics if k.endswith("_metrics"))
        shown = ", ".join(
            f"{k} {v['value']:.4g}" for k, v in result.statistics[key].items() if isinstance(v, dict) and "value" in v
        )
        print(f"model quality: {result.statistics['dataset']['item_count']:,} rows: {shown}")
        for v in (result.violations or {}).get("violations", []):
            print(f"  {v['metric_name']}: {v['description']}")
    return 0


def _cmd_monitor(args: argparse.Namespace) -> int:
    code = _cmd_data_quality(args) if args.monitor == "data-quality" else _cmd_model_quality(args)
    if args.report:  # the HTML page of the source and this output (engine.html)
        from engine.html.command import monitor_report

        monitor_report(args)
    return code


def add_commands(sub: Any, add_common: Callable[[argparse.ArgumentParser], None]) -> dict[str, Handler]:
    """Register the monitoring subcommands; returns their handlers by command name."""
    bl = sub.add_parser("baseline", help="statistics.json and suggested constraints.json of a baseline dataset")
    _add_source(bl)
    add_common(bl)
    mo = sub.add_parser("monitor", help="Model Monitor's jobs on the engine's tables")
    kinds = mo.add_subparsers(dest="monitor", required=True, metavar="KIND")
    dq = kinds.add_parser("data-quality", help="a window's statistics and violations against a baseline")
    _add_source(dq)
    dq.add_argument("--baseline-statistics", required=True, metavar="FILE", help="the baseline's statistics.json")
    dq.add_argument("--baseline-constraints", required=True, metavar="FILE", help="the baseline's constraints.json")
    _add_window(dq)
    dq.add_argument("--report", metavar="FILE", help="also write the HTML report of the source and this output")
    add_common(dq)
    mq = kinds.add_parser("model-quality", help="model-quality metrics of merged predictions and labels")
    _add_source(mq)
    mq.add_argument(
        "--problem-type", required=True, choices=("BinaryClassification", "MulticlassClassification", "Regression")
    )
    mq.add_argument("--inference-attribute", help="the prediction column (e.g. prediction, predicted_label)")
    mq.add_argument("--probability-attribute", help="binary: the score column; --probability-threshold makes the label")
    mq.add_argument("--probability-threshold", type=float, default=0.5, help="binary: score >= this is positive")
    mq.add_argument("--ground-truth-attribute", default="label", help="the label column (default label)")
    mq.add_argument("--positive-label", default="1", help="binary: the positive class (default 1)")
    mq.add_argument("--baseline-constraints", metavar="FILE", help="constraints.json to check the metrics against")
    mq.add_argument(
        "--ground-truth", metavar="URI", help="labels: merge raw capture SOURCE with them on the way (no merge dataset)"
    )
    _add_window(mq)
    mq.add_argument("--report", metavar="FILE", help="also write the HTML report of the source and this output")
    add_common(mq)
    return {"baseline": _cmd_baseline, "monitor": _cmd_monitor}
