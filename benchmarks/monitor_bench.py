"""Monitoring benchmark: capture-engine's Model Monitor jobs against whylogs, Evidently and pandas + scipy.

    python -m benchmarks.monitor_bench --rows 2000000 [--rows-list 500000,1000000] [--features 70]
        [--tools engine,pandas-scipy,whylogs,evidently] [--jobs data-quality,model-quality]
        [--peer-python PATH] [--repeat N] [--json PATH]
    python -m benchmarks.monitor_bench --rows 2000000 --stages     (CPU seconds per stage, one process)

Data (seeded numpy, generated once per shape under ``benchmarks/.data/monitor-ROWSxFEATURES``, laid out as a
decoded dataset: ``endpoint=/variant=/year=/month=/day=/hour=`` folders of Parquet files, 24 hours):

- ``window``: ROWS decoded records of FEATURES features (80% Fractional, 10% Integral, 10% String of 12
  categories), with drift injected into ``f3`` (mean + 0.5 sd), ``f10`` (scale x 2) and ``c0`` (one
  category's share moved); ``baseline.parquet``: 200,000 rows (at most ROWS) of the undrifted distribution
  (training data);
- ``merged``: ROWS merged rows (``label`` 0/1, ``prediction``, ``score``), a binary classifier.

Jobs, each tool in its own process on the same data (wall time around the process, imports included; CPU and
peak RSS from ``os.wait4``): ``data-quality`` is ``capture-engine monitor data-quality window OUT`` against the
baseline's files (made beforehand, as a schedule reuses them), against a peer's profile of the window and
comparison with the baseline; ``model-quality`` is ``capture-engine monitor model-quality merged OUT`` against
the peer's metrics. Peers run with ``--peer-python`` (default: this interpreter) so they can live in a venv of
their own; a peer that is not installed there is reported as skipped, not failed.

Then the outputs are checked where they overlap: mean and std (the engine's population std dev equals pandas'
``std(ddof=0)``; whylogs reports the sample std dev), min, max, missing counts, the KS statistic (the engine's
``Simple`` distance against ``scipy.stats.ks_2samp``) and the drifted feature set, accuracy/precision/recall/f1/AUC
against scikit-learn. A mismatch makes the exit status non-zero.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Final

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

REPO: Final = Path(__file__).resolve().parent.parent
DATA_ROOT: Final = Path(__file__).resolve().parent / ".data"
RESULTS: Final = Path(__file__).resolve().parent / "results"
SEED: Final = 7
HOURS: Final = 24
BASELINE_ROWS: Final = 200_000
CATEGORIES: Final = 12
TOOLS: Final = ("engine", "pandas-scipy", "whylogs", "evidently")
JOBS: Final = ("data-quality", "model-quality")
DRIFTED: Final = frozenset({"f3", "f10", "c0"})
_MARKER: Final = "_COMPLETE"


@dataclass
class Run:
    """One process run of one tool on one job and row count."""

    tool: str
    job: str
    rows: int
    wall_s: float
    cpu_s: float
    peak_rss_mb: float
    exit_code: int
    note: str = ""

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.wall_s if self.wall_s else 0.0


def _names(features: int) -> tuple[list[str], list[str], list[str]]:
    n_int = max(1, features // 10)
    n_str = max(1, features // 10)
    n_frac = features - n_int - n_str
    return [f"f{i}" for i in range(n_frac)], [f"i{i}" for i in range(n_int)], [f"c{i}" for i in range(n_str)]


def _columns(rng: np.random.Generator, rows: int, features: int, drift: bool) -> dict[str, Any]:
    frac, ints, cats = _names(features)
    cols: dict[str, Any] = {}
    for j, name in enumerate(frac):
        loc, scale = float(j % 7), 1.0 + (j % 3)
        values = rng.normal(loc, scale, rows)
        if drift and name == "f3":
            values += 0.5 * scale
        if drift and name == "f10":
            values = loc + (values - loc) * 2.0
        if j % 9 == 1:  # a few features with missing values
            values[rng.random(rows) < 0.02] = np.nan
        cols[name] = pa.array(values, from_pandas=True)
    for j, name in enumerate(ints):
        cols[name] = pa.array(rng.poisson(3 + j, rows).astype(np.int64))
    labels = np.array([f"cat_{k}" for k in range(CATEGORIES)], dtype=object)
    for name in cats:
        p = np.linspace(1.0, 2.0, CATEGORIES)
        if drift and name == "c0":
            p[0] += 6.0
        cols[name] = pa.array(labels[rng.choice(CATEGORIES, rows, p=p / p.sum())].tolist(), pa.string())
    return cols


def _hour_files(root: Path, table: pa.Table, rng: np.random.Generator) -> None:
    rows = table.num_rows
    start = datetime(2026, 11, 1, tzinfo=timezone.utc).timestamp() * 1e6
    times = np.sort(rng.integers(0, HOURS * 3600 * 10**6, rows)) + int(start)
    table = table.add_column(0, "inference_time", pa.array(times, pa.timestamp("us", tz="UTC")))
    table = table.add_column(0, "event_id", pa.array([f"e{i}" for i in range(rows)]))
    bounds = np.searchsorted(times - int(start), np.arange(HOURS + 1) * 3600 * 10**6)
    for h in range(HOURS):
        part = table.slice(int(bounds[h]), int(bounds[h + 1] - bounds[h]))
        folder = root / "endpoint=ep-0/variant=AllTraffic/year=2026/month=11/day=01" / f"hour={h:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        # Row groups as the engine writes them (about 16 MB): readers stream them.
        pq.write_table(part, folder / "part-0.parquet", row_group_size=32_768, compression="zstd")


def ensure_data(rows: int, features: int) -> Path:
    """The benchmark's data for a shape, generated once (a folder without its marker is generated anew)."""
    root = DATA_ROOT / f"monitor-{rows}x{features}"
    if (root / _MARKER).exists():
        return root
    shutil.rmtree(root, ignore_errors=True)
    rng = np.random.default_rng(SEED)
    root.mkdir(parents=True)
    base_rows = min(BASELINE_ROWS, rows)  # CI sizes: a baseline no larger than the window
    pq.write_table(pa.table(_columns(rng, base_rows, features, drift=False)), root / "baseline.parquet")
    chunk = 250_000
    for i, lo in enumerate(range(0, rows, chunk)):
        part = pa.table(_columns(rng, min(chunk, rows - lo), features, drift=True))
        tmp = root / f"_window-{i}"
        _hour_files(tmp, part, rng)
    _stitch(root, "window")
    label = rng.random(rows) < 0.3
    score = np.clip(rng.normal(np.where(label, 0.65, 0.35), 0.18), 0.0, 1.0)
    merged = pa.table({"label": label.astype(np.int64), "prediction": (score >= 0.5).astype(np.int64), "score": score})
    _hour_files(root / "merged", merged, rng)
    (root / _MARKER).write_text(json.dumps({"rows": rows, "features": features, "seed": SEED}))
    return root


