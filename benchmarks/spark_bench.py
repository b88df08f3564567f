"""The real-time job on Spark local[1] and local[2] against the local executor, on the same synth tree, in one run.

Every configuration runs as its own process (`python -m engine realtime ... [--executor spark]`), timed as a
whole (Spark's JVM start included), and its dataset must hash like the local executor's (DuckDB, every column
of every row) or the benchmark fails. The fixed cost of a Spark run is measured on a one-object tree; what is
left of a run's wall time after it is the work, whose rate per core and scaling from 1 to 2 cores are what
predict N executors. ``make bench`` runs it at 1 GB; ``--size 200MB`` for a quick look.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import duckdb

from benchmarks._harness import REPO, machine, run_process
from benchmarks.data import DEFAULT_ROOT, ensure_data
from engine.options import parse_size

__all__ = ["main"]

RESULTS = REPO / "benchmarks" / "results"
CONFIGS: list[tuple[str, list[str], int]] = [
    ("local executor, 2 threads", ["--workers", "2"], 2),
    ("local executor, 1 thread", ["--workers", "1"], 1),
    ("spark local[1]", ["--executor", "spark", "--spark-master", "local[1]"], 1),
    ("spark local[2]", ["--executor", "spark", "--spark-master", "local[2]"], 2),
]


def _digest(dest: Path) -> tuple[int, int]:
    con = duckdb.connect()
    rel = f"read_parquet('{dest}/endpoint=*/**/*.parquet', hive_partitioning=true)"
    names = sorted(r[0] for r in con.sql(f"describe select * from {rel}").fetchall())
    cols = ", ".join(f'"{n}"' for n in names)
    rows, total = con.sql(f"select count(*), sum(hash({cols})::hugeint) from {rel}").fetchall()[0]
    return int(rows), int(total or 0)


def _run(src: Path, dest: Path, extra: list[str], logs: Path) -> tuple[float, float]:
    """(process wall seconds, seconds of the Spark job in it, or the wall for the local executor)."""
    shutil.rmtree(dest, ignore_errors=True)
    # Spark tasks of 64 MiB: 16 per GB, enough for two cores to stay busy to the end.
    tasks = ["--task-size", "64MiB"] if "--executor" in extra else []
    cmd = [sys.executable, "-m", "engine", "realtime", str(src), str(dest), "-q", *tasks, *extra]
    run = run_process(cmd, logs / dest.name)
    if run.exit_code:
        raise SystemExit(f"{' '.join(cmd)} failed ({run.exit_code}):\n{run.stderr_tail}")
    report = json.loads((dest / "_SUCCESS").read_text())
    job = report["options"].get("executor", {}).get("job_seconds", run.wall_seconds)
    return run.wall_seconds, float(job)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", default="1GB", help="capture bytes (default 1GB)")
    parser.add_argument(
        "--repeat", type=int, default=1, help="runs per configuration, interleaved (the least disturbed is kept)"
    )
    parser.add_argument("--data-root", type=Path, default=DEFAULT_ROOT, help="cache of generated synth trees")
    parser.add_argument("--json", type=Path, default=RESULTS / "spark.json")
    args = parser.parse_args(argv)
    size = parse_size(args.size)
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")  # the JVMs need no hostname lookup
    tree = ensure_data(size, args.data_root)
    tiny = ensure_data(parse_size("1MB"), args.data_root)
    src = tree / "capture"
    capture_bytes = sum(p.stat().st_size for p in src.rglob("*.jsonl"))
    with tempfile.TemporaryDirectory(prefix="spark-bench-") as tmp:
        work = Path(tmp)
        # A Spark run whose work is nothing (one small object): JVM, session, one job, the commit.
        empty = statistics.median(
            _run(tiny / "capture", work / "fixed", CONFIGS[3][1], work)[0] for _ in range(max(1, args.repeat))
        )
        times: dict[str, list[tuple[float, float]]] = {name: [] for name, _, _ in CONFIGS}
        digests: dict[str, tuple[int, int]] = {}
        # Interleaved (every configuration once per round), so that a disturbance hits them alike.
        for _ in range(max(1, args.repeat)):
            for name, extra, _ in CONFIGS:
                times[name].append(_run(src, work / "out", extra, work))
                digests[name] = _digest(work / "out")
        runs = {name: min(t) for name, t in times.items()}  # the least disturbed run (this machine may be shared)
    reference = digests[CONFIGS[0][0]]
    wrong = [name for name, d in digests.items() if d != reference]
    if wrong:
        raise SystemExit(f"datasets differ from the local executor's: {wrong}")
    mb = capture_bytes / 1e6
    rows = []
    for name, _, cores in CONFIGS:
        wall, job = runs[name]
        rows.append(
            {
                "config": name,
                "cores": cores,
                "wall_seconds": round(wall, 2),
                # Spark: the job alone (tasks on the executors), measured in the run; the rest is the fixed cost.
                "job_seconds": round(job, 2),
                "fixed_seconds": round(wall - job, 2),
                "mb_per_s": round(mb / wall, 1),
                "job_mb_per_s_per_core": round(mb / job / cores, 1),
            }
        )
    (w1, j1), (w2, j2) = runs["spark local[1]"], runs["spark local[2]"]
    result: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": f"python -m benchmarks.spark_bench --size {args.size} --repeat {args.repeat}",
        "capture_bytes": capture_bytes,
        "rows": reference[0],
        "spark_empty_run_seconds": round(empty, 2),
        "scaling_1_to_2_wall": round(w1 / w2, 3),
        "scaling_1_to_2_job": round(j1 / j2, 3),
        "load_average": os.getloadavg(),
        "results": rows,
        "machine": machine(),
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2))
    print(f"real-time job, {mb:,.0f} MB of capture, {reference[0]:,} rows (every dataset hashes the same)")
    print("| configuration | cores | wall s | Spark job s | fixed s | MB/s (wall) | MB/s per core (job) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['config']} | {r['cores']} | {r['wall_seconds']} | {r['job_seconds']} | {r['fixed_seconds']} "
            f"| {r['mb_per_s']} | {r['job_mb_per_s_per_core']} |"
        )
    print(
        f"Spark run of one small object: {empty:.1f} s; local[1] -> local[2]: {w1 / w2:.2f}x wall, {j1 / j2:.2f}x job; "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
