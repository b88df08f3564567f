"""The capture middleware under real servers, read back by the real CLI.

A small model (CSV, JSON, JSON Lines and binary in; sums out) is served by uvicorn (ASGI, behind two nested
`CaptureMiddleware`: every invocation of some paths, a seeded 50 % of another) and by the stdlib's wsgiref
(WSGI, `WSGICaptureMiddleware`), each on a free loopback port with concurrent keep-alive clients. Then
``capture-engine realtime`` and ``realtime --decode`` (subprocesses) read the capture, and every row must be
exactly one exchange the clients saw: bodies, content types, encodings, inference ID, custom attributes, time
and provenance; decoded rows must carry the values sent and predicted. Streamed responses, 4xx answers, an
app that fails mid-stream and a stream above the payload limit are counted as the writer documents. Once on
S3 (SeaweedFS), the same round trip.
"""

from __future__ import annotations

import base64
import http.client
import json
import math
import os
import re
import signal
import socket
import socketserver
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

import pyarrow.dataset as ds
import pytest
import uvicorn

from engine.capture import CaptureMiddleware, CaptureWriter, WSGICaptureMiddleware
from tests.conftest import ROOT

if TYPE_CHECKING:
    from tests.s3_server import S3Endpoint

pytest_plugins = ["tests.s3_server"]

UTC = timezone.utc
JSON_TYPES = ("application/json", "application/jsonlines")
PAYLOAD_LIMIT = 64 * 2**10
SAMPLED_REQUESTS = 240
UUID4 = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")


# -- the model ----------------------------------------------------------------------------------------------


def _rows(i: int) -> list[list[float]]:
    """1-3 feature rows unique to request `i`."""
    return [[float(i), j + 0.5, float((i * 7 + j) % 11)] for j in range(1 + i % 3)]


def request_for(i: int) -> tuple[str, bytes]:
    """Content-Type and body of request `i`: CSV, JSON, JSON Lines or binary, in turn."""
    rows = _rows(i)
    kind = i % 4
    if kind == 0:
        return "text/csv", "\n".join(",".join(f"{v:g}" for v in r) for r in rows).encode()
    if kind == 1:
        return "application/json", json.dumps({"instances": [{"features": r} for r in rows]}).encode()
    if kind == 2:
        return "application/jsonlines", "".join(json.dumps({"features": r}) + "\n" for r in rows).encode()
    return "application/x-npy", bytes([i % 256, 0, 255, 10]) + i.to_bytes(4, "big")


def predict(content_type: str, body: bytes) -> tuple[int, str, bytes]:
    """(status, Content-Type, body) of the model's answer: the sum of each row's features."""
    if body.startswith(b"bad"):
        return 400, "text/plain", b"cannot parse the request"
    if content_type == "text/csv":
        sums = [sum(float(v) for v in line.split(",")) for line in body.decode().splitlines()]
        return 200, "text/csv; charset=utf-8", "\n".join(f"{s:g}" for s in sums).encode()
    if content_type == "application/json":
        sums = [sum(x["features"]) for x in json.loads(body)["instances"]]
        return 200, "application/json", json.dumps({"predictions": [{"score": s} for s in sums]}).encode()
    if content_type == "application/jsonlines":
        sums = [sum(json.loads(line)["features"]) for line in body.decode().splitlines()]
        return 200, "application/jsonlines", "".join(json.dumps({"score": s}) + "\n" for s in sums).encode()
    return 200, "application/octet-stream", body[::-1]


