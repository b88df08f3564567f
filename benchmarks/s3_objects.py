"""Many small capture objects on a real S3 server: capture-engine against what users run today.

    python -m benchmarks.s3_objects [--objects 5000] [--records-per-object 16] [--tools engine,engine-seq,...]
                                    [--repeat N] [--latency-ms MS] [--duckdb-python PYTHON] [--json PATH]

SageMaker writes real-time capture as many small objects (one every few seconds per instance, a few KB each at
low traffic), so reading a day of it from S3 is bound by request latency, not by bandwidth or decoding. This
benchmark starts its own SeaweedFS server on loopback (``tests/s3_server.py``'s `WeedServer`: real HTTP, real
SigV4 signatures), uploads ``--objects`` small capture objects in SageMaker's layout
``{bucket}/capture/{endpoint}/{variant}/yyyy/mm/dd/hh/{MM}-{SS}-{mmm}-{uuid}.jsonl`` and times each tool over the
same bucket, each in its own process (wall time around the process, interpreter start included; peak RSS is the
child's own ``ru_maxrss`` from ``os.wait4``):

* ``engine``: ``capture-engine realtime s3://BUCKET/capture DEST --fetch-concurrency 32`` (the default), local
  Parquet; S3 endpoint and credentials from the AWS environment (``AWS_ENDPOINT_URL_S3`` & co.).
* ``engine-seq``: the same with ``--fetch-concurrency 1``: what concurrency alone is worth.
* ``sequential``: the script users run today, and the baseline: list the objects with s3fs, then one object at a
  time GET it, ``json.loads`` each line and collect the rows; one Parquet file with pyarrow at the end.
* ``duckdb``: ``read_json('s3://BUCKET/capture/**/*.jsonl', ...)`` through DuckDB's httpfs extension and
  ``COPY ... TO`` Parquet. DuckDB downloads httpfs from its own repository, not through pip; offline it can
  come from the ``duckdb-ext-httpfs`` wheel (PyPI), which exists for some DuckDB versions only, so
  ``--duckdb-python`` may name the interpreter of an environment where the two match. Where httpfs cannot be
  loaded the tool is reported as unavailable, with the reason, and the other tools still run.

Every tool's output is counted with pyarrow and must hold exactly the records uploaded; a failed run or another
count makes the exit status non-zero. The server, the bucket and every output are new for each invocation and
removed at the end: nothing is cached between runs.

Server and tools share the machine's cores, and on loopback a GET is answered in about a millisecond: every
client is then bound by CPU (its own per request, and the server's), not by waiting, which is the least
favourable case for concurrent fetching. The table shows both CPU times. ``--latency-ms`` puts a proxy between
the tools and the server that holds every request that long, like the round trip to a remote object store
(tens of milliseconds to S3), which is where waiting dominates and concurrency pays.

The tool processes run this module as ``python -m benchmarks.s3_objects peer TOOL SRC DEST``; that entry point
imports only what the tool itself needs, so the peers' start-up is what a user's script would pay.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

__all__ = ["main"]

REPO: Final = Path(__file__).resolve().parent.parent
RESULTS: Final = Path(__file__).resolve().parent / "results"
TOOLS: Final = ("engine", "engine-seq", "sequential", "duckdb")
BASELINE: Final = "sequential"
BUCKET: Final = "capture-bench"
ENDPOINTS: Final = ("churn-xgb-endpoint", "fraud-linear-endpoint")
VARIANTS: Final = ("AllTraffic", "ShadowVariant")
START: Final = datetime(2026, 11, 1, tzinfo=timezone.utc)
MB: Final = 1e6  # decimal megabytes, like benchmarks.run
EX_UNAVAILABLE: Final = 69  # sysexits.h: a peer whose tool cannot run here (DuckDB without httpfs)
_UNAVAILABLE_PREFIX: Final = "unavailable: "
_FEATURES: Final = 20  # CSV features per request: with 16 records an object is about 8 KB


# --- the capture objects ------------------------------------------------------------------------------------


def _record(rng: random.Random, when: datetime, inference_id: int) -> str:
    """One capture line as SageMaker writes it for a CSV endpoint (the envelope of tests/conftest.py `record`)."""
    features = ",".join(f"{rng.uniform(-100, 100):.4f}" for _ in range(_FEATURES))
    return json.dumps(
        {
            "captureData": {
                "endpointInput": {
                    "observedContentType": "text/csv",
                    "mode": "INPUT",
                    "data": features,
                    "encoding": "CSV",
                },
                "endpointOutput": {
                    "observedContentType": "text/csv; charset=utf-8",
                    "mode": "OUTPUT",
                    "data": f"{rng.random():.6f}",
                    "encoding": "CSV",
                },
            },
            "eventMetadata": {
                "eventId": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                "inferenceId": str(inference_id),
                "inferenceTime": when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z",
            },
            "eventVersion": "0",
        },
        separators=(",", ":"),
    )


def capture_objects(objects: int, records_per_object: int, *, hours: int, seed: int = 0) -> dict[str, bytes]:
    """``{key: body}`` of `objects` capture objects below ``capture/``, spread evenly over the (endpoint, variant)
    streams and `hours` hours; each is named and filed by the time of its first record, as SageMaker does."""
    rng = random.Random(seed)
    streams = [(e, v) for e in ENDPOINTS for v in VARIANTS]
    per_stream = -(-objects // len(streams))
    step = timedelta(hours=hours) / per_stream  # time covered by one object of a stream
    out: dict[str, bytes] = {}
    for i in range(objects):
        endpoint, variant = streams[i % len(streams)]
        first = START + step * (i // len(streams))
        times = [first + step * (j / records_per_object) for j in range(records_per_object)]
        body = "".join(_record(rng, t, i * records_per_object + j) + "\n" for j, t in enumerate(times))
        name = f"{first:%M-%S}-{first.microsecond // 1000:03d}-{uuid.UUID(int=rng.getrandbits(128), version=4)}"
        out[f"capture/{endpoint}/{variant}/{first:%Y/%m/%d/%H}/{name}.jsonl"] = body.encode()
    return out


# --- the peers (run in their own process) -------------------------------------------------------------------


def run_sequential(src: str, dest: Path) -> None:
    """What users run today: list the objects, then GET them one at a time, ``json.loads`` every line, collect
    the rows, write one Parquet file."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    import s3fs

    fs = s3fs.S3FileSystem()  # endpoint and credentials from the AWS environment, as in a notebook or a job
    keys = sorted(k for k in fs.find(src) if k.endswith(".jsonl"))
    rows: list[dict[str, Any]] = []
    for key in keys:
        for n, line in enumerate(fs.cat_file(key).decode().splitlines(), start=1):
            if not line.strip():
                continue
            record = json.loads(line)
            meta = record["eventMetadata"]
            inp = record["captureData"].get("endpointInput", {})
            out = record["captureData"].get("endpointOutput", {})
            rows.append(
                {
                    "event_id": meta["eventId"],
                    "inference_id": meta.get("inferenceId"),
                    "inference_time": meta["inferenceTime"],
                    "event_version": record.get("eventVersion"),
                    "input_content_type": inp.get("observedContentType"),
                    "input_encoding": inp.get("encoding"),
                    "input_data": inp.get("data"),
                    "output_content_type": out.get("observedContentType"),
                    "output_encoding": out.get("encoding"),
                    "output_data": out.get("data"),
                    "custom_attributes": meta.get("customAttributes"),
                    "source_file": f"s3://{key}",
                    "source_line": n,
                }
            )
    table = pa.Table.from_pylist(rows)
    # Times as timestamps, as the engine writes them; one vectorised cast, not what makes this script slow.
    times = table.column("inference_time").cast(pa.timestamp("ms", tz="UTC"))
    table = table.set_column(table.schema.get_field_index("inference_time"), "inference_time", times)
    pq.write_table(table, dest / "capture.parquet", compression="zstd")


