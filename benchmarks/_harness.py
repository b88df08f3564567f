"""The harness every benchmark shares: one process run measured from outside (wall, CPU, peak RSS by wait4), the
results of a tool over its runs, the machine and commit a result describes, and a warm page cache."""

from __future__ import annotations

import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Final

__all__ = [
    "MB",
    "REPO",
    "RESULTS",
    "Hash",
    "Run",
    "ToolResult",
    "cpu_seconds",
    "engine_report",
    "machine",
    "run_process",
    "size_label",
    "warm_page_cache",
]

REPO: Final = Path(__file__).resolve().parent.parent
RESULTS: Final = Path(__file__).resolve().parent / "results"
MB: Final = 1e6  # sizes, throughput and RSS are all in decimal megabytes, like --size
_LIBRARIES: Final = ("capture-engine", "pyarrow", "polars", "duckdb", "pandas", "numpy", "orjson", "fsspec")


@dataclass(frozen=True)
class Hash:
    """One order-independent hash of the output check: the stats key, the hashed SQL, what a difference means."""

    key: str
    sql: str
    differs: str  # the problem reported when only this hash (and the ones after it) differs; {ref} is the reference


@dataclass
class Run:
    """One process run of one tool."""

    wall_seconds: float
    peak_rss_bytes: int
    exit_code: int
    cpu_seconds: float = 0.0  # user + system: less sensitive than wall time to a busy neighbour on the machine
    stderr_tail: str = ""
    engine_report: dict[str, Any] | None = None  # the engine's own timing from _SUCCESS (engine runs only)


@dataclass
class ToolResult:
    """Every run of one tool plus what the output check found."""

    tool: str
    command: list[str]
    input_bytes: int  # bytes the tool read (the subset for an extrapolated pandas run)
    subset_files: list[str] | None = None  # capture files of a subset run, else None (all of them)
    runs: list[Run] = field(default_factory=list)
    stats: dict[str, Any] | None = None
    check: str = "not checked"
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok_runs(self) -> list[Run]:
        return [r for r in self.runs if r.exit_code == 0]

    @property
    def failed(self) -> bool:
        return not self.runs or len(self.ok_runs) != len(self.runs)

    @property
    def wall(self) -> float | None:
        """Median wall time of the runs, or None if any run failed."""
        return None if self.failed else statistics.median(r.wall_seconds for r in self.runs)

    @property
    def peak_rss(self) -> int:
        return max((r.peak_rss_bytes for r in self.runs), default=0)


def size_label(text: str) -> str:
    return re.sub(r"\s+", "", text).upper().replace("IB", "iB")


def run_process(cmd: list[str], log_base: Path) -> Run:
    """Run ``cmd`` to completion; its output goes to files so a chatty child can never block on a full pipe."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])
    stdout_path, stderr_path = log_base.with_suffix(".stdout"), log_base.with_suffix(".stderr")
    with stdout_path.open("wb") as out, stderr_path.open("wb") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, stdin=subprocess.DEVNULL, cwd=REPO, env=env)
        # wait4 gives this child's own rusage; RUSAGE_CHILDREN would be the max over every child so far.
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here: stop Popen from waiting again
    tail = ""
    if proc.returncode:
        tail = "\n".join(stderr_path.read_text(errors="replace").strip().splitlines()[-15:])
    # Linux reports ru_maxrss in KiB.
    return Run(
        wall_seconds=wall,
        peak_rss_bytes=usage.ru_maxrss * 1024,
        exit_code=proc.returncode,
        cpu_seconds=usage.ru_utime + usage.ru_stime,
        stderr_tail=tail,
    )


def engine_report(dest: Path) -> dict[str, Any] | None:
    """The engine's in-process wall time and busy time per stage, to tell start-up from work."""
    try:
        report = json.loads((dest / "_SUCCESS").read_text())
    except (OSError, ValueError):
        return None
    return {k: report.get(k) for k in ("wall_seconds", "stage_seconds", "records", "rows_written", "rejected")}


def warm_page_cache(files: list[Path]) -> float:
    """Read every input once so no tool pays (or is spared) the cold-cache read that the first one would."""
    t0 = time.perf_counter()
    for p in files:
        with p.open("rb", buffering=0) as f:
            while f.read(16 * 2**20):
                pass
    return time.perf_counter() - t0


def machine() -> dict[str, Any]:
    cpu = ""
    mem = 0
    try:
        cpu = next(
            (
                ln.split(":", 1)[1].strip()
                for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if "model name" in ln
            ),
            "",
        )
        meminfo = Path("/proc/meminfo").read_text()
        m = re.search(r"MemTotal:\s+(\d+) kB", meminfo)
        mem = int(m.group(1)) * 1024 if m else 0
    except OSError:
        pass  # not Linux: leave them empty rather than fail the benchmark
    versions = {lib: _version(lib) for lib in _LIBRARIES}
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return {
        "nproc": os.cpu_count(),
        "usable_cpus": affinity,
        "cpu_model": cpu,
        "memory_bytes": mem,
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "python_implementation": platform.python_implementation(),
        "libraries": versions,
        "git": _git(),
    }


def _version(lib: str) -> str | None:
    try:
        return metadata.version(lib)
    except metadata.PackageNotFoundError:
        return None


def _git() -> dict[str, Any]:
    """The commit benchmarked and whether engine/ had uncommitted edits (numbers then describe those edits)."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True)
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "engine", "schemas"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return {}
    return {"commit": head.stdout.strip(), "engine_dirty": bool(dirty.stdout.strip())}


def cpu_seconds(r: ToolResult) -> float | None:
    """Median CPU seconds (user + system) of the runs, or None if any run failed."""
    return None if r.failed else statistics.median(run.cpu_seconds for run in r.runs)
