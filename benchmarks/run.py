"""End-to-end benchmark: capture-engine against DuckDB, polars and pandas on the same synth capture tree.

    python -m benchmarks.run --size 1GB [--job realtime|decode] [--tools engine,duckdb,...] [--repeat N] [--json PATH]

Two jobs. ``realtime`` (the default): the envelope job, ``capture-engine realtime SRC DEST`` against the peers of
``benchmarks/realtime_peers.py`` on synth's default payload mix. ``decode``: payload decoding,
``capture-engine realtime SRC DEST --decode`` against the peers of ``benchmarks/decode_peers.py`` (DuckDB,
polars) on a tree of plain CSV payloads, one output row per payload record.

Each tool runs in its own process on a fresh destination; wall time is measured around the process (interpreter
start and imports included, as a user would see it) and peak RSS is the child's own ``ru_maxrss`` from
``os.wait4``. Then every tool's output is read back with DuckDB and compared with the reference (the engine, or
the first tool if the engine is not run): rows per partition, and the row count plus order-independent hashes
over all rows. The reference itself is checked against the synth ground truth (events per UTC hour; for
``decode`` also the payload records in total, and no rejected event). Any failure or mismatch makes the exit
status non-zero.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Final

from benchmarks import decode_peers
from benchmarks._harness import (
    MB,
    RESULTS,
    Hash,
    ToolResult,
    cpu_seconds,
    engine_report,
    machine,
    run_process,
    size_label,
    warm_page_cache,
)
from benchmarks.data import DEFAULT_ROOT, Kind, capture_files, ensure_data, is_complete, load_marker
from benchmarks.realtime_peers import NATURAL, PARTITION_KEYS, TOOLS
from engine.options import parse_size
from engine.tables import table_spec

# Each peer twice: doing everything the engine does (line numbers included), and as a user would write it.
DEFAULT_TOOLS: Final = ("engine", "duckdb", "duckdb-natural", "polars", "polars-natural", "pandas")
_LAYOUT: Final = re.compile(r"endpoint=[^/]+/variant=[^/]+/year=\d{4}/month=\d{2}/day=\d{2}/hour=\d{2}/[^/]+\.parquet")
_DATA_COLUMNS: Final = (
    "event_id, inference_id, epoch_ms(inference_time), event_version, input_content_type, input_encoding, "
    "input_data, output_content_type, output_encoding, output_data, custom_attributes, source_file, source_line"
)


@dataclass(frozen=True)
class Job:
    """What is benchmarked: the engine's flags, the peers, the input tree kind and how outputs are checked."""

    name: str
    kind: Kind  # the synth tree (benchmarks.data)
    peers: str  # the module running a peer: python -m PEERS TOOL SRC DEST [--files-from LIST]
    tools: tuple[str, ...]
    default_tools: tuple[str, ...]
    engine_flags: tuple[str, ...]
    file_schema: Callable[[], Any]  # the contract's Parquet file schema (pyarrow.Schema)
    hashes: tuple[Hash, ...]  # most telling first: the first one that differs is reported


def _decoded_file_schema() -> Any:
    import pyarrow as pa

    envelope = table_spec("capture").file_schema
    fields = [f for f in envelope if f.name not in ("input_data", "output_data")]
    fields.append(pa.field("record_index", pa.int64()))
    fields += [pa.field(n, pa.float64()) for n in decode_peers.decoded_columns() if n[0] == "f" and n[1:].isdigit()]
    fields.append(pa.field("prediction", pa.float64()))
    return pa.schema(fields)


