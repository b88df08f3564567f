"""The ``report`` command of the CLI, and the ``--report FILE`` of the monitoring commands."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from engine.arguments import storage_options
from engine.html.build import ReportOptions, write_report
from engine.io.storage import open_location, translate_errors

__all__ = ["add_commands", "monitor_report"]

Handler = Callable[[argparse.Namespace], int]


def _command() -> list[str]:
    return ["capture-engine", *sys.argv[1:]]


def _say(args: argparse.Namespace, out: str, size: int, seconds: float) -> None:
    if not args.quiet:
        print(f"report: {out} ({size / 1e6:.2f} MB, built in {seconds:.1f} s)")


def _cmd_report(args: argparse.Namespace) -> int:
    options = ReportOptions(
        title=args.title or ReportOptions.title,
        baseline_statistics=args.baseline_statistics,
        baseline_constraints=args.baseline_constraints,
        model_constraints=args.model_constraints,
        max_features=args.max_features,
        command=_command(),
        storage_options=storage_options(args.storage_option),
    )
    report = write_report(args.sources, args.out, options=options)
    _say(args, args.out, len(report.html.encode()), report.seconds)
    return 0


def monitor_report(args: argparse.Namespace) -> None:
    """After ``monitor data-quality|model-quality ... --report FILE``: the page of its source and its output.

    The source is on the page when it is a dataset folder (training data in CSV or JSON Lines is not).
    """
    storage = storage_options(args.storage_option)
    loc = open_location(args.source, storage)
    with translate_errors(args.source):
        sources = [args.source] if loc.fs.isdir(loc.root) else []
    data = args.monitor == "data-quality"
    options = ReportOptions(
        title=f"capture-engine {args.monitor}",
        baseline_statistics=args.baseline_statistics if data else None,
        baseline_constraints=args.baseline_constraints if data else None,
        model_constraints=None if data else args.baseline_constraints,
        command=_command(),
        storage_options=storage,
    )
    report = write_report([*sources, args.out], args.report, options=options)
    _say(args, args.report, len(report.html.encode()), report.seconds)


def add_commands(sub: Any, add_common: Callable[[argparse.ArgumentParser], None]) -> dict[str, Handler]:
    """Register ``report``; returns its handler by command name."""
    rp = sub.add_parser("report", help="one self-contained HTML page of datasets and monitoring outputs")
    rp.add_argument(
        "sources", nargs="+", metavar="SOURCE",
        help="a dataset the engine wrote, or a monitoring output folder (baseline, data-quality, model-quality)",
    )  # fmt: skip
    rp.add_argument("--out", required=True, metavar="FILE", help="the HTML page to write (path or URL)")
    rp.add_argument("--title", help="the page's title")
    rp.add_argument("--baseline-statistics", metavar="FILE", help="data-quality baseline statistics.json")
    rp.add_argument("--baseline-constraints", metavar="FILE", help="data-quality baseline constraints.json")
    rp.add_argument("--model-constraints", metavar="FILE", help="model-quality constraints.json (thresholds)")
    rp.add_argument("--max-features", type=int, default=ReportOptions.max_features,
                    help="distribution charts drawn at most (default %(default)s)")  # fmt: skip
    rp.add_argument("--storage-option", action="append", default=[], metavar="KEY=VALUE", help="fsspec option")
    add_common(rp)
    return {"report": _cmd_report}
