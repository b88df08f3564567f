"""JSON and JSON Lines payload decoding: the engine's decoder against DuckDB, polars and an orjson loop, same bodies.

    python -m benchmarks.json_payloads --size 300MB [--tools engine,duckdb,polars,orjson] [--repeat 3]
        [--baseline-src DIR] [--job] [--data-root DIR] [--json PATH]
    python -m benchmarks.json_payloads --size 300MB --stages     # CPU s per GB of each stage of the decoder
    python -m benchmarks.json_payloads --size 300MB --paths      # the decoder with and without its fast path

The bodies come from a seeded synth capture tree with JSON payloads only (``json_share=1``, none BASE64): half the
events ``application/json`` (``{"instances": [{"features": [14 floats]}]}`` in, ``{"predictions": [{"score": ..,
"predicted_label": ..}]}`` out), half ``application/jsonlines`` (one ``{"features": [14 integers]}`` line per
record in, ``{"predicted_label": .., "score": ..}`` lines out); 5 % of the bodies carry 2-5 records. The tree and
the bodies extracted from it (``bodies.parquet``) are generated once and cached under ``--data-root``.

Each tool runs in its own process (``python -m benchmarks.json_payloads --child TOOL BODIES OUT``) that loads the
bodies, then decodes all four sides (JSON in/out, JSON Lines in/out) into ``features`` / ``score`` /
``predicted_label`` columns with the body index, and reports the wall and CPU seconds (every thread) of the decode
alone; peak RSS is the process's own (``os.wait4``). Tools run interleaved, ``--repeat`` times; medians are
reported. Every tool's output must equal the engine's row for row and value for value, else the exit status is
non-zero.

* ``engine``: ``engine.kernels.payload.json.decode_json_bodies``, the call ``--decode`` makes per batch of events,
  on batches of ``--chunk`` bodies. ``engine-base`` is the same with the engine package imported from
  ``--baseline-src`` (an export of an earlier commit: ``git archive COMMIT engine schemas | tar -x -C DIR``): the
  before/after comparison in one run.
* ``duckdb``: ``json_transform`` with the structure given (what a user writes), ``unnest`` of the record lists,
  ``string_split`` for JSON Lines.
* ``polars``: ``str.json_decode(dtype)`` with the structure given, ``explode`` and ``struct.field``.
* ``orjson``: ``orjson.loads`` per body (per line for JSON Lines) in a Python loop, then Arrow arrays.

``--job`` also times the whole ``capture-engine realtime SRC DEST --decode`` on the tree (the engine, and the
baseline if given), to show the end-to-end effect.
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
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Final

from benchmarks._harness import MB, RESULTS, Run, machine, run_process, size_label

__all__ = ["TOOLS", "ensure_bodies", "main"]

# benchmarks.data's cache folder and marker, not imported: it imports the engine, which the baseline child must
# import from elsewhere.
DEFAULT_ROOT: Final = Path(__file__).resolve().parent / ".data"
MARKER: Final = "_COMPLETE.json"
SEED: Final = 1
TOOLS: Final = ("engine", "engine-base", "duckdb", "polars", "orjson")
SIDES: Final = (("json", "input"), ("json", "output"), ("jsonl", "input"), ("jsonl", "output"))
_COLUMNS: Final = {"input": ("features",), "output": ("score", "predicted_label")}


# --- data -------------------------------------------------------------------------------------------------------


def ensure_bodies(size_bytes: int, root: Path) -> tuple[Path, Path]:
    """The JSON-payload capture tree of about ``size_bytes`` and its bodies file, generated on first use."""
    from engine.synth import SynthOptions, synth

    tree = root / f"synth-json-{size_bytes}B-seed{SEED}-h6-e3-v2"
    if not (tree / MARKER).is_file():
        partial = root / f"{tree.name}.partial-{os.getpid()}"
        shutil.rmtree(partial, ignore_errors=True)
        options = SynthOptions(
            target_bytes=size_bytes, hours=6, endpoints=3, variants=2, seed=SEED, json_share=1.0, base64_share=0.0
        )
        summary = synth(str(partial), options)
        _extract(partial / "capture", partial / "bodies.parquet")
        (partial / MARKER).write_text(json.dumps({"summary": summary.to_dict(), "kind": "json"}, indent=2))
        try:
            partial.rename(tree)
        except OSError:
            if not (tree / MARKER).is_file():
                raise
            shutil.rmtree(partial, ignore_errors=True)  # another run finished the same tree first
    return tree, tree / "bodies.parquet"


def _extract(capture: Path, dest: Path) -> None:
    """Every event's content type and bodies, in the sorted order of the capture files."""
    import polars as pl

    files = sorted(str(p) for p in capture.glob("*/*/*/*/*/*/*.jsonl"))
    side = pl.Struct({"observedContentType": pl.String, "data": pl.String})
    frame = pl.read_ndjson(files, schema={"captureData": pl.Struct({"endpointInput": side, "endpointOutput": side})})
    cd = pl.col("captureData")
    frame.select(
        kind=pl.when(cd.struct.field("endpointInput").struct.field("observedContentType").str.contains("jsonl"))
        .then(pl.lit("jsonl"))
        .otherwise(pl.lit("json")),
        input=cd.struct.field("endpointInput").struct.field("data"),
        output=cd.struct.field("endpointOutput").struct.field("data"),
    ).write_parquet(dest)


