"""What readers see of a dataset, for the commit, kill and concurrency tests and campaigns.

Two views: the plain one (every Parquet file a glob or pyarrow's discovery finds) and the manifest's
(the files `DEST/_manifest.json` lists). Rows are compared as sorted (endpoint, event_id, input_data).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pyarrow.dataset as ds

from engine.sinks.manifest import committed_files
from tests.conftest import ROOT, record

Rows = list[tuple[str, str, str]]


def _rows(source: object, base: Path) -> Rows:
    dataset = ds.dataset(source, format="parquet", partitioning="hive", partition_base_dir=str(base))
    table = dataset.to_table(columns=["endpoint", "event_id", "input_data"])
    return sorted(zip(*(table.column(c).to_pylist() for c in ("endpoint", "event_id", "input_data")), strict=True))


def plain_rows(out: Path) -> Rows:
    """Rows as a reader that ignores `_SUCCESS` and the manifest sees them (the README's pyarrow snippet)."""
    if not any(out.glob("endpoint=*")):
        return []
    return _rows(str(out), out)


def manifest_rows(out: Path) -> Rows:
    """Rows of the files the dataset manifest lists (the consistent view)."""
    files = committed_files(str(out))
    return _rows(files, out) if files else []


def success_run(out: Path) -> str | None:
    path = out / "_SUCCESS"
    return str(orjson.loads(path.read_bytes())["run_id"]) if path.exists() else None


def manifest_run(out: Path) -> str | None:
    """The run of the last commit, by the dataset manifest."""
    path = out / "_manifest.json"
    return str(orjson.loads(path.read_bytes())["last_run"]) if path.exists() else None


def write_tree(capture: Path, version: int, *, records: int = 200) -> None:
    """A capture tree of 2 endpoints x 3 hours; `version` changes every record's input (and adds an hour)."""
    hours = (10, 11, 12) if version == 1 else (10, 11, 12, 13)
    for ep in ("ep-a", "ep-b"):
        for h in hours:
            folder = capture / ep / "AllTraffic" / f"2026/11/01/{h:02d}"
            folder.mkdir(parents=True, exist_ok=True)
            lines = [
                record(f"{ep}-{h}-{i}", f"2026-11-01T{h:02d}:{i % 60:02d}:{i % 59:02d}Z", data=f"{version},{i}")
                for i in range(records)
            ]
            (folder / f"00-00-000-{h}.jsonl").write_text("".join(line + "\n" for line in lines))


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "CAPTURE_ENGINE_"))}
    full.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "engine", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full,
        cwd=ROOT,
    )


# Every named step of a run's life, in order (engine.interrupts.phase).
PHASES = [
    "begin",
    "commit:start",
    "commit:plan",
    "commit:journal",
    "commit:move",
    "commit:moved",
    "commit:manifest",
    "commit:delete",
    "commit:deleted",
    "commit:report",
    "commit:done",
    "commit:success",
]
# Killed from this phase on, the run is committed: its journal is written and the next run completes it.
COMMITTED_FROM = PHASES.index("commit:journal")
# Signalled from this phase on (past the commit's last check), the run completes its commit and says so.
TERM_COMMITS_FROM = PHASES.index("commit:plan")


def check_killed(out: Path, phase: str, old: Rows, new: Rows) -> list[str]:
    """What must hold after a run writing `new` over `old` was killed at `phase`; returns the failures."""
    failures = []
    i = PHASES.index(phase)
    m = manifest_rows(out)
    expect = new if i >= PHASES.index("commit:manifest") else old
    if m != expect:
        failures.append(f"{phase}: manifest view has {len(m)} rows, expected {len(expect)}")
    if i < PHASES.index("commit:move") and plain_rows(out) != old:
        failures.append(f"{phase}: plain view changed before any file moved")
    if i >= PHASES.index("commit:deleted") and plain_rows(out) != new:
        failures.append(f"{phase}: plain view differs from the commit after the deletes")
    run = success_run(out)
    if run is not None and run != manifest_run(out):
        failures.append(f"{phase}: _SUCCESS describes another run than the last commit")
    return failures
