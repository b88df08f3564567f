"""The merge benchmark: ``capture-engine merge`` against the same join written with DuckDB and polars.

    python -m benchmarks.run --job merge --rows 2000000 [--tools engine,duckdb,polars] [--repeat 3]
    python -m benchmarks.merge_peers {duckdb,polars}[-natural] PREDICTIONS GROUND_TRUTH DEST   (one peer, one process)

Data (generated once, cached under ``benchmarks/.data/merge-...``): a synth capture tree of ROWS events over 6 hours,
3 endpoints x 2 variants, decoded by ``capture-engine realtime`` into the prediction dataset (the capture itself is
then deleted), and its ground truth: 90% of the events labelled, 0-6 hours late, CSV and JSON labels (multi-record
events carry one value per record), plus a relabelling of every 50th label one hour after it was first collected
(so duplicates exist and the latest must win).

``duckdb-natural`` and ``polars-natural`` are the join as a user writes it: no line number per label object
(``label_line`` NULL, so no window over each file), checked on every other column.

Every tool does the same job: read the predictions (Parquet) and every label of the window (JSON Lines), keep the
latest label per key (by hour folder, object key, line), join on ``coalesce(inference_id, event_id)``, decode the
label (one CSV line or ``{"label": x}``; null otherwise), and write prediction columns + label_data,
label_encoding, label, label_value, label_file, label_hour, label_line as hive Parquet by endpoint, variant and UTC
hour (zstd). Then DuckDB reads every output back: rows must equal the labels synth wrote (each labels one event),
and the per-partition counts and an order-independent hash over (key, label_data, label, label_file, label_line,
label_hour) must agree with the engine's.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Final

__all__ = ["TOOLS", "bench", "ensure_merge_data", "main"]

logger = logging.getLogger(__name__)

SEED: Final = 1
HOURS: Final = 6
ENDPOINTS: Final = 3
VARIANTS: Final = 2
RELABEL_EVERY: Final = 50
START: Final = datetime(2026, 11, 1, 0, tzinfo=timezone.utc)
BYTES_PER_EVENT: Final = 566  # synth capture bytes per event (default mix): --size maps to rows with this
PARTITION_KEYS: Final = ("endpoint", "variant", "year", "month", "day", "hour")
MARKER: Final = "_COMPLETE.json"
_GT_GLOB: Final = "*/*/*/*/*.jsonl"  # yyyy/mm/dd/hh/{name}.jsonl under the ground-truth root


# --- data ---------------------------------------------------------------------------------------------------


def _data_dir(rows: int, root: Path) -> Path:
    return root / f"merge-{rows}r-seed{SEED}-h{HOURS}-e{ENDPOINTS}-v{VARIANTS}"


def _relabel(gt_root: Path) -> int:
    """Every RELABEL_EVERY-th label again, its value flipped, one hour after it was collected: the later wins."""
    written = 0
    for path in sorted(gt_root.glob(_GT_GLOB)):
        lines = path.read_bytes().splitlines()[::RELABEL_EVERY]
        if not lines:
            continue
        y, m, d, h = (int(p) for p in path.parent.relative_to(gt_root).parts)
        later = datetime(y, m, d, h, tzinfo=timezone.utc) + timedelta(hours=1)
        out = gt_root / f"{later:%Y/%m/%d/%H}" / f"zz-relabel-{path.stem}.jsonl"
        out.parent.mkdir(parents=True, exist_ok=True)
        flipped = []
        for line in lines:  # data preparation, not measured: a loop per label is fine here
            rec = json.loads(line)
            rec["groundTruthData"]["data"] = rec["groundTruthData"]["data"].translate(str.maketrans("01", "10"))
            flipped.append(json.dumps(rec, separators=(",", ":")))
        out.write_text("\n".join(flipped) + "\n")
        written += len(flipped)
    return written


def ensure_merge_data(rows: int, root: Path) -> Path:
    """The folder with ``predictions/`` (a realtime dataset of `rows` rows) and ``ground-truth/``; cached."""
    from engine.jobs.realtime import run_realtime
    from engine.synth import SynthOptions, synth

    tree = _data_dir(rows, root)
    if (tree / MARKER).is_file():
        return tree
    shutil.rmtree(tree, ignore_errors=True)
    partial = root / f"{tree.name}.partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    t0 = time.perf_counter()
    options = SynthOptions(records=rows, hours=HOURS, endpoints=ENDPOINTS, variants=VARIANTS, seed=SEED, start=START)
    summary = synth(str(partial / "sample"), options)
    report = run_realtime(summary.capture_root, str(partial / "predictions"))
    if report.rows_written != rows:
        raise RuntimeError(f"realtime wrote {report.rows_written} rows, expected {rows}")
    (partial / "sample" / "ground-truth").rename(partial / "ground-truth")
    shutil.rmtree(partial / "sample")  # the capture JSONL is not an input of the merge
    relabels = _relabel(partial / "ground-truth")
    marker = {
        "predictions": rows,
        "labels": summary.labels + relabels,
        "relabels": relabels,
        "expected_matched": summary.labels,
        "label_files": len(list((partial / "ground-truth").glob(_GT_GLOB))),
        "label_bytes": sum(p.stat().st_size for p in (partial / "ground-truth").glob(_GT_GLOB)),
        "prediction_bytes": sum(p.stat().st_size for p in (partial / "predictions").rglob("*.parquet")),
        "generate_seconds": round(time.perf_counter() - t0, 1),
    }
    (partial / MARKER).write_text(json.dumps(marker, indent=2))
    partial.rename(tree)
    return tree


# --- peers --------------------------------------------------------------------------------------------------


def _sql(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def run_duckdb(predictions: str, ground_truth: str, dest: str, *, label_line: bool = True) -> None:
    """`label_line`: number each label's line in its object (a window per file); without it, as a user choosing
    DuckDB writes the join, the column is NULL (the global row number still picks the latest label)."""
    import duckdb

    spill = tempfile.mkdtemp(prefix="duckdb-spill-")
    try:
        con = duckdb.connect()
        con.execute("SET TimeZone = 'UTC'")
        con.execute(f"SET temp_directory = {_sql(spill)}")
        columns = (
            "{'groundTruthData': 'STRUCT(data VARCHAR, encoding VARCHAR)', "
            "'eventMetadata': 'STRUCT(eventId VARCHAR)', 'eventVersion': 'VARCHAR'}"
        )
        labels = _sql(f"{os.path.abspath(ground_truth)}/{_GT_GLOB}")
        line_sql = "rn - min(rn) OVER (PARTITION BY filename) + 1" if label_line else "NULL::BIGINT"
        preds = _sql(f"{os.path.abspath(predictions)}/endpoint=*/**/*.parquet")
        # rn: a global line index (files in sorted order, lines in order, as realtime_peers relies on too), so the
        # latest label is the one with the highest rn and a line number is rn minus its file's first rn.
        con.execute(
            f"""
