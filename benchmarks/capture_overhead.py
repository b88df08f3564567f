"""What the capture middleware costs a request: a trivial model with and without it.

    python -m benchmarks.capture_overhead [--requests 20000] [--seconds 5] [--clients 4] [--repeat 3] [--json PATH]

Two measurements, each of a trivial model that answers every POST with ``0.5`` (so that the middleware's share
is as large as it can be), over a request body like SageMaker's churn example (69 CSV features, ~300 bytes):

* in process: the ASGI app (and the WSGI app) called directly ``--requests`` times, bare, wrapped with
  sampling 0 % (one draw per request) and wrapped with sampling 100 % (copy, record, and the writer thread
  encoding and writing local capture objects meanwhile). Wall and process CPU microseconds per request; the
  CPU figure includes the writer thread's work, the wall figure what a request waits for.
* end to end: uvicorn in a subprocess on a free loopback port, ``--clients`` keep-alive client threads for
  ``--seconds``; requests/s bare and with 100 % capture, alternated ``--repeat`` times (medians). Clients and
  server share the machine's cores, so this is the least favourable case for the server.

Every captured run is checked: each sampled request must be written or counted as dropped (the table shows
both: a loop that calls the app directly can outrun the writer thread, which then drops by its loss policy).
The server processes run this module as ``python -m benchmarks.capture_overhead serve MODE PORT DEST``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import json
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

BODY = ",".join(str((i * 37) % 100 + 0.5) for i in range(69)).encode()
HEADERS = [(b"content-type", b"text/csv"), (b"content-length", str(len(BODY)).encode())]


async def model(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/csv")]})
    await send({"type": "http.response.body", "body": b"0.5"})


def wsgi_model(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
    start_response("200 OK", [("Content-Type", "text/csv")])
    return [b"0.5"]


def _writer(dest: str, percentage: float) -> Any:
    from engine.capture import CaptureWriter

    return CaptureWriter(dest, endpoint="bench", sampling_percentage=percentage)


def _app(mode: str, dest: str) -> tuple[Any, Any]:
    from engine.capture import CaptureMiddleware

    if mode == "bare":
        return model, None
    writer = _writer(dest, 100.0 if mode == "capture" else 0.0)
    return CaptureMiddleware(model, writer), writer


def _in_process_asgi(app: Any, n: int) -> tuple[float, float]:
    scope = {"type": "http", "method": "POST", "path": "/invocations", "headers": HEADERS}
    request = {"type": "http.request", "body": BODY, "more_body": False}

    async def receive() -> dict[str, Any]:
        return request

    async def send(message: dict[str, Any]) -> None:
        pass

    async def run() -> None:
        for _ in range(n):
            await app(scope, receive, send)

    w0, c0 = time.perf_counter(), time.process_time()
    asyncio.run(run())
    return (time.perf_counter() - w0) / n * 1e6, (time.process_time() - c0) / n * 1e6


def _in_process_wsgi(app: Any, n: int) -> tuple[float, float]:
    import io

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        return None

    w0, c0 = time.perf_counter(), time.process_time()
    for _ in range(n):
        environ = {
            "REQUEST_METHOD": "POST",
            "PATH_INFO": "/invocations",
            "CONTENT_TYPE": "text/csv",
            "CONTENT_LENGTH": str(len(BODY)),
            "wsgi.input": io.BytesIO(BODY),
        }
        result = app(environ, start_response)
        for _chunk in result:
            pass
        close = getattr(result, "close", None)
        if close:
            close()
    return (time.perf_counter() - w0) / n * 1e6, (time.process_time() - c0) / n * 1e6


def _check(writer: Any, expected: int) -> dict[str, int]:
    """The writer's counts once closed; every sampled request must be written or counted as dropped."""
    writer.close()
    s = writer.stats
    assert s.sampled == expected and s.written + s.dropped == s.sampled and s.lost_write_errors == 0, s
    return {"written": s.written, "dropped": s.dropped, "objects": s.objects}


