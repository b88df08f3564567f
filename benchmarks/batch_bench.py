"""End-to-end benchmark of ``capture-engine batch SRC DEST`` against DuckDB, polars and pandas on the same data.

    python -m benchmarks.batch_bench --size 1GB [--tools engine,duckdb,polars,pandas] [--repeat 3] [--json PATH]

The input is a seeded, CSV-only synth batch transform tree (``engine.synth.synth_batch``): 8 jobs (one per hour)
of 8 input files each, every file with a ``.out`` whose lines carry the appended inference ID and time; by synth's
shares half the jobs join their output with the input and a quarter of the input files are gzip. The records per
file are chosen so the ``.out`` files total about ``--size`` bytes (from the bytes per record of a small probe run
with the same plan). Trees are generated once and cached under ``benchmarks/.data/batch-*`` with a completion
marker, like ``benchmarks/data.py`` does for capture trees.

Each tool runs in its own process on a fresh destination (the engine as its own command line, the peers as
``python -m benchmarks.batch_peers TOOL SRC DEST``); wall time is measured around the process and peak RSS is the
child's own ``ru_maxrss`` from ``os.wait4``. Throughput is over the bytes read from disk: the ``.out`` files plus
the input files as stored (gzip inputs compressed). Then every output is read back with DuckDB and compared with
the engine's: rows per hour partition, rows in total and order-independent hashes over the rows; the engine itself
is checked against synth (rows per hour, every record written) and its ``_SUCCESS`` report (balanced, no rejects).
Any failure or mismatch makes the exit status non-zero.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Final

from benchmarks._harness import (
    MB,
    RESULTS,
    Hash,
    ToolResult,
    engine_report,
    machine,
    run_process,
    size_label,
    warm_page_cache,
)
from benchmarks.batch_peers import (
    COLUMNS,
    NATURAL,
    NATURAL_COLUMNS,
    PARTITION_KEYS,
    TOOLS,
    TransformFile,
    transform_files,
)
from benchmarks.data import DEFAULT_ROOT, MARKER, _alive
from engine.options import parse_size
from engine.synth import BatchSynthOptions, synth_batch
from engine.tables import table_spec

__all__ = ["HASHES", "batch_synth_options", "check_outputs", "ensure_batch_data", "main", "markdown_table"]

SEED: Final = 1
JOBS: Final = 8  # one per hour: 8 hour partitions
FILES_PER_JOB: Final = 8
_PROBE_RECORDS: Final = 400  # records per file of the sizing probe: 64 files, well under a second
_LAYOUT: Final = re.compile(r"year=\d{4}/month=\d{2}/day=\d{2}/hour=\d{2}/[^/]+\.parquet")
DEFAULT_TOOLS: Final = ("engine", *TOOLS)
_ID_TIME: Final = "output_file, line, inference_id, epoch_ms(inference_time)"
HASHES: Final = (
    Hash(
        "key_hash",
        f"hash({_ID_TIME})",
        "hash of (output_file, line, inference_id, inference_time ms) differs from {ref}",
    ),
    Hash(
        "row_hash",
        f"hash({_ID_TIME}, input_file, input_data, output_data)",
        "same keys as {ref} but input_file, input_data or output_data differ",
    ),
)
# The natural peers write the predictions only: checked on the columns they share with the engine.
NATURAL_HASHES: Final = (
    Hash(
        "key_hash",
        "hash(output_file, inference_id, epoch_ms(inference_time), output_data)",
        "hash of (output_file, inference_id, inference_time ms, output_data) differs from {ref} (no line, no input)",
    ),
)


# --- data ---------------------------------------------------------------------------------------------------


def batch_synth_options(records_per_file: int) -> BatchSynthOptions:
    """The benchmark tree: CSV only, no failed files, no single-object job; synth's join and gzip shares."""
    return BatchSynthOptions(
        jobs=JOBS,
        files_per_job=FILES_PER_JOB,
        records_per_file=records_per_file,
        seed=SEED,
        jsonl_share=0.0,
        failed_file_share=0.0,
        single_object_job=False,
    )