_DECODED_COLUMNS: Final = ", ".join(
    "epoch_ms(inference_time)" if c == "inference_time" else c for c in decode_peers.decoded_columns()
)
JOBS: Final[dict[str, Job]] = {
    "realtime": Job(
        name="realtime",
        kind="mixed",
        peers="benchmarks.realtime_peers",
        tools=tuple(TOOLS),
        default_tools=DEFAULT_TOOLS,
        engine_flags=(),
        file_schema=lambda: table_spec("capture").file_schema,
        hashes=(
            Hash(
                "key_hash",
                "hash(event_id, epoch_ms(inference_time), source_line)",
                "hash of (event_id, inference_time ms, source_line) differs from {ref}",
            ),
            Hash(
                "row_hash",
                f"hash({_DATA_COLUMNS}, {', '.join(PARTITION_KEYS)})",
                "same keys as {ref} but other column values differ (hash over every column)",
            ),
        ),
    ),
    "decode": Job(
        name="decode",
        kind="csv",
        peers="benchmarks.decode_peers",
        tools=tuple(decode_peers.TOOLS),
        default_tools=("engine", "duckdb", "duckdb-natural", "polars", "polars-natural"),
        engine_flags=("--decode",),
        file_schema=_decoded_file_schema,
        hashes=(
            Hash("key_hash", "hash(event_id, record_index)", "hash of (event_id, record_index) differs from {ref}"),
            Hash(
                "value_hash",
                "hash(event_id, record_index, prediction, f0, f68)",
                "same (event_id, record_index) keys as {ref} but prediction, f0 or f68 differ",
            ),
            Hash(
                "row_hash",
                f"hash({_DECODED_COLUMNS}, {', '.join(PARTITION_KEYS)})",
                "same keys, prediction, f0 and f68 as {ref} but other column values differ (hash over every column)",
            ),
        ),
    ),
}


def _tool_command(tool: str, src: Path, dest: Path, files_from: Path | None, job: Job = JOBS["realtime"]) -> list[str]:
    if tool == "engine":
        # The documented command itself, not a wrapper, so the measured process is the engine's.
        return [sys.executable, "-m", "engine", "realtime", str(src), str(dest), *job.engine_flags, "--quiet"]
    cmd = [sys.executable, "-m", job.peers, tool, str(src), str(dest)]
    if files_from is not None:
        cmd += ["--files-from", str(files_from)]
    return cmd


def _pandas_subset(files: list[Path], limit: int) -> list[Path]:
    """The longest prefix of the (sorted) files totalling at most ``limit`` bytes; at least one file."""
    chosen: list[Path] = []
    total = 0
    for p in files:
        size = p.stat().st_size
        if chosen and total + size > limit:
            break
        chosen.append(p)
        total += size
    return chosen


# --- output check -------------------------------------------------------------------------------------------


def _layout_problems(dest: Path) -> tuple[list[str], Path | None]:
    """Parquet files outside the hive layout (zero-padded keys), and one data file to read the schema from."""
    problems: list[str] = []
    sample: Path | None = None
    for p in sorted(dest.rglob("*.parquet")):
        rel = p.relative_to(dest).as_posix()
        if rel.startswith("_"):  # _rejects/, _temporary/: not data, and readers skip them
            continue
        if _LAYOUT.fullmatch(rel):
            sample = sample or p
        elif len(problems) < 5:
            problems.append(f"file outside the hive layout: {rel}")
    if sample is None:
        problems.append("no data files under endpoint=*/variant=*/year=*/month=*/day=*/hour=*/")
    return problems, sample


def _other_schemas(dest: Path, sample: Path) -> list[str]:
    """Data files whose column names differ from the sample's (the decode job writes a schema per variant)."""
    import pyarrow.parquet as pq

    names = pq.read_schema(sample).names
    odd = [
        p.relative_to(dest).as_posix()
        for p in sorted(dest.glob("endpoint=*/**/*.parquet"))
        if pq.read_schema(p).names != names
    ]
    if not odd:
        return []
    return [f"{len(odd)} data files have other columns than {sample.relative_to(dest).as_posix()}, e.g. {odd[0]}"]