# --- the tools (run in the child) ----------------------------------------------------------------------------------


def _engine(bodies: Any, chunk: int) -> dict[str, Any]:
    import numpy as np
    import pyarrow as pa

    from engine.kernels.payload.json import decode_json_bodies
    from engine.kernels.payload.spec import SideSpec

    out = {}
    for kind, side in SIDES:
        texts = bodies[kind].column(side).combine_chunks()
        parts = []
        for start in range(0, len(texts), chunk):
            got = decode_json_bodies(
                texts.slice(start, chunk), lines=kind == "jsonl", side=side, spec=SideSpec(), arrays="list"
            )
            table = got.table.select(list(_COLUMNS[side]))
            parts.append(table.append_column("body", pa.array(got.event.astype(np.int64) + start)))
        out[f"{kind}_{side}"] = pa.concat_tables(parts)
    return out


def _duckdb(bodies: Any, _: int) -> dict[str, Any]:
    import duckdb

    con = duckdb.connect()
    structure = {
        ("json", "input"): ("instances", '{"features": ["DOUBLE"]}'),
        ("json", "output"): ("predictions", '{"score": "DOUBLE", "predicted_label": "BIGINT"}'),
        ("jsonl", "input"): (None, '{"features": ["DOUBLE"]}'),
        ("jsonl", "output"): (None, '{"score": "DOUBLE", "predicted_label": "BIGINT"}'),
    }
    out = {}
    for kind, side in SIDES:
        con.register("b", bodies[kind].select([side, "body"]).rename_columns(["data", "body"]))
        key, record = structure[(kind, side)]
        fields = ", ".join(f"r.{c} AS {c}" for c in _COLUMNS[side])
        if key is not None:
            sql = (
                f"SELECT {fields}, body FROM (SELECT body, unnest(json_transform(data, "
                f"'{{\"{key}\": [{record}]}}').{key}) AS r FROM b)"
            )
        else:
            sql = (
                f"SELECT {fields}, body FROM (SELECT body, json_transform(line, '{record}') AS r FROM "
                "(SELECT body, unnest(string_split(rtrim(data, chr(10)), chr(10))) AS line FROM b) WHERE line <> '')"
            )
        out[f"{kind}_{side}"] = con.sql(sql).to_arrow_table()
        con.unregister("b")
    return out