def _out_files(root: Path) -> list[Path]:
    return sorted((root / "transform-output").glob("job-*/*.out"))


def _input_files(root: Path) -> list[Path]:
    return sorted(p for p in (root / "transform-input").glob("job-*/*") if p.is_file())


def _records_per_file(size_bytes: int) -> tuple[int, float]:
    """Records per file giving about ``size_bytes`` of ``.out``, and the probe's ``.out`` bytes per record.

    The probe uses the same seed, jobs and files, hence the same plan (which jobs join, which files are gzip):
    only the record values differ, so bytes per record carry over.
    """
    with tempfile.TemporaryDirectory(prefix="batch-probe-") as tmp:
        summary = synth_batch(tmp, batch_synth_options(_PROBE_RECORDS))
        per_record = sum(p.stat().st_size for p in _out_files(Path(tmp))) / summary.records
    return max(1, round(size_bytes / (JOBS * FILES_PER_JOB * per_record))), per_record


def _tree_dir(size_bytes: int, root: Path) -> Path:
    return root / f"batch-{size_bytes}B-seed{SEED}-j{JOBS}-f{FILES_PER_JOB}"


def _rows_per_hour(options: BatchSynthOptions) -> dict[str, int]:
    """Job n starts within hour ``start + n`` and every record carries that start time; no file fails."""
    rows = options.files_per_job * options.records_per_file
    hours = (options.start + timedelta(hours=n) for n in range(options.jobs))
    return {f"year={h:%Y}/month={h:%m}/day={h:%d}/hour={h:%H}": rows for h in hours}


def _move_prefixes(tree: Path, old: str, new: str) -> None:
    """Point the manifests' absolute prefixes (and synth's summary) at ``new`` instead of ``old``."""
    for doc in [*(tree / "batch-capture").glob("*/*/*/*/*/*.json"), tree / "synth-batch.json"]:
        doc.write_text(doc.read_text().replace(old, new))


def _moved(summary: dict[str, Any], old: str, new: str) -> dict[str, Any]:
    return {k: (v.replace(old, new) if isinstance(v, str) else v) for k, v in summary.items()}


def ensure_batch_data(size_bytes: int, root: Path | str | None = None) -> Path:
    """The folder of a complete batch tree of about ``size_bytes`` of ``.out`` (generated on first use).

    Generated into a sibling ``.partial-<pid>`` folder; synth writes absolute ``file://`` prefixes into the
    manifests, so those are rewritten to the final folder before the marker is written and the folder renamed
    (and again if a cached tree is found somewhere else than it was generated). A folder without the marker is
    regenerated.
    """
    base = Path(root) if root is not None else DEFAULT_ROOT
    tree = _tree_dir(size_bytes, base)
    if (tree / MARKER).is_file():
        marker = json.loads((tree / MARKER).read_text())
        if marker["summary"]["root"] != str(tree.resolve()):  # the checkout (or --data-root) moved
            _move_prefixes(tree, marker["summary"]["root"], str(tree.resolve()))
            marker["summary"] = _moved(marker["summary"], marker["summary"]["root"], str(tree.resolve()))
            (tree / MARKER).write_text(json.dumps(marker, indent=2))
        return tree
    if tree.exists():
        shutil.rmtree(tree)
    base.mkdir(parents=True, exist_ok=True)
    for stale in base.glob(f"{tree.name}.partial-*"):
        if not _alive(stale.name.rsplit("-", 1)[-1]):
            shutil.rmtree(stale, ignore_errors=True)  # left by an interrupted generation
    partial = base.resolve() / f"{tree.name}.partial-{os.getpid()}"
    t0 = time.perf_counter()
    records_per_file, probe_bytes_per_record = _records_per_file(size_bytes)
    options = batch_synth_options(records_per_file)
    summary = synth_batch(str(partial), options)
    final = str(base.resolve() / tree.name)
    _move_prefixes(partial, str(partial), final)
    seconds = time.perf_counter() - t0
    inputs = _input_files(partial)
    raw_input = 0
    for p in inputs:
        if p.suffix == ".gz":
            with gzip.open(p, "rb") as f:
                while chunk := f.read(16 * 2**20):
                    raw_input += len(chunk)
        else:
            raw_input += p.stat().st_size
    marker = {
        "summary": _moved(asdict(summary), str(partial), final),
        "options": {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in asdict(options).items()},
        "rows_per_hour": _rows_per_hour(options),
        "probe_out_bytes_per_record": round(probe_bytes_per_record, 2),
        "out_bytes": sum(p.stat().st_size for p in _out_files(partial)),
        "input_bytes": sum(p.stat().st_size for p in inputs),
        "input_uncompressed_bytes": raw_input,
        "gzip_inputs": sum(p.suffix == ".gz" for p in inputs),
        "generate_seconds": round(seconds, 3),
    }
    (partial / MARKER).write_text(json.dumps(marker, indent=2))
    try:
        partial.rename(tree)
    except OSError:
        if not (tree / MARKER).is_file():  # another process finished the same tree first: use its copy
            raise
        shutil.rmtree(partial, ignore_errors=True)
    return tree