def _schema_notes(sample: Path, job: Job = JOBS["realtime"]) -> tuple[list[str], list[str]]:
    """(problems, notes): column names must match the contract; type differences are reported, not failed."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    want = job.file_schema()
    got = pq.read_schema(sample)
    problems, notes = [], []
    if got.names != want.names:
        problems.append(f"file columns {got.names} differ from the contract's {want.names}")
    for f in got:
        if f.name not in want.names:
            continue
        expected = want.field(f.name).type
        # large_string is how Arrow-based writers tag the same Parquet BYTE_ARRAY/UTF8 column.
        same = f.type == expected or (f.type == pa.large_string() and expected == pa.string())
        if not same:
            notes.append(f"{f.name} is {f.type} (contract {expected})")
    return problems, notes


def _stats(con: Any, dest: Path, subset: list[str] | None, job: Job = JOBS["realtime"]) -> dict[str, Any]:
    """Row count, hashes and rows per partition of a dataset, optionally only rows from ``subset`` files.

    The decode job also counts, per partition, the rows with record_index 0: one per event.
    """
    rel = (
        f"read_parquet('{dest.as_posix()}/endpoint=*/**/*.parquet', hive_partitioning = true, "
        "hive_types_autocast = false)"  # keep '01' a string: zero padding is part of what is checked
    )
    where = ""
    if subset is not None:
        con.execute("CREATE OR REPLACE TEMP TABLE subset AS SELECT unnest(?::VARCHAR[]) AS uri", [subset])
        where = "WHERE source_file IN (SELECT uri FROM subset)"
    # Sums of 64-bit hashes as HUGEINT: order-independent, and unlike XOR a duplicated row does not cancel out.
    sums = ", ".join(f"coalesce(sum({h.sql}::HUGEINT), 0)" for h in job.hashes)
    rows, *hashes = con.execute(f"SELECT count(*), {sums} FROM {rel} {where}").fetchone()
    decode = job.name == "decode"
    counts = "count(*), count(*) FILTER (WHERE record_index = 0)" if decode else "count(*)"
    parts = con.execute(
        f"SELECT {', '.join(PARTITION_KEYS)}, {counts} FROM {rel} {where} GROUP BY ALL ORDER BY ALL"
    ).fetchall()
    n_keys = len(PARTITION_KEYS)

    def key(p: tuple[Any, ...]) -> str:
        return "/".join(f"{k}={v}" for k, v in zip(PARTITION_KEYS, p[:n_keys], strict=True))

    stats: dict[str, Any] = {"rows": rows, **{h.key: str(v) for h, v in zip(job.hashes, hashes, strict=True)}}
    stats["partitions"] = {key(p): p[n_keys] for p in parts}
    if decode:
        stats["event_partitions"] = {key(p): p[n_keys + 1] for p in parts}
    return stats


def without_source_line(job: Job) -> Job:
    """The job's output check on every column but source_line (for the peers that write it as NULL)."""
    hashes = tuple(
        Hash(h.key, h.sql.replace(", source_line", "").replace("source_line, ", ""), h.differs + " (no source_line)")
        for h in job.hashes
    )
    return dataclasses.replace(job, hashes=hashes)


def _compare(got: dict[str, Any], want: dict[str, Any], ref: str, job: Job = JOBS["realtime"]) -> list[str]:
    problems = []
    if got["rows"] != want["rows"]:
        problems.append(f"{got['rows']:,} rows, {ref} has {want['rows']:,}")
    differs = next((h for h in job.hashes if got[h.key] != want[h.key]), None)
    if differs is not None:
        problems.append(differs.differs.format(ref=ref))
    gp, wp = got["partitions"], want["partitions"]
    diff = sorted(k for k in gp.keys() | wp.keys() if gp.get(k) != wp.get(k))
    if diff:
        shown = "; ".join(f"{k}: {gp.get(k, 0)} vs {wp.get(k, 0)}" for k in diff[:3])
        problems.append(f"{len(diff)} partitions differ in rows ({shown}{'; ...' if len(diff) > 3 else ''})")
    return problems


