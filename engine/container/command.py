"""The ``container`` command of the CLI, and the automatic entry when Model Monitor's environment is present."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from engine.container.config import TRIGGERS, model_monitor_environment
from engine.container.entry import run_container

__all__ = ["add_command", "container_argv"]

Handler = Callable[[argparse.Namespace], int]


def _cmd_container(args: argparse.Namespace) -> int:
    outcome = run_container()
    if not args.quiet:
        print(outcome.message)
    return 0


def add_command(sub: Any, add_common: Callable[[argparse.ArgumentParser], None]) -> dict[str, Handler]:
    """Register ``container``; returns its handler by command name."""
    p = sub.add_parser(
        "container",
        help="run the SageMaker Model Monitor job its environment describes (baseline, data or model quality)",
        description=(
            "Reads dataset_source, dataset_format, output_path, start_time, end_time, baseline_* and the "
            "other Model Monitor variables from the environment and /opt/ml/config/processingjobconfig.json, "
            "writes the reports to output_path and the status to /opt/ml/output/message. Also run without "
            f"arguments when any of {', '.join(TRIGGERS)} is set."
        ),
    )
    add_common(p)
    return {"container": _cmd_container}


def container_argv(argv: Sequence[str], environ: Mapping[str, str] | None = None) -> list[str]:
    """`argv`, or ``["container"]`` when it is empty and the Model Monitor environment is present."""
    if not argv and model_monitor_environment(os.environ if environ is None else environ):
        return ["container", "--log-level", "INFO"]  # a job's log should say what it did
    return list(argv)