# --- output check -------------------------------------------------------------------------------------------


def _relation(dest: Path) -> str:
    # Strings for the keys: zero padding is part of what is checked.
    return (
        f"read_parquet('{dest.as_posix()}/year=*/**/*.parquet', hive_partitioning = true, hive_types_autocast = false)"
    )


def _layout(dest: Path) -> tuple[list[str], Path | None]:
    """Parquet files outside the hive layout, and one data file to read the schema from."""
    problems: list[str] = []
    sample = None
    for p in sorted(dest.rglob("*.parquet")):
        rel = p.relative_to(dest).as_posix()
        if rel.startswith("_"):
            continue
        if _LAYOUT.fullmatch(rel):
            sample = sample or p
        elif len(problems) < 5:
            problems.append(f"file outside the hive layout: {rel}")
    if sample is None:
        problems.append("no data files under year=*/month=*/day=*/hour=*/")
    return problems, sample


def _schema(sample: Path, engine: bool, natural: bool = False) -> tuple[list[str], list[str]]:
    """(problems, notes): the engine must write the contract's columns, a peer at least the checked ones."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    want = table_spec("batch").file_schema
    got = pq.read_schema(sample)
    problems, notes = [], []
    if engine and got.names != want.names:
        problems.append(f"file columns {got.names} differ from the contract's {want.names}")
    missing = [c for c in (NATURAL_COLUMNS if natural else COLUMNS) if c not in got.names]
    if missing:
        problems.append(f"missing columns {missing}")
    for f in got:
        if f.name in want.names:
            expected = want.field(f.name).type
            if not (f.type == expected or (f.type == pa.large_string() and expected == pa.string())):
                notes.append(f"{f.name} is {f.type} (contract {expected})")
    return problems, notes


def _stats(con: Any, dest: Path, subset: list[str] | None = None, natural: bool = False) -> dict[str, Any]:
    """Rows, hashes, rows filed under another hour than their inference_time, and rows per partition.

    `natural`: the hashes over the natural peers' columns only (NATURAL_HASHES)."""
    hashes_checked = NATURAL_HASHES if natural else HASHES
    where = ""
    if subset is not None:
        con.execute("CREATE OR REPLACE TEMP TABLE subset AS SELECT unnest(?::VARCHAR[]) AS uri", [subset])
        where = "WHERE output_file IN (SELECT uri FROM subset)"
    # Sums of 64-bit hashes as HUGEINT: order-independent, and unlike XOR a duplicated row does not cancel out.
    sums = ", ".join(f"coalesce(sum({h.sql}::HUGEINT), 0)" for h in hashes_checked)
    folder = "concat_ws('/', year, month, day, hour)"
    rows, *hashes, misplaced = con.execute(
        f"SELECT count(*), {sums}, count(*) FILTER (WHERE strftime(inference_time, '%Y/%m/%d/%H') <> {folder}) "
        f"FROM {_relation(dest)} {where}"
    ).fetchone()
    parts = con.execute(
        f"SELECT {', '.join(PARTITION_KEYS)}, count(*) FROM {_relation(dest)} {where} GROUP BY ALL ORDER BY ALL"
    ).fetchall()
    stats: dict[str, Any] = {"rows": rows, **{h.key: str(v) for h, v in zip(hashes_checked, hashes, strict=True)}}
    stats["misplaced"] = misplaced
    stats["partitions"] = {
        "/".join(f"{k}={v}" for k, v in zip(PARTITION_KEYS, p[:-1], strict=True)): p[-1] for p in parts
    }
    return stats