def _stitch(root: Path, name: str) -> None:
    """Move the chunks' hour files into one dataset (file names keep the chunk: part-0 of chunk 3 -> part-3)."""
    for tmp in sorted(root.glob(f"_{name}-*")):
        i = tmp.name.rsplit("-", 1)[1]
        for f in tmp.rglob("*.parquet"):
            dest = root / name / f.parent.relative_to(tmp) / f"part-{i}.parquet"
            dest.parent.mkdir(parents=True, exist_ok=True)
            f.rename(dest)
        shutil.rmtree(tmp)


def _process(cmd: list[str], log: Path) -> tuple[float, float, float, int, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])
    with log.with_suffix(".stdout").open("wb") as out, log.with_suffix(".stderr").open("wb") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, stdin=subprocess.DEVNULL, cwd=REPO, env=env)
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own rusage
        wall = time.perf_counter() - t0
    code = os.waitstatus_to_exitcode(status)
    proc.returncode = code
    tail = log.with_suffix(".stderr").read_text(errors="replace").strip().splitlines()[-3:] if code else []
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss * 1024 / 1e6, code, " | ".join(tail)


def _peer_available(python: str, tool: str) -> bool:
    module = {"pandas-scipy": "scipy", "whylogs": "whylogs", "evidently": "evidently"}[tool]
    probe = subprocess.run([python, "-c", f"import {module}, pandas"], capture_output=True, check=False)
    return probe.returncode == 0