COPY (
    WITH raw AS (
        SELECT *, row_number() OVER () AS rn
        FROM read_json({labels}, format = 'newline_delimited', columns = {columns}, filename = true)
    ), l AS (
        SELECT eventMetadata.eventId AS k, groundTruthData.data AS label_data,
               groundTruthData.encoding AS label_encoding, 'file://' || filename AS label_file,
               strptime(regexp_extract(filename, '(\\d{{4}}/\\d{{2}}/\\d{{2}}/\\d{{2}})/[^/]+$', 1), '%Y/%m/%d/%H')
                   AS label_hour,
               {line_sql} AS label_line, rn
        FROM raw
        WHERE eventMetadata.eventId IS NOT NULL AND eventMetadata.eventId <> '' AND groundTruthData.data IS NOT NULL
    ), latest AS (
        SELECT * EXCLUDE (rn) FROM l QUALIFY row_number() OVER (PARTITION BY k ORDER BY rn DESC) = 1
    ), joined AS (
        SELECT p.*, latest.* EXCLUDE (k),
               CASE upper(latest.label_encoding)
                   WHEN 'CSV' THEN CASE WHEN NOT contains(trim(latest.label_data, ' \t\r\n'), chr(10))
                                        THEN nullif(trim(latest.label_data, ' \t\r\n'), '') END
                   WHEN 'JSON' THEN nullif(json_extract_string(latest.label_data, '$.label'), '')
               END AS label
        FROM read_parquet({preds}, hive_partitioning = true, hive_types_autocast = false) p
        JOIN latest ON coalesce(p.inference_id, p.event_id) = latest.k
    )
    SELECT * EXCLUDE (label_hour), try_cast(label AS DOUBLE) AS label_value,
           (label_hour AT TIME ZONE 'UTC') AS label_hour
    FROM joined
) TO {_sql(dest)} (FORMAT parquet, PARTITION_BY ({", ".join(PARTITION_KEYS)}), COMPRESSION zstd)
"""
        )
        con.close()
    finally:
        shutil.rmtree(spill, ignore_errors=True)


def run_polars(predictions: str, ground_truth: str, dest: str, *, label_line: bool = True) -> None:
    """`label_line` as for DuckDB: without it no window over the file path (the row index still orders labels)."""
    import polars as pl

    schema = {
        "groundTruthData": pl.Struct({"data": pl.String, "encoding": pl.String}),
        "eventMetadata": pl.Struct({"eventId": pl.String}),
        "eventVersion": pl.String,
    }
    raw = pl.scan_ndjson(
        f"{os.path.abspath(ground_truth)}/{_GT_GLOB}", schema=schema, include_file_paths="path", row_index_name="rn"
    )
    gt = pl.col("groundTruthData").struct
    labels = (
        raw.select(
            pl.col("eventMetadata").struct.field("eventId").alias("k"),
            gt.field("data").alias("label_data"),
            gt.field("encoding").alias("label_encoding"),
            ("file://" + pl.col("path")).alias("label_file"),
            # chrono needs a minute to build a time: the hour folder gets ":00".
            (pl.col("path").str.extract(r"(\d{4}/\d{2}/\d{2}/\d{2})/[^/]+$", 1) + ":00")
            .str.strptime(pl.Datetime("us", "UTC"), "%Y/%m/%d/%H:%M")
            .alias("label_hour"),
            (
                (pl.col("rn") - pl.col("rn").min().over("path") + 1).cast(pl.Int64)
                if label_line
                else pl.lit(None, pl.Int64)
            ).alias("label_line"),
            pl.col("rn"),
        )
        .filter(pl.col("k").is_not_null() & (pl.col("k") != "") & pl.col("label_data").is_not_null())
        .sort("rn")
        .unique("k", keep="last")
        .drop("rn")
    )
    hive = {k: pl.String for k in PARTITION_KEYS}
    preds = pl.scan_parquet(
        f"{os.path.abspath(predictions)}/endpoint=*/**/*.parquet", hive_partitioning=True, hive_schema=hive
    )
    text = pl.col("label_data").str.strip_chars()
    enc = pl.col("label_encoding").str.to_uppercase()
    label = (
        pl.when((enc == "CSV") & ~text.str.contains("\n", literal=True))
        .then(text)
        .when(enc == "JSON")
        .then(pl.col("label_data").str.json_path_match("$.label"))
    )
    joined = (
        preds.with_columns(pl.coalesce("inference_id", "event_id").alias("k"))
        .join(labels, on="k", how="inner")
        .drop("k")
        .with_columns(pl.when(label != "").then(label).alias("label"))
        .with_columns(pl.col("label").cast(pl.Float64, strict=False).alias("label_value"))
    )
    joined.sink_parquet(
        pl.PartitionBy(dest, key=list(PARTITION_KEYS), include_key=False), compression="zstd", mkdir=True
    )


def run_duckdb_natural(predictions: str, ground_truth: str, dest: str) -> None:
    run_duckdb(predictions, ground_truth, dest, label_line=False)


def run_polars_natural(predictions: str, ground_truth: str, dest: str) -> None:
    run_polars(predictions, ground_truth, dest, label_line=False)


TOOLS: Final = {
    "duckdb": run_duckdb,
    "duckdb-natural": run_duckdb_natural,
    "polars": run_polars,
    "polars-natural": run_polars_natural,
}
# Tools that write label_line as NULL: their hash leaves it out (and the engine's is recomputed without it).
NATURAL: Final = frozenset({"duckdb-natural", "polars-natural"})


# --- the benchmark ------------------------------------------------------------------------------------------


def _engine_command(tree: Path, dest: Path) -> list[str]:
    end = START + timedelta(hours=HOURS)
    return [
        sys.executable,
        "-m",
        "engine",
        "merge",
        "--predictions",
        str(tree / "predictions"),
        "--ground-truth",
        str(tree / "ground-truth"),
        str(dest),
        "--start",
        f"{START:%Y-%m-%dT%H}",
        "--end",
        f"{end:%Y-%m-%dT%H}",
        "--quiet",
    ]


def _stats(con: Any, dest: Path, natural: bool = False) -> dict[str, Any]:
    rel = (
        f"read_parquet('{dest.as_posix()}/endpoint=*/**/*.parquet', hive_partitioning = true, "
        "hive_types_autocast = false, union_by_name = true)"
    )
    # Sums of 64-bit hashes as HUGEINT: order-independent, and a duplicated row does not cancel out.
    line = "" if natural else " label_line::BIGINT,"
    rows, digest = con.execute(
        f"""SELECT count(*), coalesce(sum(hash(coalesce(inference_id, event_id), label_data, label,
                   label_file::VARCHAR,{line} epoch_ms(label_hour))::HUGEINT), 0) FROM {rel}"""
    ).fetchone()
    parts = con.execute(f"SELECT {', '.join(PARTITION_KEYS)}, count(*) FROM {rel} GROUP BY ALL ORDER BY ALL").fetchall()
    values = con.execute(f"SELECT count(label), count(label_value) FROM {rel}").fetchone()
    return {
        "rows": rows,
        "hash": str(digest),
        "labels_decoded": values[0],
        "numeric_labels": values[1],
        "partitions": {"/".join(f"{k}={v}" for k, v in zip(PARTITION_KEYS, p[:-1], strict=True)): p[-1] for p in parts},
    }


def bench(args: argparse.Namespace) -> int:
    """`python -m benchmarks.run --job merge ...`: generate (or reuse) the data, run each tool, check, report."""
    import duckdb

    from benchmarks._harness import RESULTS, machine, run_process

    rows = args.rows or max(1000, int(_parse_size(args.size) / BYTES_PER_EVENT))
    tools = [t.strip() for t in (args.tools or ",".join(["engine", *TOOLS])).split(",") if t.strip()]
    unknown = [t for t in tools if t != "engine" and t not in TOOLS]
    if unknown:
        raise SystemExit(f"unknown tools for the merge job: {unknown} (engine, {', '.join(TOOLS)})")
    started = datetime.now(timezone.utc)
    t_start = time.perf_counter()

    def say(msg: str) -> None:
        print(f"[{time.perf_counter() - t_start:7.1f}s] {msg}", file=sys.stderr, flush=True)

    cached = (_data_dir(rows, args.data_root) / MARKER).is_file()
    say(f"{'reusing' if cached else 'generating'} the merge data of {rows:,} predictions under {args.data_root}")
    tree = ensure_merge_data(rows, args.data_root)
    marker = json.loads((tree / MARKER).read_text())
    inputs = [*(tree / "predictions").rglob("*.parquet"), *(tree / "ground-truth").glob(_GT_GLOB)]
    for p in inputs:  # warm the page cache so that no tool pays (or is spared) the first cold read
        p.read_bytes()
    say(
        f"{marker['predictions']:,} predictions ({marker['prediction_bytes'] / 1e6:,.1f} MB Parquet), "
        f"{marker['labels']:,} labels ({marker['relabels']:,} relabelled) in {marker['label_files']:,} files "
        f"({marker['label_bytes'] / 1e6:,.1f} MB)"
    )
    work = args.data_root / "runs" / tree.name
    work.mkdir(parents=True, exist_ok=True)
    commands = {
        t: _engine_command(tree, work / t)
        if t == "engine"
        else [
            sys.executable,
            "-m",
            "benchmarks.merge_peers",
            t,
            str(tree / "predictions"),
            str(tree / "ground-truth"),
            str(work / t),
        ]
        for t in tools
    }
    runs: dict[str, list[Any]] = {t: [] for t in tools}
    for rep in range(args.repeat):
        for t in tools:
            shutil.rmtree(work / t, ignore_errors=True)
            os.sync()  # the previous run's writeback is not charged to this one
            run = run_process(commands[t], work / f"{t}-{rep}")
            runs[t].append(run)
            status = "ok" if run.exit_code == 0 else f"FAILED (exit {run.exit_code}): {run.stderr_tail}"
            say(
                f"{t} run {rep + 1}/{args.repeat}: {run.wall_seconds:.2f} s ({run.cpu_seconds:.2f} CPU s), "
                f"peak RSS {run.peak_rss_bytes / 1e6:,.0f} MB, {status}"
            )

    say("checking outputs with DuckDB")
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    stats: dict[str, dict[str, Any]] = {}
    problems: dict[str, list[str]] = {t: [] for t in tools}
    for t in tools:
        if any(r.exit_code for r in runs[t]):
            problems[t].append("a run failed")
            continue
        stats[t] = _stats(con, work / t, natural=t in NATURAL)
        if stats[t]["rows"] != marker["expected_matched"]:
            problems[t].append(f"{stats[t]['rows']:,} rows, expected {marker['expected_matched']:,} matched")
    ref = "engine" if "engine" in stats else next((t for t in stats if t not in NATURAL), None)
    natural_ref = _stats(con, work / ref, natural=True) if ref is not None and NATURAL & set(stats) else None
    for t in stats:
        if t != ref and ref is not None:
            want = natural_ref if t in NATURAL and natural_ref is not None else stats[ref]
            for k in ("hash", "partitions", "labels_decoded", "numeric_labels"):
                if stats[t][k] != want[k]:
                    problems[t].append(f"{k} differs from {ref}" + (" (no label_line)" if t in NATURAL else ""))
    con.close()
    if not args.keep_output:
        for t in tools:
            shutil.rmtree(work / t, ignore_errors=True)

    def wall(t: str) -> float:
        return statistics.median(r.wall_seconds for r in runs[t])

    duck = wall("duckdb") if "duckdb" in tools and not problems.get("duckdb") else None
    pol = wall("polars") if "polars" in tools and not problems.get("polars") else None
    gb = (marker["prediction_bytes"] + marker["label_bytes"]) / 1e9  # the job's input: Parquet + label JSONL
    header = (
        "| tool | wall s (min-max) | predictions/s | peak RSS MB | CPU s | CPU s per GB | CPU / wall | vs DuckDB "
        "| vs polars | rows | check |"
    )
    lines = [header, "|" + "---|" * 11]
    for t in tools:
        w = wall(t)
        walls = [r.wall_seconds for r in runs[t]]
        cpu = statistics.median(r.cpu_seconds for r in runs[t])
        ratio = f"{duck / w:.2f}x" if duck and t != "duckdb" else "-"
        vs_polars = f"{pol / w:.2f}x" if pol and t != "polars" else "-"
        n = stats.get(t, {}).get("rows")
        lines.append(
            f"| {t} | {w:.2f} ({min(walls):.2f}-{max(walls):.2f}) | {marker['predictions'] / w:,.0f} | "
            f"{max(r.peak_rss_bytes for r in runs[t]) / 1e6:,.0f} | {cpu:.1f} | {cpu / gb:.1f} | {cpu / w:.2f} | "
            f"{ratio} | {vs_polars} | {'-' if n is None else f'{n:,}'} | {'; '.join(problems[t]) or 'OK'} |"
        )
    table = "\n".join(lines)
    ok = not any(problems.values())
    out = args.json or RESULTS / f"merge-{rows}r-{started:%Y%m%dT%H%M%SZ}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "benchmark": "merge",
                "date": started.isoformat(timespec="seconds"),
                "rows": rows,
                "repeat": args.repeat,
                "data": {**marker, "tree": str(tree)},
                "machine": machine(),
                "ok": ok,
                "table_markdown": table,
                "tools": {
                    t: {
                        "command": commands[t],
                        "runs": [vars(r) for r in runs[t]],
                        "stats": stats.get(t),
                        "problems": problems[t],
                    }
                    for t in tools
                },
            },
            indent=2,
        )
        + "\n"
    )
    print(
        f"\n## merge: {marker['predictions']:,} predictions x {marker['labels']:,} labels; "
        f"{os.cpu_count()} CPUs; median of {args.repeat} run(s)\n"
    )
    print(table)
    print(
        "\nwall s: whole process (interpreter start included); predictions/s: prediction rows / wall; "
        "peak RSS: the process's own ru_maxrss; CPU s per GB: CPU (user + system) seconds per 1e9 bytes of input "
        "(prediction Parquet + label JSONL); CPU / wall: cores kept busy; vs DuckDB / vs polars: their wall / tool "
        "wall (above 1x: faster); *-natural: label_line not numbered (NULL), checked on every other column."
    )
    say(f"{'OK' if ok else 'MISMATCH or FAILURE'}; results written to {out}")
    return 0 if ok else 1


def _parse_size(text: str) -> int:
    from engine.options import parse_size

    return parse_size(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.merge_peers", description=__doc__.split("\n\n")[0])
    parser.add_argument("tool", choices=sorted(TOOLS))
    parser.add_argument("predictions", help="a dataset written by capture-engine realtime")
    parser.add_argument("ground_truth", help="ground-truth root: yyyy/mm/dd/hh/*.jsonl below it")
    parser.add_argument("dest", help="output dataset root (created)")
    args = parser.parse_args(argv)
    TOOLS[args.tool](args.predictions, args.ground_truth, os.path.abspath(args.dest))
    return 0


if __name__ == "__main__":
    sys.exit(main())