def _ground_truth(stats: dict[str, Any], summary: dict[str, Any], job: Job = JOBS["realtime"]) -> list[str]:
    """What synth says it wrote: events in total and per UTC hour (every event is valid, so each is a row).

    Decode job: a row per payload record (synth's ``records``), and the rows with record_index 0 are the events.
    """
    problems = []
    events = stats["partitions"]
    if job.name == "decode":
        if stats["rows"] != summary["records"]:
            problems.append(f"{stats['rows']:,} rows but synth wrote {summary['records']:,} payload records")
        events = stats["event_partitions"]
        if sum(events.values()) != summary["events"]:
            problems.append(
                f"{sum(events.values()):,} rows with record_index 0 but synth wrote {summary['events']:,} events"
            )
    elif stats["rows"] != summary["events"]:
        problems.append(f"{stats['rows']:,} rows but synth wrote {summary['events']:,} events")
    per_hour: dict[str, int] = {}
    for key, n in events.items():
        v = dict(kv.split("=", 1) for kv in key.split("/"))
        hour = f"{v['year']}-{v['month']}-{v['day']}T{v['hour']}"
        per_hour[hour] = per_hour.get(hour, 0) + n
    expected = {h: n for h, n in summary["events_per_hour"].items() if n}
    if per_hour != expected:
        problems.append(f"rows per UTC hour {per_hour} differ from synth's events per hour {expected}")
    return problems


def _rejects_problems(con: Any, dest: Path) -> list[str]:
    """Events a tool moved to ``_rejects`` (the decode job's clean CSV input should have none), by reason."""
    if not any((dest / "_rejects").glob("**/*.parquet")):
        return []
    rows = con.execute(
        f"""SELECT reason, count(*), any_value(source_file || ':' || source_line), any_value(detail)
            FROM read_parquet('{dest.as_posix()}/_rejects/**/*.parquet', hive_partitioning = false)
            GROUP BY ALL ORDER BY 2 DESC"""
    ).fetchall()
    return [
        f"{n:,} events rejected to _rejects as {reason!r}, e.g. {where}: {detail}" for reason, n, where, detail in rows
    ]


def _diff_detail(con: Any, got: Path, want: Path, ref: str) -> list[str]:
    """Which rows and columns differ from the reference, joined on (event_id, record_index), with an example each."""
    cols = [*decode_peers.decoded_columns(), *PARTITION_KEYS]

    def rel(dest: Path) -> str:
        return (
            f"read_parquet('{dest.as_posix()}/endpoint=*/**/*.parquet', hive_partitioning = true, "
            "hive_types_autocast = false)"
        )

    joined = (
        f"FROM {rel(got)} g FULL OUTER JOIN {rel(want)} w "
        "ON g.event_id = w.event_id AND g.record_index = w.record_index"
    )
    both = "g.event_id IS NOT NULL AND w.event_id IS NOT NULL"
    counts = ", ".join(f"count(*) FILTER (WHERE {both} AND g.{c} IS DISTINCT FROM w.{c})" for c in cols)
    only_got, only_want, *per_col = con.execute(
        f"SELECT count(*) FILTER (WHERE w.event_id IS NULL), count(*) FILTER (WHERE g.event_id IS NULL), {counts} "
        + joined
    ).fetchone()
    out = []
    for n, side, other in ((only_got, "g", "w"), (only_want, "w", "g")):
        if n:
            example = con.execute(
                f"SELECT {side}.event_id, {side}.record_index, {side}.source_file, {side}.source_line {joined} "
                f"WHERE {other}.event_id IS NULL LIMIT 1"
            ).fetchone()
            where = "only here" if side == "g" else f"only in {ref}"
            out.append(f"{n:,} (event_id, record_index) rows {where}, e.g. {example}")
    for c, n in zip(cols, per_col, strict=True):
        if n:
            e = con.execute(
                f"SELECT g.event_id, g.record_index, g.source_file, g.source_line, g.{c}, w.{c} {joined} "
                f"WHERE {both} AND g.{c} IS DISTINCT FROM w.{c} LIMIT 1"
            ).fetchone()
            out.append(
                f"column {c} differs on {n:,} rows, e.g. event {e[0]} record {e[1]} ({e[2]} line {e[3]}): "
                f"{e[4]!r} here, {e[5]!r} in {ref}"
            )
    return out[:12]