def _polars(bodies: Any, _: int) -> dict[str, Any]:
    import polars as pl

    # The expression takes the structure, like DuckDB's json_transform.
    records_of = {
        "input": pl.Struct({"features": pl.List(pl.Float64)}),
        "output": pl.Struct({"score": pl.Float64, "predicted_label": pl.Int64}),
    }

    out = {}
    for kind, side in SIDES:
        frame = pl.from_arrow(bodies[kind].select([side, "body"]))
        assert isinstance(frame, pl.DataFrame)
        data = pl.col(side)
        record = records_of[side]
        if kind == "json":
            key = "instances" if side == "input" else "predictions"
            whole = pl.Struct({key: pl.List(record)})
            records = frame.select("body", r=data.str.json_decode(whole).struct.field(key)).explode("r")
        else:
            lines = frame.select("body", line=data.str.strip_chars_end("\n").str.split("\n")).explode("line")
            records = lines.filter(pl.col("line") != "").select("body", r=pl.col("line").str.json_decode(record))
        columns = [pl.col("r").struct.field(c) for c in _COLUMNS[side]]
        out[f"{kind}_{side}"] = records.select(*columns, "body").to_arrow()
    return out


def _orjson(bodies: Any, _: int) -> dict[str, Any]:
    import orjson
    import pyarrow as pa

    out = {}
    for kind, side in SIDES:
        texts = bodies[kind].column(side).to_pylist()
        key = "instances" if side == "input" else "predictions"
        records: list[dict[str, Any]] = []
        index: list[int] = []
        for i, text in enumerate(texts):
            if kind == "json":
                got = orjson.loads(text)[key]
            else:
                got = [orjson.loads(line) for line in text.splitlines() if line.strip()]
            records.extend(got)
            index.extend([i] * len(got))
        if side == "input":
            arrays = [pa.array([r["features"] for r in records], pa.list_(pa.float64()))]
        else:
            arrays = [
                pa.array([r["score"] for r in records], pa.float64()),
                pa.array([r["predicted_label"] for r in records], pa.int64()),
            ]
        out[f"{kind}_{side}"] = pa.table([*arrays, pa.array(index, pa.int64())], names=[*_COLUMNS[side], "body"])
    return out


_RUNNERS: Final[dict[str, Callable[[Any, int], dict[str, Any]]]] = {
    "engine": _engine,
    "engine-base": _engine,
    "duckdb": _duckdb,
    "polars": _polars,
    "orjson": _orjson,
}


def _child(tool: str, bodies_path: Path, out_dir: Path, chunk: int, baseline: str | None) -> int:
    if tool == "engine-base":
        if not baseline:
            raise SystemExit("engine-base needs --baseline-src")
        sys.path.insert(0, baseline)
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(bodies_path)
    body = pa.array(range(table.num_rows), pa.int64())
    table = table.append_column("body", body)
    bodies = {}
    for kind in ("json", "jsonl"):
        part = table.filter(pa.compute.equal(table.column("kind"), kind))
        # The body index within its kind, as the decoders number them.
        bodies[kind] = part.set_column(part.schema.get_field_index("body"), "body", pa.array(range(part.num_rows)))
    wall, cpu = time.perf_counter(), time.process_time()
    out = _RUNNERS[tool](bodies, chunk)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    for name, result in out.items():
        pq.write_table(result, out_dir / f"{name}.parquet")
    print(json.dumps({"decode_wall": wall, "decode_cpu": cpu}))
    return 0