def _compare(got: dict[str, Any], want: dict[str, Any], ref: str, natural: bool = False) -> list[str]:
    problems = []
    if got["rows"] != want["rows"]:
        problems.append(f"{got['rows']:,} rows, {ref} has {want['rows']:,}")
    differs = next((h for h in (NATURAL_HASHES if natural else HASHES) if got[h.key] != want[h.key]), None)
    if differs is not None:
        problems.append(differs.differs.format(ref=ref))
    gp, wp = got["partitions"], want["partitions"]
    diff = sorted(k for k in gp.keys() | wp.keys() if gp.get(k) != wp.get(k))
    if diff:
        shown = "; ".join(f"{k}: {gp.get(k, 0)} vs {wp.get(k, 0)}" for k in diff[:3])
        problems.append(f"{len(diff)} partitions differ in rows ({shown}{'; ...' if len(diff) > 3 else ''})")
    return problems


def _diff_detail(con: Any, got: Path, want: Path, ref: str) -> list[str]:
    """Rows only on one side and columns that differ, joined with the reference on (output_file, line)."""
    cols = [c for c in COLUMNS if c not in ("output_file", "line")]
    joined = (
        f"FROM {_relation(got)} g FULL OUTER JOIN {_relation(want)} w "
        "ON g.output_file = w.output_file AND g.line = w.line"
    )
    both = "g.line IS NOT NULL AND w.line IS NOT NULL"
    counts = ", ".join(f"count(*) FILTER (WHERE {both} AND g.{c} IS DISTINCT FROM w.{c})" for c in cols)
    only_got, only_want, *per_col = con.execute(
        f"SELECT count(*) FILTER (WHERE w.line IS NULL), count(*) FILTER (WHERE g.line IS NULL), {counts} {joined}"
    ).fetchone()
    out = []
    if only_got:
        out.append(f"{only_got:,} (output_file, line) rows only here")
    if only_want:
        out.append(f"{only_want:,} (output_file, line) rows only in {ref}")
    for c, n in zip(cols, per_col, strict=True):
        if n:
            e = con.execute(
                f"SELECT g.output_file, g.line, g.{c}, w.{c} {joined} WHERE {both} AND g.{c} IS DISTINCT FROM w.{c} "
                "LIMIT 1"
            ).fetchone()
            out.append(f"column {c} differs on {n:,} rows, e.g. {e[0]} line {e[1]}: {e[2]!r} here, {e[3]!r} in {ref}")
    return out


def _engine_truth(con: Any, r: ToolResult, dest: Path, marker: dict[str, Any]) -> list[str]:
    """The engine against synth (every record written, rows per hour) and its own _SUCCESS report."""
    assert r.stats is not None
    problems = []
    records = marker["summary"]["records"]
    if r.stats["rows"] != records:
        problems.append(f"{r.stats['rows']:,} rows but synth wrote {records:,} records")
    if r.stats["partitions"] != marker["rows_per_hour"]:
        problems.append(f"rows per hour {r.stats['partitions']} differ from synth's {marker['rows_per_hour']}")
    try:
        report = json.loads((dest / "_SUCCESS").read_text())
    except (OSError, ValueError) as exc:
        return [*problems, f"no readable _SUCCESS report: {exc}"]
    if not report.get("balanced"):
        problems.append("_SUCCESS: records != written + rejected + outside window")
    if report.get("rejected") or report.get("rejects_by_reason"):
        problems.append(f"_SUCCESS: {report.get('rejected')} rejected {report.get('rejects_by_reason')}")
    if report.get("records") != records or report.get("rows_written") != records:
        problems.append(f"_SUCCESS: {report.get('records')} records, {report.get('rows_written')} rows written")
    if any((dest / "_rejects").glob("**/*.parquet")):
        n = con.execute(f"SELECT count(*) FROM read_parquet('{dest.as_posix()}/_rejects/**/*.parquet')").fetchone()[0]
        if n:
            problems.append(f"{n:,} rows in _rejects")
    return problems