def check_outputs(
    results: list[ToolResult], dests: dict[str, Path], summary: dict[str, Any], job: Job = JOBS["realtime"]
) -> str | None:
    """Fill in each result's check; returns the reference tool (None if no full run succeeded)."""
    import duckdb

    decode = job.name == "decode"
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    for r in results:
        if r.failed:
            r.check = "FAILED"
            r.problems.append("the tool exited non-zero: " + (r.runs[-1].stderr_tail if r.runs else "not run"))
            continue
        layout, sample = _layout_problems(dests[r.tool])
        r.problems += layout
        if decode:
            r.problems += _rejects_problems(con, dests[r.tool])
        if sample is not None:
            names, notes = _schema_notes(sample, job)
            r.problems += names
            r.notes += notes
            if decode:
                r.problems += _other_schemas(dests[r.tool], sample)
            uris = None if r.subset_files is None else ["file://" + f for f in r.subset_files]
            r.stats = _stats(con, dests[r.tool], uris, without_source_line(job) if r.tool in NATURAL else job)

    full = [r for r in results if r.stats is not None and r.subset_files is None and r.tool not in NATURAL]
    ordered = sorted(full, key=lambda r: r.tool != "engine")  # the engine is the reference when it ran
    ref = ordered[0] if ordered else None
    if ref is not None and ref.stats is not None:
        ref.problems += [f"ground truth: {p}" for p in _ground_truth(ref.stats, summary, job)]
    for r in results:
        if r.failed or r.stats is None:
            if not r.failed:
                r.check = "MISMATCH"
            continue
        if ref is None or ref.stats is None:
            # Only a subset run succeeded: nothing full-size to compare it with, which is not a mismatch.
            r.check = "UNCHECKED (no full-size run to compare with)" if not r.problems else "MISMATCH"
            continue
        if r is ref:
            pass
        elif r.tool in NATURAL:
            natural = without_source_line(job)
            differs = _compare(r.stats, _stats(con, dests[ref.tool], None, natural), ref.tool, natural)
            r.problems += differs
        elif r.subset_files is None:
            differs = _compare(r.stats, ref.stats, ref.tool, job)
            r.problems += differs
            if differs and decode:
                r.problems += _diff_detail(con, dests[r.tool], dests[ref.tool], ref.tool)
        else:
            want = _stats(con, dests[ref.tool], ["file://" + f for f in r.subset_files], job)
            r.problems += _compare(r.stats, want, f"{ref.tool} (same {len(r.subset_files)} files)", job)
        if r.problems:
            r.check = "MISMATCH"
        elif r is ref:
            r.check = "OK (reference; matches synth ground truth)"
        elif r.subset_files is not None:
            r.check = f"OK (subset of {len(r.subset_files)} files vs {ref.tool})"
        else:
            r.check = "OK"
    con.close()
    return ref.tool if ref is not None else None


# --- report -------------------------------------------------------------------------------------------------