def _stages(bodies_path: Path, chunk: int) -> int:
    """CPU seconds per GB of bodies of each stage of the decoder, in this process (every thread), best of 3.

    The stages run one after the other here; in the decoder validation overlaps the rest on another thread.
    ``general`` stages are what the decoder runs when the fast path does not take a batch (and ran before it).
    """
    import polars as pl

    frame = pl.read_parquet(bodies_path)
    print(
        "| bodies | units | line count (JSON Lines read whole) | trust checks | validation | fast path"
        " | general: records | general: typing |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for kind, side in SIDES:
        figures = _stage_figures(frame.filter(pl.col("kind") == kind)[side], kind == "jsonl", side, chunk)
        print(f"| {kind} {side} | " + " | ".join(f"{f:.0f}" for f in figures) + " |")
    return 0


def _stage_figures(texts: Any, lines: bool, side: Any, chunk: int) -> list[float]:
    from engine.kernels.payload.json import _records
    from engine.kernels.payload.json._bodylines import _line_counts
    from engine.kernels.payload.json._columns import _decode_records
    from engine.kernels.payload.json._fast import _fast_decode
    from engine.kernels.payload.json._texts import _documents, _is_valid, _lines
    from engine.kernels.payload.json._trust import _bodies_utf8, _suspects
    from engine.kernels.payload.spec import SideSpec

    gb = float(texts.str.len_bytes().sum()) / 1e9
    chunks = [texts.slice(start, chunk) for start in range(0, len(texts), chunk)]
    arrow_chunks = [c.to_arrow() for c in chunks]
    units = [_lines(t) if lines else _documents(t) for t in chunks]
    records = [_records(u, lines, side) for u in units]

    def cpu(work: Callable[[int], object]) -> float:
        best = float("inf")
        for _ in range(3):
            start = time.process_time()
            for i in range(len(chunks)):
                work(i)
            best = min(best, time.process_time() - start)
        return best / gb

    return [
        cpu(lambda i: _lines(chunks[i]) if lines else _documents(chunks[i])),
        cpu(lambda i: _line_counts(chunks[i]) if lines else None),
        cpu(lambda i: (_bodies_utf8(arrow_chunks[i]), bool(_suspects(units[i]["text"]).any()))),
        cpu(lambda i: _is_valid(units[i]["text"])),
        cpu(lambda i: _fast_decode(units[i], lines, side, "list")),
        cpu(lambda i: _records(units[i], lines, side)),
        cpu(lambda i: _decode_records(records[i]["text"], side, SideSpec(), "list")),
    ]


def _paths(bodies_path: Path, chunk: int) -> int:
    """CPU s per GB of the whole decoder three ways, alternating in one process on the same batches (twice each,
    the sum), so the neighbours on a shared machine weigh on both alike: as shipped (the fast path, pyarrow's
    parse standing in for the strict validation of all but suspect units), the fast path with every unit
    validated the strict way (the decoder before that), and the general path only (before the fast path)."""
    from unittest import mock

    import polars as pl

    import engine.kernels.payload.json as decoder
    from engine.kernels.payload.spec import SideSpec

    paths = ("trusted", "strict", "general")
    frame = pl.read_parquet(bodies_path)
    total = dict.fromkeys(paths, 0.0)
    gb = 0.0
    print("| bodies | fast path, parse trusted | fast path, strict validation | general path only |")
    print("|---|---:|---:|---:|")
    for kind, side in SIDES:
        texts = frame.filter(pl.col("kind") == kind)[side].to_arrow()
        size = float(frame.filter(pl.col("kind") == kind)[side].str.len_bytes().sum()) / 1e9
        gb += size
        got = dict.fromkeys(paths, 0.0)
        for path in paths + paths:
            off = mock.patch.object(decoder, "_fast_decode", return_value=None) if path == "general" else None
            if off is not None:
                off.start()
            start = time.process_time()
            for at in range(0, len(texts), chunk):
                batch = texts.slice(at, chunk)
                decoder._decode(
                    batch,
                    lines=kind == "jsonl",
                    side=side,
                    spec=SideSpec(),
                    arrays="list",
                    trust_parser=path == "trusted",
                )
            got[path] += time.process_time() - start
            if off is not None:
                off.stop()
        total = {k: total[k] + v for k, v in got.items()}
        print(f"| {kind} {side} | " + " | ".join(f"{got[p] / 2 / size:.0f}" for p in paths) + " |")
    print("| all | " + " | ".join(f"{total[p] / 2 / gb:.0f}" for p in paths) + " |")
    return 0


# --- the parent -----------------------------------------------------------------------------------------------------


def _check(out_dir: Path, reference: Path) -> list[str]:
    """Differences of a tool's output from the engine's: rows, then values, side by side."""
    import pyarrow.parquet as pq

    problems = []
    for kind, side in SIDES:
        name = f"{kind}_{side}"
        mine, ref = pq.read_table(out_dir / f"{name}.parquet"), pq.read_table(reference / f"{name}.parquet")
        columns = [*_COLUMNS[side], "body"]
        mine, ref = mine.select(columns).cast(ref.select(columns).schema), ref.select(columns)
        if mine.num_rows != ref.num_rows:
            problems.append(f"{name}: {mine.num_rows} rows, the engine {ref.num_rows}")
        elif not mine.equals(ref):
            problems.append(f"{name}: values differ from the engine's")
    return problems


def _bodies_bytes(bodies_path: Path) -> int:
    import polars as pl

    frame = pl.read_parquet(bodies_path)
    return int(frame.select(pl.col("input").str.len_bytes().sum() + pl.col("output").str.len_bytes().sum()).item())


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.json_payloads", description=__doc__.split("\n")[0])
    parser.add_argument("--size", default="100MB", help="capture bytes of the JSON tree: 20MB, 300MB, 1GB, ...")
    parser.add_argument("--tools", default="engine,duckdb,polars,orjson", help=f"comma-separated, from {TOOLS}")
    parser.add_argument("--repeat", type=int, default=1, help="runs per tool, interleaved; the median is reported")
    parser.add_argument("--chunk", type=int, default=16384, help="bodies per engine decode call (default 16384)")
    parser.add_argument("--baseline-src", help="folder holding an engine package to run as engine-base")
    parser.add_argument("--job", action="store_true", help="also time capture-engine realtime --decode on the tree")
    parser.add_argument("--data-root", type=Path, default=DEFAULT_ROOT, help="cache of generated trees")
    parser.add_argument("--json", type=Path, help="results file (default benchmarks/results/json_payloads-SIZE.json)")
    parser.add_argument("--child", nargs=3, metavar=("TOOL", "BODIES", "OUT"), help=argparse.SUPPRESS)
    parser.add_argument("--stages", action="store_true", help="print CPU s per GB of each decoder stage, then stop")
    parser.add_argument("--paths", action="store_true", help="fast vs general path alternating in one process")
    args = parser.parse_args(argv)
    if args.child:
        # Before anything imports the engine: the baseline child must import it from --baseline-src.
        tool, bodies, out = args.child
        return _child(tool, Path(bodies), Path(out), args.chunk, args.baseline_src)
    from engine.options import parse_size  # not at module level: the baseline child imports the engine itself

    if args.paths:
        return _paths(ensure_bodies(parse_size(args.size), args.data_root)[1], args.chunk)
    if args.stages:
        return _stages(ensure_bodies(parse_size(args.size), args.data_root)[1], args.chunk)

    size = parse_size(args.size)
    # The engine runs first in every round: the others are checked against its output of the same round.
    tools = ["engine", *[t for t in args.tools.split(",") if t and t != "engine"]]
    if args.baseline_src and "engine-base" not in tools:
        tools.insert(1, "engine-base")
    unknown = set(tools) - set(TOOLS)
    if unknown:
        parser.error(f"--tools names only {TOOLS}")
    args.data_root.mkdir(parents=True, exist_ok=True)
    tree, bodies_path = ensure_bodies(size, args.data_root)
    body_bytes = _bodies_bytes(bodies_path)
    base = [] if not args.baseline_src else ["--baseline-src", str(Path(args.baseline_src).resolve())]
    work = Path(tempfile.mkdtemp(prefix="json-payloads-"))
    runs: dict[str, list[tuple[Run, dict[str, float]]]] = {t: [] for t in tools}
    problems: dict[str, list[str]] = {t: [] for t in tools}
    try:
        for r in range(args.repeat):
            for tool in tools:
                out = work / f"{tool}-{r}"
                out.mkdir()
                cmd = [sys.executable, "-m", "benchmarks.json_payloads", "--chunk", str(args.chunk), *base]
                run = run_process([*cmd, "--child", tool, str(bodies_path), str(out)], work / f"{tool}-{r}")
                inner = json.loads(out.with_suffix(".stdout").read_text() or "{}") if run.exit_code == 0 else {}
                runs[tool].append((run, inner))
                if run.exit_code:
                    problems[tool].append(f"exit {run.exit_code}: {run.stderr_tail}")
                elif tool != "engine" and runs["engine"][-1][0].exit_code == 0:
                    problems[tool].extend(_check(out, work / f"engine-{r}"))
        job = _jobs(tree, work, args, base) if args.job else []
    finally:
        shutil.rmtree(work, ignore_errors=True)

    rows = []
    for tool in tools:
        ok = [(run, inner) for run, inner in runs[tool] if run.exit_code == 0]
        wall = _median([inner["decode_wall"] for _, inner in ok])
        cpu = _median([inner["decode_cpu"] for _, inner in ok])
        rss = max((run.peak_rss_bytes for run, _ in ok), default=0)
        rows.append(
            {
                "tool": tool,
                "runs": len(ok),
                "decode_wall_seconds": wall,
                "decode_cpu_seconds": cpu,
                "mb_per_s": body_bytes / MB / wall,
                "cpu_s_per_gb": cpu / (body_bytes / 1e9),
                "cpu_per_wall": cpu / wall,
                "peak_rss_mb": rss / MB,
                "check": "; ".join(problems[tool]) or ("reference" if tool == "engine" else "same rows and values"),
            }
        )
    print(f"JSON / JSON Lines bodies: {body_bytes / MB:.1f} MB from {tree.name}; median of {args.repeat}")
    print("| tool | decode s | MB/s of bodies | CPU s per GB | CPU/wall | peak RSS MB | output check |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for row in rows:
        print(
            f"| {row['tool']} | {row['decode_wall_seconds']:.2f} | {row['mb_per_s']:.1f} | {row['cpu_s_per_gb']:.0f} "
            f"| {row['cpu_per_wall']:.2f} | {row['peak_rss_mb']:.0f} | {row['check']} |"
        )
    for row in job:
        print(
            f"job {row['tool']}: realtime --decode {row['wall_seconds']:.2f} s, {row['cpu_seconds']:.2f} CPU s "
            f"(CPU/wall {row['cpu_per_wall']:.2f}), {row['capture_mb_per_s']:.1f} MB/s of capture, "
            f"peak RSS {row['peak_rss_mb']:.0f} MB"
        )
    result = {
        "benchmark": "json_payloads",
        "utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "size": args.size,
        "bodies_bytes": body_bytes,
        "repeat": args.repeat,
        "chunk": args.chunk,
        "machine": machine(),
        "tools": rows,
        "job": job,
    }
    path = args.json or RESULTS / f"json_payloads-{size_label(args.size)}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2))
    return 1 if any(problems.values()) or any(row["runs"] < args.repeat for row in rows) else 0


def _jobs(tree: Path, work: Path, args: argparse.Namespace, base: list[str]) -> list[dict[str, Any]]:
    """``capture-engine realtime --decode`` on the tree, interleaved with the baseline's if given."""
    capture = tree / "capture"
    capture_bytes = sum(p.stat().st_size for p in capture.rglob("*.jsonl"))
    variants = {"engine": [sys.executable, "-m", "engine"]}
    if base:
        launcher = f"import sys; sys.path.insert(0, {base[1]!r}); from engine.cli import main; sys.exit(main())"
        variants["engine-base"] = [sys.executable, "-c", launcher]
    runs: dict[str, list[Run]] = {name: [] for name in variants}
    for r in range(args.repeat):
        for name, cmd in variants.items():
            dest = work / f"job-{name}-{r}"
            run = run_process([*cmd, "realtime", str(capture), str(dest), "--decode", "--quiet"], dest)
            if run.exit_code:
                raise SystemExit(f"{name} realtime --decode failed: {run.stderr_tail}")
            runs[name].append(run)
            shutil.rmtree(dest, ignore_errors=True)
    out = []
    for name, got in runs.items():
        wall = _median([r.wall_seconds for r in got])
        cpu = _median([r.cpu_seconds for r in got])
        out.append(
            {
                "tool": name,
                "wall_seconds": wall,
                "cpu_seconds": cpu,
                "cpu_per_wall": cpu / wall,
                "capture_mb_per_s": capture_bytes / MB / wall,
                "cpu_s_per_gb_capture": cpu / (capture_bytes / 1e9),
                "peak_rss_mb": max(r.peak_rss_bytes for r in got) / MB,
            }
        )
    return out


if __name__ == "__main__":
    sys.exit(main())