def check_outputs(results: list[ToolResult], dests: dict[str, Path], marker: dict[str, Any]) -> str | None:
    """Fill in each result's check; returns the reference tool (the engine if it ran, else the first full run)."""
    import duckdb

    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")  # strftime of the TIMESTAMPTZ column gives UTC hours
    for r in results:
        if r.failed:
            r.check = "FAILED"
            r.problems.append("the tool exited non-zero: " + (r.runs[-1].stderr_tail if r.runs else "not run"))
            continue
        layout, sample = _layout(dests[r.tool])
        r.problems += layout
        if sample is None:
            continue
        names, notes = _schema(sample, r.tool == "engine", r.tool in NATURAL)
        r.problems += names
        r.notes += notes
        if names:
            continue
        uris = r.subset_files
        r.stats = _stats(con, dests[r.tool], uris, r.tool in NATURAL)
        if r.stats["misplaced"]:
            r.problems.append(f"{r.stats['misplaced']:,} rows are in another hour folder than their inference_time")
    full = sorted(
        (r for r in results if r.stats is not None and r.subset_files is None and r.tool not in NATURAL),
        key=lambda r: r.tool != "engine",
    )
    ref = full[0] if full else None
    if ref is not None and ref.tool == "engine":
        ref.problems += [f"ground truth: {p}" for p in _engine_truth(con, ref, dests[ref.tool], marker)]
    for r in results:
        if r.failed:
            continue
        if r.stats is None or ref is None or ref.stats is None:
            r.check = "MISMATCH" if r.problems or r.stats is None else "UNCHECKED (no full run to compare with)"
            continue
        if r.tool in NATURAL:
            want = _stats(con, dests[ref.tool], r.subset_files, natural=True)
            r.problems += _compare(r.stats, want, ref.tool, natural=True)
        elif r is not ref and r.subset_files is None:
            differs = _compare(r.stats, ref.stats, ref.tool)
            r.problems += differs
            if differs:
                r.problems += _diff_detail(con, dests[r.tool], dests[ref.tool], ref.tool)
        elif r is not ref:
            want = _stats(con, dests[ref.tool], r.subset_files)
            r.problems += _compare(r.stats, want, f"{ref.tool} (same {len(r.subset_files or [])} files)")
        if r.problems:
            r.check = "MISMATCH"
        elif r is ref:
            r.check = "OK (reference; matches synth)" if r.tool == "engine" else "OK (reference)"
        elif r.subset_files is not None:
            r.check = f"OK (subset of {len(r.subset_files)} files vs {ref.tool})"
        else:
            r.check = "OK"
    con.close()
    return ref.tool if ref is not None else None


# --- runs and report ----------------------------------------------------------------------------------------


def _file_bytes(f: TransformFile) -> int:
    return os.path.getsize(f.output_path) + (os.path.getsize(f.input_path) if f.input_path else 0)


def _pandas_subset(files: list[TransformFile], limit: int) -> list[TransformFile]:
    """Files taken round-robin over the jobs (so the joined / plain and gzip mix stays) up to ``limit`` bytes."""
    jobs: dict[str, list[TransformFile]] = {}
    for f in files:
        jobs.setdefault(f.output_file.rsplit("/", 1)[0], []).append(f)
    depth = max(map(len, jobs.values()), default=0)
    order = [fs[k] for k in range(depth) for fs in jobs.values() if k < len(fs)]
    chosen: list[TransformFile] = []
    total = 0
    for f in order:
        if chosen and total + _file_bytes(f) > limit:
            break
        chosen.append(f)
        total += _file_bytes(f)
    return chosen


