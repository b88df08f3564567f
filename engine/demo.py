"""`capture-engine demo`: synthesize sample capture, run every job on it, print how to read the results.

Each step prints the command line it is equivalent to (the same options, so that a user can copy it),
and the read-back commands at the end are printed only in forms that work in this very environment:
the Python that runs the demo, and DuckDB / pandas only where they are installed.
"""

from __future__ import annotations

import importlib.util
import os
import shlex
import sys
from pathlib import Path

from engine.jobs.batch import BatchOptions, run_batch
from engine.jobs.merge import run_merge
from engine.jobs.realtime import run_realtime
from engine.options import MergeOptions, RealtimeOptions
from engine.synth import BatchSynthOptions, SynthOptions, synth, synth_batch

__all__ = ["run_demo"]


def python_command() -> str:
    """The interpreter running now, as a user would type it (relative when it is below the current folder)."""
    exe = sys.executable
    rel = os.path.relpath(exe)
    return shlex.quote(rel if not rel.startswith("..") else exe)


def engine_command() -> str:
    """`capture-engine` as it can be typed here: the console script beside this Python, else ``python -m engine``."""
    script = Path(sys.executable).with_name("capture-engine")
    if not script.is_file():
        return f"{python_command()} -m engine"
    rel = os.path.relpath(script)
    return shlex.quote(rel if not rel.startswith("..") else str(script))


def read_back_commands(realtime: Path, decoded: Path, merged: Path, batch_merged: Path) -> list[str]:
    """Commands that read the demo's datasets back; only those whose libraries are installed."""
    py = python_command()

    def cmd(code: str) -> str:
        # Double quotes outside, single quotes inside: the form people type and read most easily.
        for c in '\\"$`':
            code = code.replace(c, "\\" + c)
        return f'{py} -c "{code}"'

    out = [
        cmd(f"import pyarrow.dataset as ds; print(ds.dataset('{realtime}', partitioning='hive').to_table().num_rows)"),
        cmd(
            "import polars as pl; print(pl.scan_parquet("
            f"'{merged}/endpoint=*/**/*.parquet', hive_partitioning=True).group_by('label').len().collect())"
        ),
    ]
    if importlib.util.find_spec("duckdb") is not None:
        out.append(
            cmd(
                'import duckdb; duckdb.sql("select endpoint, variant, hour, count(*) from read_parquet('
                f"'{decoded}/endpoint=*/**/*.parquet', hive_partitioning=true, union_by_name=true) "
                'group by all order by all").show()'
            )
        )
    if importlib.util.find_spec("pandas") is not None:
        out.append(cmd(f"import pandas as pd; print(pd.read_parquet('{batch_merged}').groupby('label').size())"))
    return out


def run_demo(directory: str, *, quiet: bool = False) -> int:
    """Run the demo under `directory`; with `quiet` print only where the results are."""

    def say(text: str) -> None:
        if not quiet:
            print(text)

    ce = engine_command()  # every step is printed as a command that works as printed, venv activated or not
    root = Path(directory).resolve()
    sample, output, decoded = root / "sample", root / "realtime", root / "decoded"
    merged = root / "merged"
    batch_sample, batch_out, batch_merged = root / "batch-sample", root / "batch", root / "batch-merged"

    say(f"1/6 {ce} synth {sample} --records 20000 --hours 3 --overwrite")
    summary = synth(str(sample), SynthOptions(records=20_000, hours=3))
    say(
        f"    {summary.events:,} events in {summary.files:,} objects, {summary.labels:,} labels "
        f"({summary.capture_bytes / 1e6:.1f} MB)"
    )
    say(f"2/6 {ce} realtime {summary.capture_root} {output}")
    report = run_realtime(summary.capture_root, str(output), options=RealtimeOptions())
    say(report.summary())
    say(f"3/6 {ce} realtime {summary.capture_root} {decoded} --decode")
    report = run_realtime(summary.capture_root, str(decoded), options=RealtimeOptions(decode=True))
    say(report.summary())
    say(f"4/6 {ce} merge --predictions {output} --ground-truth {summary.ground_truth_root} {merged}")
    report = run_merge(predictions=str(output), ground_truth=summary.ground_truth_root, dest=str(merged))
    say(report.summary())
    tree = synth_batch(str(batch_sample), BatchSynthOptions())
    say(f"5/6 (batch transform capture synthesized under {batch_sample})")
    say(f"    {ce} batch {tree.capture_root} {batch_out}")
    report = run_batch(tree.capture_root, str(batch_out), options=BatchOptions())
    say(report.summary())
    say(
        f"6/6 {ce} merge --predictions {batch_out} --ground-truth {tree.ground_truth_root} "
        f"{batch_merged} --format sagemaker"
    )
    report = run_merge(
        predictions=str(batch_out),
        ground_truth=tree.ground_truth_root,
        dest=str(batch_merged),
        options=MergeOptions(sagemaker_format=True),
    )
    say(report.summary())
    if quiet:
        print(f"demo: every job ran; datasets under {root} (realtime, decoded, merged, batch, batch-merged)")
        return 0
    print("\nRead it back with, for example:")
    for line in read_back_commands(output, decoded, merged, batch_merged):
        print(f"  {line}")
    if importlib.util.find_spec("duckdb") is None or importlib.util.find_spec("pandas") is None:
        print("  (for the DuckDB and pandas examples: pip install 'capture-engine[read]', or make demo)")
    return 0