async def asgi_model(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["method"] == "GET":  # /ping
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})
        return
    body, more = b"", True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    content_type = dict(scope["headers"]).get(b"content-type", b"").decode()
    status, out_type, out = predict(content_type, body)
    if scope["path"] == "/big":
        out = b"x" * (PAYLOAD_LIMIT + 40_000)
    start = {"type": "http.response.start", "status": status, "headers": [(b"content-type", out_type.encode())]}
    await send(start)
    if scope["path"] in ("/stream", "/big", "/boom"):
        step = max(1, len(out) // 3)
        chunks = [out[k : k + step] for k in range(0, len(out), step)]
        for chunk in chunks[:-1]:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        if scope["path"] == "/boom":
            raise RuntimeError("the model failed mid-stream")
        await send({"type": "http.response.body", "body": chunks[-1]})
        return
    await send({"type": "http.response.body", "body": out})


def wsgi_model(environ: dict[str, Any], start_response: Any) -> Any:
    body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
    status, out_type, out = predict(environ.get("CONTENT_TYPE", ""), body)
    start_response(f"{status} {'OK' if status == 200 else 'Bad Request'}", [("Content-Type", out_type)])
    if environ["PATH_INFO"] == "/stream":
        return (out[k : k + 5] for k in range(0, len(out), 5))  # a generator: streamed by the server
    return [out]


# -- servers and clients ------------------------------------------------------------------------------------


@dataclass
class Exchange:
    """One request as the client made it and the answer it got."""

    endpoint: str
    path: str
    content_type: str
    body: bytes
    inference_id: str | None
    custom_attributes: str | None
    sent: datetime
    received: datetime
    status: int = 0
    response_type: str | None = None
    response: bytes = b""
    complete: bool = False


def _listener() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    return sock


def _client(port: int, jobs: list[tuple[str, str, int]], out: list[Exchange]) -> None:
    """Sends `jobs` (endpoint, path, request number) over one keep-alive connection, reconnecting on failure."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    for endpoint, path, i in jobs:
        content_type, body = request_for(i)
        if path == "/bad":
            body = b"bad " + body
        headers = {"Content-Type": content_type}
        iid = f"req-{endpoint}-{i}" if i % 3 else None
        attrs = f"client=test; n={i}" if i % 2 == 0 else None
        if iid:
            headers["X-Amzn-SageMaker-Inference-Id"] = iid
        if attrs:
            headers["X-Amzn-SageMaker-Custom-Attributes"] = attrs
        x = Exchange(endpoint, path, content_type, body, iid, attrs, datetime.now(UTC), datetime.now(UTC))
        try:
            conn.request("POST", path, body=body, headers=headers)
            resp = conn.getresponse()
            x.status, x.response_type = resp.status, resp.getheader("Content-Type")
            x.response = resp.read()
            x.complete = True
        except (http.client.HTTPException, OSError):
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        x.received = datetime.now(UTC)
        out.append(x)
    conn.request("GET", "/ping")  # not an invocation: never sampled
    conn.getresponse().read()
    conn.close()


def _run_clients(port: int, jobs: list[tuple[str, str, int]], clients: int) -> list[Exchange]:
    out: list[Exchange] = []
    threads = [threading.Thread(target=_client, args=(port, jobs[k::clients], out)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(out) == len(jobs)
    return out


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    return subprocess.Popen(
        [sys.executable, "-m", "engine", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**base, **(env or {})},
        cwd=ROOT,
    )


def _finish(proc: subprocess.Popen[str]) -> None:
    _out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert " rejected " not in err


@dataclass
class Served:
    exchanges: list[Exchange]
    writers: dict[str, CaptureWriter]
    capture: Path
    raw: list[dict[str, Any]]
    decoded: list[dict[str, Any]]
    reports: tuple[dict[str, Any], dict[str, Any]]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("served")
    dest = str(root / "capture")
    settings: dict[str, Any] = {"json_content_types": JSON_TYPES, "max_payload_bytes": PAYLOAD_LIMIT}
    writers = {
        "asgi-all": CaptureWriter(
            dest, endpoint="asgi-all", sampling_percentage=100, max_object_bytes=8192, **settings
        ),
        "asgi-sampled": CaptureWriter(dest, endpoint="asgi-sampled", sampling_percentage=50, seed=3, **settings),
        "wsgi-all": CaptureWriter(dest, endpoint="wsgi-all", sampling_percentage=100, **settings),
    }
    # Nested: each middleware captures its own paths and passes everything else (lifespan too) through.
    inner = CaptureMiddleware(
        asgi_model, writers["asgi-all"], paths={"/invocations", "/stream", "/bad", "/boom", "/big"}
    )
    app = CaptureMiddleware(inner, writers["asgi-sampled"], paths={"/sampled"})
    sock = _listener()
    server = uvicorn.Server(uvicorn.Config(app, lifespan="on", log_level="critical", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.02)
    jobs = [("asgi-all", "/invocations", i) for i in range(120)]
    jobs += [("asgi-all", "/stream", i) for i in range(120, 140)]
    jobs += [("asgi-all", path, 140 + 3 * k + i) for k, path in enumerate(("/bad", "/boom", "/big")) for i in range(3)]
    jobs += [("asgi-sampled", "/sampled", i) for i in range(1000, 1000 + SAMPLED_REQUESTS)]
    exchanges = _run_clients(sock.getsockname()[1], jobs, clients=8)
    server.should_exit = True
    thread.join(30)
    assert not thread.is_alive()

    class Threading(socketserver.ThreadingMixIn, WSGIServer):
        daemon_threads = True

    class Quiet(WSGIRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

    wsgi = Threading(("127.0.0.1", 0), Quiet)
    wsgi.set_app(WSGICaptureMiddleware(wsgi_model, writers["wsgi-all"], paths={"/invocations", "/stream", "/bad"}))
    wsgi_thread = threading.Thread(target=wsgi.serve_forever, daemon=True)
    wsgi_thread.start()
    jobs = [("wsgi-all", "/invocations", i) for i in range(2000, 2060)]
    jobs += [("wsgi-all", "/stream", i) for i in range(2060, 2080)] + [("wsgi-all", "/bad", i) for i in (2080, 2081)]
    exchanges += _run_clients(wsgi.server_address[1], jobs, clients=4)
    wsgi.shutdown()
    wsgi.server_close()
    assert writers["wsgi-all"].close(timeout=30)

    raw, decoded = _cli("realtime", dest, str(root / "raw")), _cli("realtime", dest, str(root / "decoded"), "--decode")
    _finish(raw)
    _finish(decoded)
    tables = [ds.dataset(root / name, format="parquet", partitioning="hive").to_table() for name in ("raw", "decoded")]
    reports = tuple(json.loads((root / name / "_SUCCESS").read_text()) for name in ("raw", "decoded"))
    yield Served(exchanges, writers, Path(dest), tables[0].to_pylist(), tables[1].to_pylist(), reports)  # type: ignore[arg-type]
    for w in writers.values():
        w.close()


def _captured_body(row: dict[str, Any], side: str) -> bytes:
    data = row[f"{side}_data"]
    return base64.b64decode(data) if row[f"{side}_encoding"] == "BASE64" else data.encode()


ENCODINGS = {"text/csv": "CSV", "application/json": "JSON", "application/jsonlines": "JSON"}


def test_every_complete_exchange_is_captured_exactly_once_with_its_provenance(served: Served) -> None:
    rows = served.raw
    assert served.reports[0]["rejected"] == 0 and served.reports[0]["records"] == len(rows)
    by_body = {(x.endpoint, x.body): x for x in served.exchanges}
    assert len(by_body) == len(served.exchanges)  # every request unique
    seen: set[tuple[str, bytes]] = set()
    lines: dict[str, list[bytes]] = {}
    for row in rows:
        key = (row["endpoint"], _captured_body(row, "input"))
        assert key in by_body and key not in seen
        seen.add(key)
        x = by_body[key]
        assert x.complete and x.status == 200
        assert row["variant"] == "AllTraffic"
        assert _captured_body(row, "output") == x.response
        assert (row["input_content_type"], row["output_content_type"]) == (x.content_type, x.response_type)
        assert row["input_encoding"] == ENCODINGS.get(x.content_type, "BASE64")
        assert row["output_encoding"] == ENCODINGS.get(x.content_type, "BASE64")
        assert (row["inference_id"], row["custom_attributes"]) == (x.inference_id, x.custom_attributes)
        assert x.sent.replace(microsecond=0) <= row["inference_time"] <= x.received
        assert UUID4.fullmatch(row["event_id"])
        # Provenance: the named line of the named object is this event, in its hour folder.
        path = row["source_file"].removeprefix("file://")
        assert path.startswith(
            str(served.capture / row["endpoint"] / "AllTraffic" / f"{row['inference_time']:%Y/%m/%d/%H}")
        )
        if path not in lines:
            lines[path] = Path(path).read_bytes().splitlines()
        assert json.loads(lines[path][row["source_line"] - 1])["eventMetadata"]["eventId"] == row["event_id"]
    assert len({r["event_id"] for r in rows}) == len(rows)

    # Every complete 2xx exchange of the fully captured endpoints is there (nothing lost), streamed ones too.
    expected = {
        (x.endpoint, x.body)
        for x in served.exchanges
        if x.endpoint != "asgi-sampled" and x.complete and x.status == 200 and x.path != "/big"
    }
    assert {k for k in seen if k[0] != "asgi-sampled"} == expected
    assert {x.path for x in served.exchanges if (x.endpoint, x.body) in expected} == {"/invocations", "/stream"}
    assert len(lines) > 3  # the 8 KiB roll made several objects


def test_counters_account_for_every_invocation(served: Served) -> None:
    rows_per_endpoint = {e: sum(r["endpoint"] == e for r in served.raw) for e in served.writers}
    for endpoint, writer in served.writers.items():
        s = writer.stats
        assert writer.closed  # the ASGI writers by the lifespan shutdown, the WSGI one by the test
        offered = [x for x in served.exchanges if x.endpoint == endpoint]
        assert s.requests == len(offered)  # GET /ping was never offered
        assert s.sampled == s.captured + s.dropped + s.skipped_status + s.skipped_incomplete
        assert s.written == s.captured == rows_per_endpoint[endpoint]
        assert s.lost_write_errors == s.dropped_buffer_full == s.queued_events == s.open_events == 0
    a = served.writers["asgi-all"].stats
    assert (a.skipped_status, a.skipped_incomplete, a.dropped_too_large) == (3, 3, 3)
    big = [x for x in served.exchanges if x.path == "/big"]
    assert all(x.complete and len(x.response) == PAYLOAD_LIMIT + 40_000 for x in big)  # the stream went on whole
    assert served.writers["wsgi-all"].stats.skipped_status == 2

    s = served.writers["asgi-sampled"].stats
    n, p = SAMPLED_REQUESTS, 0.5
    assert abs(s.sampled - n * p) <= 4.5 * math.sqrt(n * p * (1 - p))
    assert 0 < s.sampled < n


def test_decoded_records_carry_the_values_sent_and_predicted(served: Served) -> None:
    assert served.reports[1]["rejected"] == 0
    exchange_of = {
        r["event_id"]: next(
            x for x in served.exchanges if (x.endpoint, x.body) == (r["endpoint"], _captured_body(r, "input"))
        )
        for r in served.raw
    }
    records: dict[str, list[dict[str, Any]]] = {}
    for rec in served.decoded:
        records.setdefault(rec["event_id"], []).append(rec)
    assert set(records) == set(exchange_of)
    kinds = set()
    for event_id, recs in records.items():
        x = exchange_of[event_id]
        recs.sort(key=lambda r: r["record_index"])
        kinds.add(x.content_type)
        if x.content_type == "application/x-npy":
            assert [(r["input_data"], r["output_data"]) for r in recs] == [(x.body, x.response)]
            continue
        number = int(_rows_of(x)[0][0])
        rows = _rows(number)
        assert [r["record_index"] for r in recs] == list(range(len(rows)))
        for rec, features in zip(recs, rows, strict=True):
            got = [rec["f0"], rec["f1"], rec["f2"]] if x.content_type == "text/csv" else rec["features"]
            assert got == features
            assert float(rec["prediction"]) == pytest.approx(sum(features))
    assert kinds == {"text/csv", "application/json", "application/jsonlines", "application/x-npy"}


def _rows_of(x: Exchange) -> list[list[float]]:
    if x.content_type == "text/csv":
        return [[float(v) for v in line.split(",")] for line in x.body.decode().splitlines()]
    if x.content_type == "application/json":
        return [i["features"] for i in json.loads(x.body)["instances"]]
    return [json.loads(line)["features"] for line in x.body.decode().splitlines()]


@pytest.mark.s3
def test_capture_to_s3_reads_back_through_the_cli(s3_server: S3Endpoint, s3_bucket: str, tmp_path: Path) -> None:
    dest = f"s3://{s3_bucket}/data-capture"
    sent = [request_for(i) for i in range(40)]
    with CaptureWriter(
        dest,
        endpoint="s3-endpoint",
        sampling_percentage=100,
        json_content_types=JSON_TYPES,
        max_object_bytes=4096,
        storage_options=s3_server.storage_options(),
    ) as w:
        for i, (content_type, body) in enumerate(sent):
            _status, out_type, out = predict(content_type, body)
            assert w.capture(
                request=body,
                request_content_type=content_type,
                response=out,
                response_content_type=out_type,
                inference_id=f"s3-{i}",
            )
    assert w.stats.written == 40 and w.stats.objects > 1 and w.stats.write_errors == 0
    keys = s3_server.filesystem().find(f"{s3_bucket}/data-capture")
    assert keys and all(
        re.search(r"/s3-endpoint/AllTraffic/\d{4}/\d{2}/\d{2}/\d{2}/\d{2}-\d{2}-\d{3}-[0-9a-f-]{36}\.jsonl$", k)
        for k in keys
    )
    proc = _cli("realtime", dest, str(tmp_path / "out"), env=s3_server.env())
    _finish(proc)
    rows = ds.dataset(tmp_path / "out", format="parquet", partitioning="hive").to_table().to_pylist()
    got = {r["inference_id"]: (_captured_body(r, "input"), _captured_body(r, "output")) for r in rows}
    assert got == {f"s3-{i}": (body, predict(ct, body)[2]) for i, (ct, body) in enumerate(sent)}
    assert all(r["source_file"].startswith(f"{dest}/s3-endpoint/AllTraffic/") for r in rows)


SIGTERM_SERVER = """
import sys
import uvicorn
from engine.capture import CaptureMiddleware, CaptureWriter

async def model(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                return
    more = True
    while more:
        more = (await receive()).get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/csv")]})
    await send({"type": "http.response.body", "body": b"0.5"})

writer = CaptureWriter(sys.argv[1], endpoint="sigterm", sampling_percentage=100, max_object_seconds=3600)
app = CaptureMiddleware(model, writer, close_on_shutdown=sys.argv[3] == "close")
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="critical")
"""


def test_uvicorn_stopped_by_sigterm_flushes_the_capture(tmp_path: Path) -> None:
    """A real server process stopped as a container runtime stops it: the lifespan shutdown closes the writer.
    (Without ``close_on_shutdown`` nothing would be written: uvicorn re-raises SIGTERM once it has shut down,
    and Python runs no atexit hook then.)"""
    with _listener() as probe:
        port = probe.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-c", SIGTERM_SERVER, str(tmp_path), str(port), "close"], cwd=ROOT)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, "the server did not start"
                time.sleep(0.05)
        exchanges = _run_clients(port, [("sigterm", "/invocations", i) for i in range(6)], clients=2)
        assert not list(tmp_path.rglob("*.jsonl"))  # held in memory: objects roll after an hour here
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    (path,) = tmp_path.rglob("*.jsonl")
    lines = [json.loads(line) for line in path.read_bytes().splitlines()]
    sent = sorted(x.body for x in exchanges)
    got = []
    for line in lines:
        side = line["captureData"]["endpointInput"]
        got.append(base64.b64decode(side["data"]) if side["encoding"] == "BASE64" else side["data"].encode())
    assert sorted(got) == sent