_PAYLOAD_SQL: Final = "STRUCT(observedContentType VARCHAR, mode VARCHAR, data VARCHAR, encoding VARCHAR)"
_COLUMNS_SQL: Final = (
    "{"
    f"'captureData': 'STRUCT(endpointInput {_PAYLOAD_SQL}, endpointOutput {_PAYLOAD_SQL})', "
    "'eventMetadata': 'STRUCT(eventId VARCHAR, inferenceId VARCHAR, inferenceTime VARCHAR, "
    "customAttributes VARCHAR)', "
    "'eventVersion': 'VARCHAR'"
    "}"
)


def _sql_string(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def duckdb_copy_sql(source: str, dest: Path) -> str:
    """``COPY`` of the capture under `source` (a glob, local or s3://) to one Parquet file: the sequential
    script's columns."""
    select = f"""
        SELECT
            eventMetadata.eventId AS event_id,
            eventMetadata.inferenceId AS inference_id,
            try_cast(eventMetadata.inferenceTime AS TIMESTAMPTZ) AS inference_time,
            eventVersion AS event_version,
            captureData.endpointInput.observedContentType AS input_content_type,
            captureData.endpointInput.encoding AS input_encoding,
            captureData.endpointInput.data AS input_data,
            captureData.endpointOutput.observedContentType AS output_content_type,
            captureData.endpointOutput.encoding AS output_encoding,
            captureData.endpointOutput.data AS output_data,
            eventMetadata.customAttributes AS custom_attributes,
            filename AS source_file
        FROM read_json({_sql_string(source)}, format = 'newline_delimited', columns = {_COLUMNS_SQL},
                       filename = true)"""
    return f"COPY ({select}) TO {_sql_string(str(dest / 'capture.parquet'))} (FORMAT parquet, COMPRESSION zstd)"


class Unavailable(Exception):
    """The tool cannot run on this machine (not a failure of the tool)."""


def _wheel_extensions(version: str) -> str | None:
    """The extension directory of the ``duckdb-ext-*`` wheels (PyPI), if one holds extensions for `version`.

    DuckDB downloads its extensions from its own repository, which an offline machine cannot reach; these
    wheels (a ``duckdb_ext`` namespace package) bring the same signed binaries through pip instead.
    """
    import importlib.util

    spec = importlib.util.find_spec("duckdb_ext")
    for base in (spec.submodule_search_locations or []) if spec is not None else []:
        extensions = Path(base) / "extensions"
        if (extensions / f"v{version.lstrip('v')}").is_dir():
            return str(extensions)
    return None


def run_duckdb(src: str, dest: Path) -> None:
    """DuckDB over S3: httpfs, an S3 secret from the AWS environment, ``read_json`` of every object, one COPY."""
    import duckdb

    wheel = _wheel_extensions(duckdb.__version__)
    con = duckdb.connect(config={"extension_directory": wheel} if wheel else {})
    try:
        con.execute("LOAD httpfs")  # installed already (the extension directory), or built in
    except duckdb.Error:
        try:
            con.execute("INSTALL httpfs")  # downloads from DuckDB's extension repository: fails offline
            con.execute("LOAD httpfs")
        except duckdb.Error as exc:
            reason = str(exc).strip().splitlines()[0]
            raise Unavailable(f"DuckDB {duckdb.__version__} cannot load its httpfs extension ({reason})") from exc
    endpoint = urlsplit(os.environ["AWS_ENDPOINT_URL_S3"])
    settings = {
        "KEY_ID": os.environ["AWS_ACCESS_KEY_ID"],
        "SECRET": os.environ["AWS_SECRET_ACCESS_KEY"],
        "REGION": os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
        "ENDPOINT": endpoint.netloc,
        "URL_STYLE": "path",
    }
    options = ", ".join(f"{k} {_sql_string(v)}" for k, v in settings.items())
    con.execute(f"CREATE SECRET capture_bench (TYPE S3, {options}, USE_SSL {str(endpoint.scheme == 'https').lower()})")
    con.execute("SET TimeZone = 'UTC'")
    con.execute(duckdb_copy_sql(f"{src.rstrip('/')}/**/*.jsonl", dest))
    con.close()


_PEERS: Final = {"sequential": run_sequential, "duckdb": run_duckdb}


def peer_main(argv: Sequence[str]) -> int:
    """``peer TOOL SRC DEST``: run one peer; exit 69 with one ``unavailable: ...`` line if it cannot run here."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.s3_objects peer")
    parser.add_argument("tool", choices=sorted(_PEERS))
    parser.add_argument("src", help="s3://bucket/prefix of the capture objects")
    parser.add_argument("dest", type=Path, help="local directory for the Parquet output")
    args = parser.parse_args(argv)
    args.dest.mkdir(parents=True, exist_ok=True)
    try:
        _PEERS[args.tool](args.src, args.dest)
    except Unavailable as exc:
        print(f"{_UNAVAILABLE_PREFIX}{exc}", file=sys.stderr)
        return EX_UNAVAILABLE
    return 0


# --- running and measuring ----------------------------------------------------------------------------------


@dataclass
class Run:
    """One process run of one tool."""

    wall_seconds: float
    peak_rss_bytes: int
    cpu_seconds: float
    exit_code: int
    rows: int | None = None
    server_cpu_seconds: float | None = None  # the S3 server's CPU time during the run (it shares the cores)
    stderr_tail: str = ""
    engine_report: dict[str, Any] | None = None  # the engine's own per-stage timing from _SUCCESS


@dataclass
class ToolResult:
    tool: str
    command: list[str]
    runs: list[Run] = field(default_factory=list)
    unavailable: str | None = None  # why the tool cannot run here
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.unavailable is None and bool(self.runs) and not self.problems

    @property
    def wall(self) -> float | None:
        return statistics.median(r.wall_seconds for r in self.runs) if self.ok else None

    @property
    def peak_rss(self) -> int:
        return max((r.peak_rss_bytes for r in self.runs), default=0)


def _command(tool: str, src: str, dest: Path, *, python: str = sys.executable) -> list[str]:
    if tool in ("engine", "engine-seq"):
        # The documented command itself (what the capture-engine script runs), so the process timed is the engine's.
        concurrency = "32" if tool == "engine" else "1"
        engine = [sys.executable, "-m", "engine", "realtime", src, str(dest)]
        return [*engine, "--fetch-concurrency", concurrency, "--quiet"]
    return [python, "-m", "benchmarks.s3_objects", "peer", tool, src, str(dest)]


def _run(cmd: list[str], env: dict[str, str], log_base: Path, timeout: float) -> Run:
    """Run `cmd` to completion (killed after `timeout` seconds); output to files, so a full pipe never blocks it."""
    stdout_path, stderr_path = log_base.with_suffix(".stdout"), log_base.with_suffix(".stderr")
    with stdout_path.open("wb") as out, stderr_path.open("wb") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, stdin=subprocess.DEVNULL, cwd=REPO, env=env)
        killer = threading.Timer(timeout, proc.kill)
        killer.start()
        try:
            # wait4 gives this child's own rusage; RUSAGE_CHILDREN would be the maximum over every child so far.
            _, status, usage = os.wait4(proc.pid, 0)
        except BaseException:  # Ctrl-C: the tool must not outlive the server it reads from
            proc.kill()
            proc.wait()
            raise
        finally:
            killer.cancel()
        wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here: keep Popen from waiting again
    tail = ""
    if proc.returncode:
        tail = "\n".join(stderr_path.read_text(errors="replace").strip().splitlines()[-15:])
        if wall >= timeout:
            tail = f"killed after {timeout:.0f} s\n{tail}"
    return Run(
        wall_seconds=wall,
        peak_rss_bytes=usage.ru_maxrss * 1024,  # Linux reports KiB
        cpu_seconds=usage.ru_utime + usage.ru_stime,
        exit_code=proc.returncode,
        stderr_tail=tail,
    )


def _count_rows(dest: Path) -> int:
    """Rows of the Parquet dataset under `dest`; ``_rejects``, ``_temporary`` and ``_SUCCESS`` are not data."""
    import pyarrow.dataset as ds

    return int(ds.dataset(dest, format="parquet", partitioning="hive").count_rows())


def _tool_env(endpoint_env: dict[str, str]) -> dict[str, str]:
    """This process's environment without the caller's AWS settings, plus the benchmark server's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])
    return {**env, **endpoint_env}


class LatencyProxy:
    """A TCP proxy on 127.0.0.1 that holds every chunk a client sends for `delay` seconds before passing it on to
    the server (answers pass at once), like a network with that round trip to the object store.

    On loopback a GET is answered in about a millisecond, so every client is bound by its own CPU per request;
    against S3 each GET also waits some tens of milliseconds, which is what concurrent fetching hides. Bytes pass
    unchanged, so signatures stay valid: SigV4 signs the Host header the client sends (the proxy's address) and
    the server checks that same header. It runs on an event loop in a thread of the benchmark process, which
    only waits for the tool meanwhile; its CPU is not the tool's.
    """

    def __init__(self, upstream_port: int, delay: float) -> None:
        self.upstream_port = upstream_port
        self.delay = delay
        self.port = 0
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), name="latency-proxy", daemon=True)

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self._thread.start()
        if not self._ready.wait(10) or not self.port:
            raise RuntimeError("the latency proxy did not start")

    def close(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        writers: set[asyncio.StreamWriter] = set()  # both ends of every open connection
        handlers: set[asyncio.Task[None]] = set()

        async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            if task is not None:
                handlers.add(task)
                task.add_done_callback(handlers.discard)
            await self._connection(reader, writer, writers)

        server = await asyncio.start_server(accept, "127.0.0.1", 0)
        self.port = int(server.sockets[0].getsockname()[1])
        self._ready.set()
        async with server:
            await self._stop.wait()
        # Closing both ends of every connection ends its pipes (their reads see the end), so every handler returns
        # by itself: a cancelled handler task of asyncio's stream server would only be logged as an error.
        for writer in list(writers):
            writer.close()
        if handlers:
            await asyncio.wait(handlers, timeout=10)

    async def _connection(
        self,
        client_reader: asyncio.StreamReader,
        client_writer: asyncio.StreamWriter,
        writers: set[asyncio.StreamWriter],
    ) -> None:
        ends = [client_writer]
        writers.add(client_writer)
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
            ends.append(upstream_writer)
            writers.add(upstream_writer)
            pipes = [
                asyncio.create_task(self._pipe(client_reader, upstream_writer, self.delay)),
                asyncio.create_task(self._pipe(upstream_reader, client_writer, 0.0)),
            ]
            # Either side ending ends the connection (the client drops a keep-alive connection, or the server
            # does): closing both ends makes the other pipe's read see the end too.
            await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
            for writer in ends:
                writer.close()
            await asyncio.gather(*pipes, return_exceptions=True)
        except OSError:
            pass  # the server refused or dropped the connection: the client sees it closed
        finally:
            for writer in ends:
                writer.close()
                writers.discard(writer)

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
        """Copy `reader` to `writer`, each chunk `delay` seconds after it arrived (not after the previous one:
        chunks arriving together leave together, as on a link with that latency)."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def send() -> None:
            while True:
                due, data = await queue.get()
                if not data:  # the end, after everything queued before it
                    return
                if (wait := due - loop.time()) > 0:
                    await asyncio.sleep(wait)
                writer.write(data)
                await writer.drain()

        sender = asyncio.create_task(send())
        try:
            while data := await reader.read(2**16):
                queue.put_nowait((loop.time() + delay, data))
            queue.put_nowait((loop.time() + delay, b""))
            await sender
        except ConnectionError:
            pass  # either end went away: the connection is over
        finally:
            sender.cancel()  # a no-op once it is done; never leave it pending
            with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                await sender


def _cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of process `pid` so far (Linux /proc), to show how busy the server was."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# --- report -------------------------------------------------------------------------------------------------


def _median(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


def _row(r: ToolResult, objects: int, capture_bytes: int, baseline: float | None) -> list[str]:
    if r.unavailable is not None:
        return [r.tool, f"unavailable: {r.unavailable}", *["-"] * 8]
    if not r.ok or r.wall is None:
        return [r.tool, "failed", *["-"] * 7, "; ".join(r.problems)[:200]]
    walls = [run.wall_seconds for run in r.runs]
    shown = f"{r.wall:.2f}" + (f" ({min(walls):.2f}-{max(walls):.2f})" if len(walls) > 1 else "")
    speedup = f"{baseline / r.wall:.1f}x" if baseline else "-"
    server = _median([run.server_cpu_seconds for run in r.runs])
    return [
        r.tool,
        shown,
        f"{objects / r.wall:,.0f}",
        f"{capture_bytes / MB / r.wall:.1f}",
        f"{r.peak_rss / MB:,.0f}",
        speedup,
        f"{statistics.median(run.cpu_seconds for run in r.runs):.2f}",
        "-" if server is None else f"{server:.2f}",
        f"{r.runs[0].rows:,}",
        "OK",
    ]


def markdown_table(results: list[ToolResult], objects: int, capture_bytes: int) -> str:
    base = next((r.wall for r in results if r.tool == BASELINE), None)
    multi = any(len(r.runs) > 1 for r in results)
    header = [
        "tool",
        "median s" + (" (min-max)" if multi else ""),
        "objects/s",
        "MB/s",
        "peak RSS MB",
        f"speed-up vs {BASELINE}",
        "CPU s",
        "server CPU s",
        "rows",
        "check",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    lines += ["| " + " | ".join(_row(r, objects, capture_bytes, base)) + " |" for r in results]
    return "\n".join(lines)


def _result_json(r: ToolResult, objects: int, capture_bytes: int, baseline: float | None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "command": r.command,
        "unavailable": r.unavailable,
        "ok": r.ok,
        "problems": r.problems,
        "runs": [vars(run) for run in r.runs],
    }
    if r.wall is not None:
        out |= {
            "median_seconds": round(r.wall, 3),
            "objects_per_second": round(objects / r.wall, 1),
            "mb_per_second": round(capture_bytes / MB / r.wall, 2),
            "peak_rss_bytes": r.peak_rss,
            f"speedup_vs_{BASELINE}": round(baseline / r.wall, 2) if baseline else None,
            "median_cpu_seconds": round(statistics.median(run.cpu_seconds for run in r.runs), 2),
            "median_server_cpu_seconds": _median([run.server_cpu_seconds for run in r.runs]),
        }
    return out


# --- main ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Bench:
    """The uploaded data and how the tools reach it."""

    objects: int
    records: int
    capture_bytes: int
    upload_seconds: float
    env: dict[str, str]  # the tools' environment: AWS settings of the server (or of the latency proxy)
    server_pid: int


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.s3_objects", description=__doc__.split("\n\n")[0])
    parser.add_argument("--objects", type=int, default=5000, help="capture objects to upload (default 5000)")
    parser.add_argument("--records-per-object", type=int, default=16, help="records in each object (default 16)")
    parser.add_argument("--hours", type=int, default=6, help="hour folders the objects are spread over (default 6)")
    parser.add_argument("--tools", default=",".join(TOOLS), help=f"comma-separated, from {', '.join(TOOLS)} (all)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per tool, interleaved; the median is reported")
    parser.add_argument(
        "--latency-ms",
        type=float,
        default=0.0,
        help="delay added to every request on its way to the server, to emulate the round trip to a remote object "
        "store (default 0: plain loopback)",
    )
    parser.add_argument(
        "--duckdb-python",
        default=sys.executable,
        help="interpreter that runs the duckdb tool, e.g. of a virtual environment whose DuckDB has httpfs "
        "(the duckdb-ext-httpfs wheel of the same version); default: this one",
    )
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds after which a tool run is killed")
    parser.add_argument("--json", type=Path, default=RESULTS / "s3_objects.json", help="results file")
    return parser


def _upload(fs: Any, objects: dict[str, bytes]) -> float:
    """Create the bucket and put every object; returns the seconds it took."""
    fs.mkdir(BUCKET)
    t0 = time.perf_counter()
    # One pipe() of the whole dict: s3fs sends the PUTs concurrently, in batches, on its event loop.
    fs.pipe({f"{BUCKET}/{key}": body for key, body in objects.items()})
    return time.perf_counter() - t0


def _measure(r: ToolResult, bench: Bench, work: Path, rep: int, timeout: float) -> Run | None:
    """One run of one tool on a fresh destination, its rows counted; None if the tool cannot run here."""
    from benchmarks._harness import engine_report

    dest = work / r.tool
    shutil.rmtree(dest, ignore_errors=True)
    cpu0 = _cpu_seconds(bench.server_pid)
    run = _run(r.command, bench.env, work / f"{r.tool}-{rep}", timeout)
    cpu1 = _cpu_seconds(bench.server_pid)
    run.server_cpu_seconds = None if cpu0 is None or cpu1 is None else round(cpu1 - cpu0, 2)
    why = [ln for ln in run.stderr_tail.splitlines() if ln.startswith(_UNAVAILABLE_PREFIX)]
    if run.exit_code == EX_UNAVAILABLE and why:
        r.unavailable = why[-1][len(_UNAVAILABLE_PREFIX) :]
        return None
    if run.exit_code == 0:
        try:
            run.rows = _count_rows(dest)
        except (OSError, ValueError) as exc:  # no output, or not Parquet (pyarrow's errors are ValueErrors)
            r.problems.append(f"run {rep + 1}: output unreadable: {exc}")
        if r.tool.startswith("engine"):
            run.engine_report = engine_report(dest)
        if run.rows is not None and run.rows != bench.records:
            r.problems.append(f"run {rep + 1}: {run.rows:,} rows, {bench.records:,} records were uploaded")
    else:
        r.problems.append(f"run {rep + 1} exited {run.exit_code}: {run.stderr_tail}")
    r.runs.append(run)
    shutil.rmtree(dest, ignore_errors=True)
    return run


def _report(
    args: argparse.Namespace, argv: list[str], bench: Bench, results: list[ToolResult], started: datetime
) -> bool:
    """Write the JSON results, print the table; True if every available tool wrote every record."""
    from benchmarks._harness import machine

    table = markdown_table(results, bench.objects, bench.capture_bytes)
    baseline = next((r.wall for r in results if r.tool == BASELINE), None)
    ok = all(r.ok or r.unavailable is not None for r in results)
    legend = (
        "median s: whole process (interpreter start and imports included); objects/s and MB/s over the objects and "
        f"bytes uploaded; peak RSS: the process's own ru_maxrss; speed-up: {BASELINE} median / tool median; "
        "CPU s: the tool's user + system seconds; server CPU s: the S3 server's during the run (same cores)."
    )
    document = {
        "benchmark": "s3_objects",
        "date": started.isoformat(timespec="seconds"),
        "total_seconds": round((datetime.now(timezone.utc) - started).total_seconds(), 1),
        "command": [Path(sys.executable).name, "-m", "benchmarks.s3_objects", *argv],
        "objects": bench.objects,
        "records_per_object": args.records_per_object,
        "records": bench.records,
        "capture_bytes": bench.capture_bytes,
        "hours": args.hours,
        "repeat": args.repeat,
        "upload_seconds": round(bench.upload_seconds, 2),
        "server": "SeaweedFS (weed mini) on 127.0.0.1, sharing the machine with the tools",
        "latency_ms": args.latency_ms,
        "machine": machine(),
        "ok": ok,
        "table_markdown": table,
        "legend": legend,
        "tools": {r.tool: _result_json(r, bench.objects, bench.capture_bytes, baseline) for r in results},
    }
    # Results first: printing can fail (a closed pipe) and must not lose a long run.
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(document, indent=2) + "\n")

    network = f"loopback + {args.latency_ms:g} ms per request" if args.latency_ms else "loopback"
    print(
        f"\n## {bench.objects:,} capture objects on S3 (SeaweedFS, {network}): {bench.records:,} records, "
        f"{bench.capture_bytes / MB:,.1f} MB; {os.cpu_count()} CPUs; median of {args.repeat} run(s)\n"
    )
    print(table)
    for r in results:
        for problem in r.problems:
            print(f"- {r.tool}: {problem}")
    print("\n" + legend)
    return ok


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["peer"]:
        return peer_main(argv[1:])
    parser = _parser()
    args = parser.parse_args(argv)
    tools = [t.strip() for t in args.tools.split(",") if t.strip()]
    unknown = sorted(set(tools) - set(TOOLS))
    if unknown or not tools:
        parser.error(f"unknown tools {unknown}" if unknown else "no tool given")
    if min(args.repeat, args.objects, args.records_per_object, args.hours) < 1 or args.latency_ms < 0:
        parser.error(
            "--repeat, --objects, --records-per-object and --hours must be positive, --latency-ms not negative"
        )

    # Imported here, not at the top: the peer processes run this module too and must not pay for pytest & co.
    from tests.s3_server import WeedServer

    started = datetime.now(timezone.utc)
    t_start = time.perf_counter()

    def say(msg: str) -> None:
        print(f"[{time.perf_counter() - t_start:7.1f}s] {msg}", file=sys.stderr, flush=True)

    work = Path(tempfile.mkdtemp(prefix="s3-objects-bench-"))
    (work / "server").mkdir()
    server = WeedServer(work / "server")
    proxy: LatencyProxy | None = None
    src = f"s3://{BUCKET}/capture"
    python = {"duckdb": args.duckdb_python}
    results = [ToolResult(t, _command(t, src, work / t, python=python.get(t, sys.executable))) for t in tools]
    try:
        server.start()
        say(f"SeaweedFS S3 server up at {server.endpoint_url}")
        objects = capture_objects(args.objects, args.records_per_object, hours=args.hours)
        # More connections than botocore's default 10: the PUTs are many and small (setup only, not timed).
        upload_seconds = _upload(server.endpoint.filesystem(config_kwargs={"max_pool_connections": 64}), objects)
        endpoint = server.endpoint
        if args.latency_ms:
            proxy = LatencyProxy(server.ports["s3.port"], args.latency_ms / 1000)
            proxy.start()
            endpoint = dataclasses.replace(endpoint, endpoint_url=proxy.endpoint_url)
        bench = Bench(
            objects=args.objects,
            records=args.objects * args.records_per_object,
            capture_bytes=sum(len(b) for b in objects.values()),
            upload_seconds=upload_seconds,
            env=_tool_env(endpoint.env()),
            server_pid=server.proc.pid if server.proc is not None else 0,
        )
        del objects
        say(
            f"uploaded {bench.objects:,} objects ({bench.records:,} records, {bench.capture_bytes / MB:,.1f} MB, "
            f"{bench.capture_bytes / bench.objects / 1000:.1f} KB each) in {upload_seconds:.1f} s"
            + (f"; the tools reach them through a proxy adding {args.latency_ms:g} ms per request" if proxy else "")
        )
        for rep in range(args.repeat):
            for r in results:
                if r.unavailable is not None:
                    continue
                run = _measure(r, bench, work, rep, args.timeout)
                if run is None:
                    say(f"{r.tool}: unavailable: {r.unavailable}")
                    continue
                server_cpu = "-" if run.server_cpu_seconds is None else f"{run.server_cpu_seconds:.2f}"
                say(
                    f"{r.tool} run {rep + 1}/{args.repeat}: {run.wall_seconds:.2f} s ({run.cpu_seconds:.2f} CPU s, "
                    f"server {server_cpu} CPU s), peak RSS {run.peak_rss_bytes / MB:,.0f} MB, "
                    f"{'-' if run.rows is None else f'{run.rows:,}'} rows, "
                    f"{'ok' if run.exit_code == 0 and run.rows == bench.records else 'FAILED'}"
                )
    finally:
        if proxy is not None:
            proxy.close()
        server.close()  # stops the server process (SIGTERM, then SIGKILL) and removes its data
        shutil.rmtree(work, ignore_errors=True)

    ok = _report(args, argv, bench, results, started)
    say(f"{'OK' if ok else 'FAILURE or MISMATCH'}; results written to {args.json}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