def _fmt_row(r: ToolResult, capture_bytes: int, engine_wall: float | None) -> list[str]:
    if r.failed:
        return [r.tool, "failed", "-", "-", "-", "-", r.check]
    wall = r.wall or 0.0
    star = ""
    if r.subset_files is not None:
        # Linear extrapolation from the subset's throughput to the whole input.
        wall = wall * capture_bytes / r.input_bytes
        star = "*"
    rate = capture_bytes / MB / wall if wall else float("inf")
    speedup = f"{wall / engine_wall:.1f}x{star}" if engine_wall and r.tool != "engine" else "-"
    rows = f"{r.stats['rows']:,}" if r.stats else "-"
    if r.subset_files is not None:
        rows += " (subset)"
    shown = f"{'~' if star else ''}{wall:.2f}{star}"
    if len(r.runs) > 1 and not star:
        walls = [run.wall_seconds for run in r.runs]
        shown += f" ({min(walls):.2f}-{max(walls):.2f})"
    return [
        r.tool,
        shown,
        f"{rate:.1f}{star}",
        f"{r.peak_rss / MB:,.0f}{star}",
        speedup,
        rows,
        r.check,
    ]


def markdown_table(results: list[ToolResult], capture_bytes: int) -> str:
    """The results table, CPU seconds (total, per GB of input, per wall second) and their ratio to the engine's."""
    engine = next((r for r in results if r.tool == "engine" and not r.failed), None)
    engine_wall = engine.wall if engine else None
    engine_cpu = cpu_seconds(engine) if engine else None
    header = [
        "tool",
        "wall s" + (" (min-max)" if any(len(r.runs) > 1 for r in results) else ""),
        "MB/s",
        "peak RSS MB",
        "engine speed-up",
        "rows",
        "check",
    ]
    # CPU time is what a busy neighbour on the machine disturbs least; CPU seconds per GB compare across
    # machines; CPU/wall says how many cores a tool kept busy (2 at most here).
    header[5:5] = ["CPU s", "CPU s/GB", "CPU/wall", "engine CPU ratio"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    for r in results:
        row = _fmt_row(r, capture_bytes, engine_wall)
        c = cpu_seconds(r) if r.subset_files is None else None
        ratio = f"{c / engine_cpu:.1f}x" if c and engine_cpu and r.tool != "engine" else "-"
        per_gb = f"{c / (capture_bytes / 1e9):.1f}" if c is not None and capture_bytes else "-"
        busy = f"{c / r.wall:.2f}" if c is not None and r.wall else "-"
        row[5:5] = [f"{c:.1f}" if c is not None else "-", per_gb, busy, ratio]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def _footnotes(results: list[ToolResult], capture_bytes: int, ref: str | None) -> list[str]:
    """How to read extrapolated rows, then every problem and note of the output check."""
    notes = [
        f"\\* {r.tool} ran on the first {len(r.subset_files):,} files in sorted path order "
        f"({r.input_bytes / MB:,.1f} MB, the --pandas-max-size limit) in {r.wall or 0:.2f} s; its wall time "
        f"and speed-up are extrapolated linearly to {capture_bytes / MB:,.1f} MB (its start-up, under a second, "
        "is scaled too, so slightly pessimistic), its peak RSS is that "
        "of the subset run (it holds every row in memory, so it grows with the input), and its rows are "
        f"checked against the {ref or 'reference'} rows from the same files."
        for r in results
        if r.subset_files is not None and not r.failed
    ]
    for r in results:
        notes += [f"- {r.tool}: {p}" for p in r.problems]
        notes += [f"- {r.tool} (note, not a mismatch): {n}" for n in r.notes]
    return notes


def _result_json(r: ToolResult, capture_bytes: int, engine_wall: float | None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "command": r.command,
        "runs": [vars(run) for run in r.runs],
        "input_bytes": r.input_bytes,
        "check": r.check,
        "problems": r.problems,
        "notes": r.notes,
        "stats": r.stats,
    }
    if not r.failed and r.wall:
        wall = r.wall if r.subset_files is None else r.wall * capture_bytes / r.input_bytes
        out |= {
            "wall_seconds": round(wall, 3),
            "measured_wall_seconds": round(r.wall, 3),
            "mb_per_s": round(capture_bytes / MB / wall, 2),
            "peak_rss_bytes": r.peak_rss,
            "engine_speedup": round(wall / engine_wall, 2) if engine_wall and r.tool != "engine" else None,
            "extrapolated": r.subset_files is not None,
        }
    if r.subset_files is not None:
        out["subset"] = {"files": len(r.subset_files), "bytes": r.input_bytes, "first": r.subset_files[0]}
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="20MB", help="capture bytes to generate: 20MB, 1GB, ... (default 20MB)")
    parser.add_argument(
        "--job",
        choices=[*sorted(JOBS), "merge"],
        default="realtime",
        help="realtime: the envelope job (default); decode: --decode of CSV payloads, one row per record; "
        "merge: predictions x ground truth (benchmarks/merge_peers.py)",
    )
    parser.add_argument(
        "--rows", type=int, help="merge: prediction rows (default: --size of capture divided by ~566 bytes per event)"
    )
    parser.add_argument(
        "--tools",
        help="comma-separated; default and choices: "
        + "; ".join(f"{j.name}: {','.join(j.default_tools)} from {', '.join(j.tools)}" for j in JOBS.values()),
    )
    parser.add_argument("--repeat", type=int, default=1, help="runs per tool, interleaved; the median is reported")
    parser.add_argument("--json", type=Path, help="results file (default benchmarks/results/JOB-SIZE-UTC.json)")
    parser.add_argument(
        "--pandas-max-size",
        default="200MB",
        help="above this input size pandas runs on a prefix of the files this large and is extrapolated",
    )
    parser.add_argument("--data-root", type=Path, default=DEFAULT_ROOT, help="cache of generated trees and outputs")
    parser.add_argument("--keep-output", action="store_true", help="keep each tool's output dataset")
    args = parser.parse_args(argv)
    if args.job == "merge":
        from benchmarks.merge_peers import bench

        return bench(args)

    job = JOBS[args.job]
    tools = [t.strip() for t in (args.tools or ",".join(job.default_tools)).split(",") if t.strip()]
    unknown = [t for t in tools if t not in job.tools]
    if unknown or not tools or args.repeat < 1:
        parser.error(f"unknown tools {unknown}" if unknown else "need at least one tool and --repeat >= 1")
    size = parse_size(args.size)
    label = size_label(args.size)
    pandas_max = parse_size(args.pandas_max_size)
    started = datetime.now(timezone.utc)
    t_start = time.perf_counter()

    def say(msg: str) -> None:
        print(f"[{time.perf_counter() - t_start:7.1f}s] {msg}", file=sys.stderr, flush=True)

    tree_exists = is_complete(size, args.data_root, job.kind)
    what = "synth capture tree" if job.kind == "mixed" else f"{job.kind}-only synth capture tree"
    say(f"{'reusing' if tree_exists else 'generating'} the {label} {what} under {args.data_root}")
    tree = ensure_data(size, args.data_root, job.kind)
    marker = load_marker(tree)
    summary = marker["summary"]
    capture_root = tree / "capture"
    files = capture_files(capture_root)
    capture_bytes = sum(p.stat().st_size for p in files)
    say(
        f"{summary['events']:,} events in {len(files):,} files, {capture_bytes / MB:,.1f} MB "
        f"(generated in {marker['generate_seconds']:.1f} s); page cache warmed in {warm_page_cache(files):.1f} s"
    )

    work = args.data_root / "runs" / tree.name
    work.mkdir(parents=True, exist_ok=True)
    dests = {t: work / t for t in tools}
    results: list[ToolResult] = []
    for tool in tools:
        subset: list[Path] | None = None
        files_from: Path | None = None
        if tool == "pandas" and capture_bytes > pandas_max:
            subset = _pandas_subset(files, pandas_max)
            files_from = work / "pandas-files.txt"
            files_from.write_text("".join(f"{p}\n" for p in subset))
        input_bytes = capture_bytes if subset is None else sum(p.stat().st_size for p in subset)
        results.append(
            ToolResult(
                tool=tool,
                command=_tool_command(tool, capture_root, dests[tool], files_from, job),
                input_bytes=input_bytes,
                subset_files=None if subset is None else [str(p) for p in subset],
            )
        )

    for rep in range(args.repeat):
        for r in results:
            shutil.rmtree(dests[r.tool], ignore_errors=True)  # a fresh destination every run
            # Flush the previous run's dirty pages now, so their writeback is not charged to this run.
            os.sync()
            run = run_process(r.command, work / f"{r.tool}-{rep}")
            if r.tool == "engine" and run.exit_code == 0:
                run.engine_report = engine_report(dests[r.tool])
            r.runs.append(run)
            what = f"{r.input_bytes / MB:,.1f} MB subset" if r.subset_files is not None else "all files"
            status = "ok" if run.exit_code == 0 else f"FAILED (exit {run.exit_code})"
            say(
                f"{r.tool} run {rep + 1}/{args.repeat} ({what}): {run.wall_seconds:.2f} s "
                f"({run.cpu_seconds:.2f} CPU s), "
                f"peak RSS {run.peak_rss_bytes / MB:,.0f} MB, {status}"
            )

    say("checking outputs with DuckDB")
    ref = check_outputs(results, dests, summary, job)
    if not args.keep_output:
        for d in dests.values():
            shutil.rmtree(d, ignore_errors=True)

    table = markdown_table(results, capture_bytes)
    footnotes = _footnotes(results, capture_bytes, ref)
    legend = (
        "wall s: whole process (interpreter start and imports included); MB/s over the capture bytes; "
        "peak RSS: the process's own ru_maxrss; engine speed-up: tool wall / engine wall."
        + (
            " CPU s: median user + system seconds; engine CPU ratio: tool CPU s / engine CPU s."
            if job.name == "decode"
            else ""
        )
    )
    engine = next((r for r in results if r.tool == "engine" and not r.failed), None)
    engine_wall = engine.wall if engine else None
    ok = all(not r.failed and not r.check.startswith("MISMATCH") for r in results)
    finished = datetime.now(timezone.utc)
    out_path = args.json or RESULTS / f"{job.name}-{label}-{started:%Y%m%dT%H%M%SZ}.json"
    document = {
        "benchmark": job.name,
        "date": started.isoformat(timespec="seconds"),
        "total_seconds": round((finished - started).total_seconds(), 1),
        "command": [Path(sys.executable).name, "-m", "benchmarks.run", *(sys.argv[1:] if argv is None else argv)],
        "size": label,
        "size_bytes": size,
        "repeat": args.repeat,
        "data": {
            "tree": str(tree),
            "cached": tree_exists,
            "events": summary["events"],
            **({"records": summary["records"], "kind": job.kind} if job.name == "decode" else {}),
            "files": len(files),
            "capture_bytes": capture_bytes,
            "generate_seconds": marker["generate_seconds"],
            "synth_options": marker["options"],
        },
        "machine": machine(),
        "reference": ref,
        "ok": ok,
        "table_markdown": table,
        "footnotes": footnotes,
        "legend": legend,
        "tools": {r.tool: _result_json(r, capture_bytes, engine_wall) for r in results},
    }
    # Results first: printing can fail (a closed pipe) and must not lose a long run.
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(document, indent=2) + "\n")

    print(
        f"\n## {job.name}, {label}: {capture_bytes / MB:,.1f} MB of capture, {summary['events']:,} events"
        + (f" ({summary['records']:,} payload records)" if job.name == "decode" else "")
        + f", {len(files):,} files; {os.cpu_count()} CPUs; median of {args.repeat} run(s)\n"
    )
    print(table)
    if footnotes:
        print("\n" + "\n".join(footnotes))
    print("\n" + legend)
    say(f"{'OK' if ok else 'MISMATCH or FAILURE'}; results written to {out_path}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