def _engine_cmd(job: str, data: Path, out: Path) -> list[str]:
    engine = [sys.executable, "-m", "engine"]
    if job == "data-quality":
        base = data / "_baseline_files"
        return [*engine, "monitor", "data-quality", str(data / "window"), str(out), "--quiet",
                "--baseline-statistics", str(base / "statistics.json"),
                "--baseline-constraints", str(base / "constraints.json")]  # fmt: skip
    return [*engine, "monitor", "model-quality", str(data / "merged"), str(out), "--quiet",
            "--problem-type", "BinaryClassification", "--inference-attribute", "prediction",
            "--probability-attribute", "score", "--ground-truth-attribute", "label"]  # fmt: skip


def _prepare_baseline(data: Path) -> None:
    """The baseline's statistics and constraints (Simple drift, so the distance is comparable with KS)."""
    base = data / "_baseline_files"
    if (base / "constraints.json").exists():
        return
    from engine.monitor.job import run_baseline

    _, cons = run_baseline(str(data / "baseline.parquet"), str(base))
    cons["monitoring_config"]["distribution_constraints"]["comparison_method"] = "Simple"
    (base / "constraints.json").write_text(json.dumps(cons, indent=1))


def _engine_summary(job: str, out: Path) -> dict[str, Any]:
    stats = json.loads((out / "statistics.json").read_text())
    if job == "model-quality":
        m = stats["binary_classification_metrics"]
        return {"metrics": {k: m[k]["value"] for k in ("accuracy", "precision", "recall", "f1", "auc")}}
    drift: dict[str, float] = {}
    for line in (out / "cloudwatch_metrics.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if rec["MetricName"].startswith("feature_baseline_drift_"):
            drift[rec["MetricName"].removeprefix("feature_baseline_drift_")] = rec["Value"]
    violated = {
        v["feature_name"]
        for v in json.loads((out / "constraint_violations.json").read_text())["violations"]
        if v["constraint_check_type"] == "baseline_drift_check"
    }
    features: dict[str, Any] = {}
    for f in stats["features"]:
        section = f.get("numerical_statistics") or f.get("string_statistics")
        entry: dict[str, Any] = {"missing": section["common"]["num_missing"], "drift": drift.get(f["name"])}
        if "numerical_statistics" in f:
            entry.update(mean=section["mean"], std=section["std_dev"], min=section["min"], max=section["max"])
        features[f["name"]] = entry
    return {"features": features, "drifted": sorted(violated)}


def _close(a: float, b: float, tol: float) -> bool:
    return abs(a - b) <= tol * max(1.0, abs(a), abs(b))


def check_agreement(job: str, engine: dict[str, Any], peer: dict[str, Any], tool: str) -> list[str]:
    """Where the engine and a peer computed the same figure, the differences beyond tolerance."""
    problems: list[str] = []
    if job == "model-quality":
        for name, value in peer.get("metrics", {}).items():
            if name in engine["metrics"] and isinstance(value, float):
                tol = 2e-3 if name == "auc" else 1e-9  # the engine's AUC comes from 10,000 score bins
                if not _close(engine["metrics"][name], value, tol):
                    problems.append(f"{tool}: {name} {value} vs engine {engine['metrics'][name]}")
        return problems
    for name, theirs in peer.get("features", {}).items():
        mine = engine["features"].get(name)
        if mine is None:
            problems.append(f"{tool}: feature {name} missing from the engine's statistics")
            continue
        for key, tol in (("mean", 1e-9), ("std", 1e-9), ("min", 0.0), ("max", 0.0), ("missing", 0.0)):
            if key in theirs and key in mine and not _close(mine[key], theirs[key], tol):
                problems.append(f"{tool}: {name} {key} {theirs[key]} vs engine {mine[key]}")
        # whylogs reports the sample std dev: n / (n - 1) is negligible at these sizes.
        if "std_sample" in theirs and "std" in mine and not _close(mine["std"], theirs["std_sample"], 1e-3):
            problems.append(f"{tool}: {name} sample std {theirs['std_sample']} vs engine {mine['std']}")
        # The window's side is a KLL sketch (rank error about 0.5% at k = 2048): KS within 0.01.
        if "drift" in theirs and mine.get("drift") is not None and abs(mine["drift"] - theirs["drift"]) > 0.01:
            problems.append(f"{tool}: {name} drift {theirs['drift']} vs engine {mine['drift']}")
    return problems


def _fmt(v: float, digits: int = 1) -> str:
    return f"{v:,.{digits}f}"


def markdown(runs: list[Run]) -> str:
    lines = [
        "| job | rows | tool | wall s | CPU s | CPU/wall | peak RSS MB | rows/s | engine speed-up |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in runs:
        eng = next((e for e in runs if e.tool == "engine" and e.job == r.job and e.rows == r.rows), None)
        if r.exit_code:
            lines.append(f"| {r.job} | {r.rows:,} | {r.tool} | failed ({r.note}) | | | | | |")
            continue
        ratio = f"{r.wall_s / eng.wall_s:.1f}x" if eng and not eng.exit_code and r.tool != "engine" else ""
        lines.append(
            f"| {r.job} | {r.rows:,} | {r.tool} | {_fmt(r.wall_s, 2)} | {_fmt(r.cpu_s, 2)} | "
            f"{r.cpu_s / r.wall_s:.2f} | {_fmt(r.peak_rss_mb, 0)} | {_fmt(r.rows_per_s, 0)} | {ratio} |"
        )
    return "\n".join(lines)


def stages(rows: int, features: int) -> list[tuple[str, float]]:
    """CPU seconds per stage of the data-quality job on the window, in this one process (no workers).

    Each stage's functions are wrapped with a CPU clock (this process's user + system time, the reading
    threads included); the decode is timed by a pass that only reads. Nested stages are told apart by
    subtraction: "types and number columns" is the column work outside the moments and the text columns.
    """
    import resource

    import engine.monitor.profile as profile
    import engine.monitor.sketch as sketch
    from engine.monitor import statistics, violations
    from engine.monitor.passes import _coalesced
    from engine.monitor.sources import read_groups

    def cpu() -> float:
        r = resource.getrusage(resource.RUSAGE_SELF)
        return r.ru_utime + r.ru_stime

    spent: dict[str, float] = {}

    def timed(owner: Any, name: str, stage: str) -> None:
        inner = getattr(owner, name)

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            t = cpu()
            try:
                return inner(*args, **kwargs)
            finally:
                spent[stage] = spent.get(stage, 0.0) + cpu() - t

        setattr(owner, name, wrapper)

    data = ensure_data(rows, features)
    _prepare_baseline(data)
    t = cpu()
    for _ in read_groups(str(data / "window")):
        pass
    decode = cpu() - t
    timed(sketch.KllSketch, "_flush", "kll")  # where the sorting and compacting happen
    timed(profile.FeatureProfile, "add_numbers", "numbers")
    timed(profile.FeatureProfile, "add_strings", "strings")
    timed(profile, "_add_column", "columns")
    whole = profile.Profile()
    t = cpu()
    for _, batch in _coalesced(read_groups(str(data / "window"))):
        whole.add(batch)
    total = cpu() - t
    base = data / "_baseline_files"
    numbers = spent["numbers"] - spent.get("kll", 0.0)
    for f in whole.features.values():
        if f.kll is not None:
            f.kll.count()  # what is still pending is sorted in
    kll = spent.get("kll", 0.0)
    t = cpu()
    stats = statistics.statistics_document(whole)
    out = cpu() - t
    t = cpu()
    violations.violations_document(
        json.loads((base / "statistics.json").read_text()), json.loads((base / "constraints.json").read_text()), whole
    )
    drift = cpu() - t
    t = cpu()
    json.dumps(stats)
    out += cpu() - t
    return [
        ("Parquet decode (only the feature columns)", decode),
        ("batches joined to 64k rows, per-batch overhead", total - decode - spent["columns"]),
        ("KLL sketch updates (sorts, compactions)", kll),
        ("moments (count, sum, mean, M2, min, max)", numbers),
        ("types and number columns (null drop, finite, whole-number counts)",
         spent["columns"] - spent["numbers"] - spent["strings"]),
        ("text columns (dictionary encoding, categories, HyperLogLog, patterns)", spent["strings"]),
        ("drift and checks (violations)", drift),
        ("statistics document and JSON", out),
    ]  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.monitor_bench", description=__doc__.split("\n")[0])
    p.add_argument("--rows", type=int, default=2_000_000)
    p.add_argument("--rows-list", default="", help="extra row counts for the engine alone (memory flat in rows)")
    p.add_argument("--features", type=int, default=70)
    p.add_argument("--tools", default=",".join(TOOLS))
    p.add_argument("--jobs", default=",".join(JOBS))
    p.add_argument("--peer-python", default=sys.executable, help="the interpreter that has the peers installed")
    p.add_argument("--repeat", type=int, default=1, help="runs per tool; the fastest is reported")
    p.add_argument("--json", type=Path, help="default: benchmarks/results/monitor-ROWS.json")
    p.add_argument("--prepare-only", action="store_true", help="generate the data and the baseline files, then stop")
    p.add_argument("--stages", action="store_true", help="CPU seconds per stage of the data-quality job, then stop")
    args = p.parse_args(argv)
    if args.stages:
        table = stages(args.rows, args.features)
        print("| stage | CPU s |\n|---|---:|")
        for name, seconds in table:
            print(f"| {name} | {seconds:.2f} |")
        print(f"| total | {sum(s for _, s in table):.2f} |")
        return 0
    if args.prepare_only:
        _prepare_baseline(ensure_data(args.rows, args.features))
        return 0
    # The engine first: the peers' outputs are checked against its files.
    tools = sorted({t for t in args.tools.split(",") if t}, key=lambda t: (t != "engine", TOOLS.index(t)))
    jobs = [j for j in args.jobs.split(",") if j]
    extra = [int(x) for x in args.rows_list.split(",") if x]
    RESULTS.mkdir(parents=True, exist_ok=True)
    runs: list[Run] = []
    problems: list[str] = []
    skipped: list[str] = []
    for rows in [*extra, args.rows]:
        # Prepared in a process of its own: a child forked from a process holding the generated data would
        # report that memory as its own peak RSS.
        prep = [sys.executable, "-m", "benchmarks.monitor_bench", "--prepare-only", "--rows", str(rows)]
        subprocess.run([*prep, "--features", str(args.features)], check=True, cwd=REPO)
        data = DATA_ROOT / f"monitor-{rows}x{args.features}"
        (data / "_out").mkdir(exist_ok=True)
        for job in jobs:
            engine_summary: dict[str, Any] | None = None
            for tool in tools if rows == args.rows else ["engine"]:
                if tool != "engine" and not _peer_available(args.peer_python, tool):
                    if f"{tool} (not installed)" not in skipped:
                        skipped.append(f"{tool} (not installed)")
                    continue
                best: Run | None = None
                for i in range(args.repeat):
                    out = data / "_out" / f"{tool}-{job}-{i}"
                    shutil.rmtree(out, ignore_errors=True)
                    cmd = (
                        _engine_cmd(job, data, out)
                        if tool == "engine"
                        else [args.peer_python, "-m", "benchmarks.monitor_peers", tool, job, str(data), str(out)]
                    )
                    wall, cpu, rss, code, note = _process(cmd, data / "_out" / f"{tool}-{job}-{i}")
                    run = Run(tool, job, rows, wall, cpu, rss, code, note)
                    print(f"{job} {rows:,} {tool}: {wall:.2f} s wall, {cpu:.2f} s CPU, {rss:.0f} MB, exit {code}")
                    if code:
                        problems.append(f"{tool} {job} at {rows:,} rows failed: {note}")
                    if best is None or (not code and run.wall_s < best.wall_s):
                        best = run
                    if code:
                        break
                    summary = (
                        _engine_summary(job, out)
                        if tool == "engine"
                        else json.loads((out / "summary.json").read_text())
                    )
                    if tool == "engine":
                        engine_summary = summary
                        if job == "data-quality" and set(summary["drifted"]) != DRIFTED:
                            problems.append(f"engine flagged drift in {summary['drifted']}, injected {sorted(DRIFTED)}")
                    elif engine_summary is not None:
                        problems += check_agreement(job, engine_summary, summary, tool)
                assert best is not None
                runs.append(best)
    table = markdown(runs)
    print(table)
    for s in skipped:
        print(f"skipped: {s}")
    doc = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "features": args.features,
        "runs": [asdict(r) | {"rows_per_s": r.rows_per_s} for r in runs],
        "skipped": skipped,
        "problems": problems,
    }
    (args.json or RESULTS / f"monitor-{args.rows}.json").write_text(json.dumps(doc, indent=1))
    for problem in problems:
        print(f"PROBLEM: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