def _command(tool: str, src: Path, dest: Path, files_from: Path | None) -> list[str]:
    if tool == "engine":
        # The documented command itself, not a wrapper, so the measured process is the engine's.
        return [sys.executable, "-m", "engine", "batch", str(src), str(dest), "--quiet"]
    cmd = [sys.executable, "-m", "benchmarks.batch_peers", tool, str(src), str(dest)]
    return cmd if files_from is None else [*cmd, "--files-from", str(files_from)]


def _wall(r: ToolResult, total_bytes: int) -> float | None:
    """Median wall seconds, extrapolated linearly to all bytes for a subset run."""
    if r.wall is None:
        return None
    return r.wall if r.subset_files is None else r.wall * total_bytes / r.input_bytes


def cpu_seconds(r: ToolResult, total_bytes: int) -> float | None:
    if r.failed:
        return None
    cpu = statistics.median(run.cpu_seconds for run in r.runs)
    return cpu if r.subset_files is None else cpu * total_bytes / r.input_bytes


def markdown_table(results: list[ToolResult], total_bytes: int) -> str:
    """tool, median wall s (min-max), MB/s, peak RSS MB, wall and CPU ratios to the engine, rows, check."""
    engine = next((r for r in results if r.tool == "engine" and not r.failed), None)
    engine_wall = _wall(engine, total_bytes) if engine else None
    engine_cpu = cpu_seconds(engine, total_bytes) if engine else None
    header = ["tool", "median wall s (min-max)", "MB/s", "peak RSS MB", "wall vs engine", "CPU s", "CPU vs engine"]
    header += ["CPU s per GB", "CPU / wall", "rows", "check"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    for r in results:
        wall, cpu = _wall(r, total_bytes), cpu_seconds(r, total_bytes)
        if wall is None or cpu is None:
            lines.append("| " + " | ".join([r.tool, "failed", *["-"] * 8, r.check]) + " |")
            continue
        star = "*" if r.subset_files is not None else ""
        walls = [run.wall_seconds for run in r.runs]
        shown = f"~{wall:.2f}*" if star else f"{wall:.2f}"
        if len(walls) > 1 and not star:
            shown += f" ({min(walls):.2f}-{max(walls):.2f})"
        vs = f"{wall / engine_wall:.2f}x{star}" if engine_wall and r.tool != "engine" else "-"
        cpu_vs = f"{cpu / engine_cpu:.2f}x{star}" if engine_cpu and r.tool != "engine" else "-"
        rows = f"{r.stats['rows']:,}" + (" (subset)" if star else "") if r.stats else "-"
        row = [r.tool, shown, f"{total_bytes / MB / wall:.1f}{star}", f"{r.peak_rss / MB:,.0f}{star}", vs]
        # CPU seconds per GB (1e9 bytes) of the job's input: a figure other machines can be compared on.
        per_gb = f"{cpu / (total_bytes / 1e9):.1f}{star}"
        row += [f"{cpu:.1f}{star}", cpu_vs, per_gb, f"{cpu / wall:.2f}{star}"]
        lines.append("| " + " | ".join([*row, rows, r.check]) + " |")
    return "\n".join(lines)


def _footnotes(results: list[ToolResult], total_bytes: int) -> list[str]:
    notes = [
        f"\\* {r.tool} ran on {len(r.subset_files):,} of the files, taken round-robin over the jobs "
        f"({r.input_bytes / MB:,.1f} MB, the --pandas-max-size limit) in {r.wall or 0:.2f} s; its wall and CPU "
        f"seconds are extrapolated linearly to {total_bytes / MB:,.1f} MB (start-up is scaled too, so slightly "
        "pessimistic), its peak RSS is the subset run's (it holds every row in memory, so it grows with the input) "
        "and its rows are checked against the engine's rows of the same files."
        for r in results
        if r.subset_files is not None and not r.failed
    ]
    for r in results:
        notes += [f"- {r.tool}: {p}" for p in r.problems]
        notes += [f"- {r.tool} (note, not a mismatch): {n}" for n in r.notes]
    return notes


def _result_json(r: ToolResult, total_bytes: int, engine_wall: float | None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "command": r.command,
        "runs": [vars(run) for run in r.runs],
        "input_bytes": r.input_bytes,
        "check": r.check,
        "problems": r.problems,
        "notes": r.notes,
        "stats": r.stats,
    }
    wall = _wall(r, total_bytes)
    if wall:
        out |= {
            "wall_seconds": round(wall, 3),
            "measured_wall_seconds": round(r.wall or 0.0, 3),
            "cpu_seconds": round(cpu_seconds(r, total_bytes) or 0.0, 3),
            "mb_per_s": round(total_bytes / MB / wall, 2),
            "peak_rss_bytes": r.peak_rss,
            "wall_vs_engine": round(wall / engine_wall, 3) if engine_wall and r.tool != "engine" else None,
            "extrapolated": r.subset_files is not None,
        }
    if r.subset_files is not None:
        out["subset"] = {"files": len(r.subset_files), "bytes": r.input_bytes, "first": r.subset_files[0]}
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.batch_bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="20MB", help=".out bytes to generate: 20MB, 1GB, ... (default 20MB)")
    parser.add_argument("--tools", help=f"comma-separated, from {','.join(DEFAULT_TOOLS)} (default: all)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per tool, interleaved; the median is reported")
    parser.add_argument("--json", type=Path, help="results file (default benchmarks/results/batch-SIZE-UTC.json)")
    parser.add_argument(
        "--pandas-max-size",
        default="2GB",
        help="above this many bytes read (.out + input) pandas runs on a subset this large and is extrapolated",
    )
    parser.add_argument("--data-root", type=Path, default=DEFAULT_ROOT, help="cache of generated trees and outputs")
    parser.add_argument("--keep-output", action="store_true", help="keep each tool's output dataset")
    args = parser.parse_args(argv)

    tools = [t.strip() for t in (args.tools or ",".join(DEFAULT_TOOLS)).split(",") if t.strip()]
    unknown = [t for t in tools if t not in DEFAULT_TOOLS]
    if unknown or not tools or args.repeat < 1:
        parser.error(f"unknown tools {unknown}" if unknown else "need at least one tool and --repeat >= 1")
    size = parse_size(args.size)
    label = size_label(args.size)
    pandas_max = parse_size(args.pandas_max_size)
    started = datetime.now(timezone.utc)
    t_start = time.perf_counter()

    def say(msg: str) -> None:
        print(f"[{time.perf_counter() - t_start:7.1f}s] {msg}", file=sys.stderr, flush=True)

    cached = (_tree_dir(size, args.data_root) / MARKER).is_file()
    say(f"{'reusing' if cached else 'generating'} the {label} CSV batch transform tree under {args.data_root}")
    tree = ensure_batch_data(size, args.data_root)
    marker = json.loads((tree / MARKER).read_text())
    records = marker["summary"]["records"]
    src = tree / "batch-capture"
    files = transform_files(str(src))
    out_bytes = sum(os.path.getsize(f.output_path) for f in files)
    in_bytes = sum(os.path.getsize(f.input_path) for f in files if f.input_path)
    total = out_bytes + in_bytes
    warm = warm_page_cache([Path(p) for f in files for p in (f.output_path, f.input_path) if p])
    say(
        f"{records:,} records in {len(files)} .out files ({out_bytes / MB:,.1f} MB) + their inputs "
        f"({in_bytes / MB:,.1f} MB on disk, {marker['input_uncompressed_bytes'] / MB:,.1f} MB uncompressed); "
        f"generated in {marker['generate_seconds']:.1f} s; page cache warmed in {warm:.1f} s"
    )

    work = args.data_root / "runs" / tree.name
    work.mkdir(parents=True, exist_ok=True)
    dests = {t: work / t for t in tools}
    results: list[ToolResult] = []
    for tool in tools:
        subset: list[TransformFile] | None = None
        files_from = None
        if tool == "pandas" and total > pandas_max:
            subset = _pandas_subset(files, pandas_max)
            files_from = work / "pandas-files.txt"
            files_from.write_text("".join(f"{f.output_file}\n" for f in subset))
        results.append(
            ToolResult(
                tool=tool,
                command=_command(tool, src, dests[tool], files_from),
                input_bytes=total if subset is None else sum(map(_file_bytes, subset)),
                subset_files=None if subset is None else [f.output_file for f in subset],
            )
        )

    for rep in range(args.repeat):
        for r in results:
            shutil.rmtree(dests[r.tool], ignore_errors=True)  # a fresh destination every run
            os.sync()  # flush the previous run's dirty pages now, so their writeback is not charged to this run
            run = run_process(r.command, work / f"{r.tool}-{rep}")
            if r.tool == "engine" and run.exit_code == 0:
                run.engine_report = engine_report(dests[r.tool])
            r.runs.append(run)
            what = f"{r.input_bytes / MB:,.1f} MB subset" if r.subset_files is not None else "all files"
            status = "ok" if run.exit_code == 0 else f"FAILED (exit {run.exit_code})"
            say(
                f"{r.tool} run {rep + 1}/{args.repeat} ({what}): {run.wall_seconds:.2f} s "
                f"({run.cpu_seconds:.2f} CPU s), peak RSS {run.peak_rss_bytes / MB:,.0f} MB, {status}"
            )

    say("checking outputs with DuckDB")
    ref = check_outputs(results, dests, marker)
    if not args.keep_output:
        for d in dests.values():
            shutil.rmtree(d, ignore_errors=True)

    table = markdown_table(results, total)
    footnotes = _footnotes(results, total)
    legend = (
        "wall s: whole process (interpreter start and imports included), median of the runs; MB/s over the bytes "
        f"read from disk: .out files + input files as stored ({out_bytes / MB:,.1f} + {in_bytes / MB:,.1f} MB, "
        "gzip inputs compressed); peak RSS: the process's own ru_maxrss; wall / CPU vs engine: the tool's median "
        "wall / CPU (user + system) seconds over the engine's (above 1: slower than the engine); CPU s per GB: "
        "CPU seconds per 1e9 bytes read (the same denominator for every tool); CPU / wall: cores kept busy. "
        "duckdb-natural, polars-natural: the predictions only (no line numbers, no input pairing), checked on "
        "output_file, inference_id, inference_time and output_data."
    )
    engine = next((r for r in results if r.tool == "engine" and not r.failed), None)
    engine_wall = _wall(engine, total) if engine else None
    ok = all(not r.failed and r.check.startswith("OK") for r in results)
    out_path = args.json or RESULTS / f"batch-{label}-{started:%Y%m%dT%H%M%SZ}.json"
    document = {
        "benchmark": "batch",
        "date": started.isoformat(timespec="seconds"),
        "total_seconds": round(time.perf_counter() - t_start, 1),
        "command": [
            Path(sys.executable).name,
            "-m",
            "benchmarks.batch_bench",
            *(sys.argv[1:] if argv is None else argv),
        ],
        "size": label,
        "size_bytes": size,
        "repeat": args.repeat,
        "data": {
            "tree": str(tree),
            "cached": cached,
            "records": records,
            "files": len(files),
            "out_bytes": out_bytes,
            "input_bytes": in_bytes,
            "bytes_read": total,
            **{k: v for k, v in marker.items() if k != "summary"},
        },
        "machine": machine(),
        "reference": ref,
        "ok": ok,
        "table_markdown": table,
        "footnotes": footnotes,
        "legend": legend,
        "tools": {r.tool: _result_json(r, total, engine_wall) for r in results},
    }
    # Results first: printing can fail (a closed pipe) and must not lose a long run.
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(document, indent=2) + "\n")

    print(
        f"\n## batch, {label}: {records:,} records, {len(files)} .out files ({out_bytes / MB:,.1f} MB) + inputs "
        f"({in_bytes / MB:,.1f} MB on disk); {os.cpu_count()} CPUs; median of {args.repeat} run(s)\n"
    )
    print(table)
    if footnotes:
        print("\n" + "\n".join(footnotes))
    print("\n" + legend)
    say(f"{'OK' if ok else 'MISMATCH or FAILURE'}; results written to {out_path}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