def in_process(n: int, tmp: Path) -> list[dict[str, Any]]:
    from engine.capture import WSGICaptureMiddleware

    rows = []
    for mode in ("bare", "sample-0", "capture"):
        app, writer = _app(mode, str(tmp / f"asgi-{mode}"))
        _in_process_asgi(app, min(n, 2000))  # warm up
        if writer is not None:
            writer.close()
            app, writer = _app(mode, str(tmp / f"asgi-{mode}-run"))
        wall, cpu = _in_process_asgi(app, n)
        extra = _check(writer, n if mode == "capture" else 0) if writer is not None else {}
        rows.append({"server": "asgi (direct)", "mode": mode, "wall_us": wall, "cpu_us": cpu, **extra})
    for mode in ("bare", "sample-0", "capture"):
        writer = None if mode == "bare" else _writer(str(tmp / f"wsgi-{mode}"), 100.0 if mode == "capture" else 0.0)
        app = wsgi_model if writer is None else WSGICaptureMiddleware(wsgi_model, writer)
        wall, cpu = _in_process_wsgi(app, n)
        extra = _check(writer, n if mode == "capture" else 0) if writer is not None else {}
        rows.append({"server": "wsgi (direct)", "mode": mode, "wall_us": wall, "cpu_us": cpu, **extra})
    return rows


def serve(mode: str, port: int, dest: str) -> None:
    import uvicorn

    app, writer = _app(mode, dest)
    # uvicorn re-raises the SIGINT it shut down on (the middleware has closed the writer in the lifespan by then).
    with contextlib.suppress(KeyboardInterrupt):
        uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False, lifespan="on")
    if writer is not None:
        s = writer.stats
        print(json.dumps({"sampled": s.sampled, "written": s.written, "dropped": s.dropped}), flush=True)


def _load(port: int, seconds: float, clients: int) -> float:
    done = [0] * clients
    stop = time.monotonic() + seconds

    def client(k: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        while time.monotonic() < stop:
            conn.request("POST", "/invocations", body=BODY, headers={"Content-Type": "text/csv"})
            conn.getresponse().read()
            done[k] += 1
        conn.close()

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(done) / (time.perf_counter() - t0)


def end_to_end(mode: str, seconds: float, clients: int, tmp: Path) -> float:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dest = str(tmp / f"e2e-{mode}-{time.monotonic_ns()}")
    proc = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.capture_overhead", "serve", mode, str(port), dest],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError(f"the {mode} server did not start") from None
                time.sleep(0.05)
        _load(port, min(1.0, seconds), clients)  # warm up
        rate = _load(port, seconds, clients)
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    if mode == "capture":
        stats = json.loads(out.strip().splitlines()[-1])
        assert stats["written"] == stats["sampled"] and stats["dropped"] == 0, stats
    return rate


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] == "serve":
        serve(args[1], int(args[2]), args[3])
        return 0
    p = argparse.ArgumentParser(prog="python -m benchmarks.capture_overhead", description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=20_000, help="in-process requests per mode")
    p.add_argument("--seconds", type=float, default=5.0, help="end-to-end load per run")
    p.add_argument("--clients", type=int, default=4, help="end-to-end client threads")
    p.add_argument("--repeat", type=int, default=3, help="end-to-end runs per mode (alternated)")
    p.add_argument("--json", help="also write the results here")
    o = p.parse_args(args)
    with tempfile.TemporaryDirectory() as tmp:
        rows = in_process(o.requests, Path(tmp))
        rates: dict[str, list[float]] = {"bare": [], "capture": []}
        for _ in range(o.repeat):
            for mode in rates:
                rates[mode].append(end_to_end(mode, o.seconds, o.clients, Path(tmp)))
    bare = {r["server"]: r for r in rows if r["mode"] == "bare"}
    print(
        f"{'server':<15} {'mode':<9} {'wall us/req':>12} {'cpu us/req':>11} {'overhead wall':>14} "
        f"{'overhead cpu':>13} {'written':>8} {'dropped':>8}"
    )
    for r in rows:
        b = bare[r["server"]]
        print(
            f"{r['server']:<15} {r['mode']:<9} {r['wall_us']:>12.1f} {r['cpu_us']:>11.1f} "
            f"{r['wall_us'] - b['wall_us']:>+14.1f} {r['cpu_us'] - b['cpu_us']:>+13.1f} "
            f"{r.get('written', ''):>8} {r.get('dropped', ''):>8}"
        )
    med = {m: statistics.median(v) for m, v in rates.items()}
    print(
        f"uvicorn, {o.clients} clients, {o.seconds:g}s x {o.repeat}: bare {med['bare']:,.0f} req/s "
        f"(runs {', '.join(f'{v:,.0f}' for v in rates['bare'])}), with capture {med['capture']:,.0f} req/s "
        f"(runs {', '.join(f'{v:,.0f}' for v in rates['capture'])}): "
        f"{(1 / med['capture'] - 1 / med['bare']) * 1e6:+.0f} us per request"
    )
    if o.json:
        Path(o.json).write_text(json.dumps({"in_process": rows, "uvicorn_rps": rates, "options": vars(o)}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
