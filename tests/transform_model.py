"""A tiny numpy model behind SageMaker's inference-container protocol, for the batch transform tests.

Run as a process (``python -m tests.transform_model``): it binds a free loopback port, prints it on one line
and serves until killed. ``GET /ping``, ``POST /invocations`` and ``GET /execution-parameters`` as SageMaker's
containers; the model is a fixed logistic regression over however many numeric features a record has.

Behaviours by path prefix (``http://127.0.0.1:PORT/<mode>`` as the model URL): none (root) is the healthy
model; ``/slow`` sleeps 3 s per invocation; ``/delay`` 50 ms (for concurrency); ``/e500`` and ``/e400`` answer
that status; ``/fewer`` drops the last record of each answer; ``/noexec`` has no execution parameters;
``/sick`` answers ``/ping`` with 503. ``GET /stats`` reports the requests seen (records, bodies, concurrency).

Content types: ``text/csv`` (a score per line), ``application/jsonlines`` (``{"features": [...]}`` per line ->
``{"predicted_label":..,"score":..}`` per line), ``application/json`` (``{"instances": [[...], ...]}`` ->
``{"predictions": [...]}``; one object or array -> one answer object), ``application/x-recordio`` (each
record's data a CSV row -> a score line). The scoring functions are importable, so tests compute the outputs
they expect with the same code.
"""

from __future__ import annotations

import csv
import io
import json
import signal
import struct
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np

__all__ = ["invoke", "invoke_then_interrupt", "score_csv", "score_json", "score_jsonlines", "score_rows"]


def score_rows(rows: list[list[float]]) -> np.ndarray:
    """The model: a logistic regression with weights that depend only on the feature's position."""
    out = np.empty(len(rows))
    lengths = np.array([len(r) for r in rows], dtype=np.int64)
    for n in np.unique(lengths):  # one matrix product per row width
        at = np.flatnonzero(lengths == n)
        x = np.asarray([rows[i] for i in at], dtype=np.float64).reshape(len(at), int(n))
        w = np.cos(np.arange(n) * 0.7) / max(int(n), 1)
        out[at] = 1.0 / (1.0 + np.exp(-(x @ w) / 10.0))
    return out


def _fmt(s: float) -> str:
    return f"{s:.6f}"


def score_csv(body: bytes) -> bytes:
    rows = [[float(v) for v in r] for r in csv.reader(io.StringIO(body.decode())) if r]
    blank = [not line.strip() for line in body.decode().splitlines()]
    scores = iter(score_rows(rows))
    return "".join("\n" if b else _fmt(next(scores)) + "\n" for b in blank).encode()


def _answer(s: float) -> dict[str, Any]:
    return {"predicted_label": int(s >= 0.5), "score": round(float(s), 6)}


def score_jsonlines(body: bytes) -> bytes:
    lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
    rows = [line["features"] if isinstance(line, dict) else line for line in lines]
    return "".join(json.dumps(_answer(s), separators=(",", ":")) + "\n" for s in score_rows(rows)).encode()


def score_json(body: bytes) -> bytes:
    doc = json.loads(body)
    if isinstance(doc, dict) and "instances" in doc:
        rows = [r["features"] if isinstance(r, dict) else r for r in doc["instances"]]
        return json.dumps({"predictions": [_answer(s) for s in score_rows(rows)]}).encode()
    row = doc["features"] if isinstance(doc, dict) else doc
    return json.dumps(_answer(score_rows([row])[0]), separators=(",", ":")).encode()


def score_recordio(body: bytes) -> bytes:
    rows, pos = [], 0
    while pos < len(body):
        _, word = struct.unpack_from("<II", body, pos)
        length = word & ((1 << 29) - 1)
        rows.append([float(v) for v in body[pos + 8 : pos + 8 + length].decode().split(",")])
        pos += 8 + length + (-length % 4)
    return "".join(_fmt(s) + "\n" for s in score_rows(rows)).encode()


def score(body: bytes, content_type: str) -> tuple[bytes, str]:
    kind = content_type.split(";")[0].strip().lower()
    if kind == "application/jsonlines":
        return score_jsonlines(body), "application/jsonlines"
    if kind == "application/json":
        return score_json(body), "application/json"
    if kind == "application/x-recordio":
        return score_recordio(body), "text/csv"
    if kind == "application/x-recordio-single":  # SingleRecord RecordIO: the data without its framing
        return score_csv(body), "text/csv"
    return score_csv(body), "text/csv"


def invoke(data: bytes, content_type: str | None, accept: str | None) -> bytes:
    """The same model as a Python callable, for ``--model tests.transform_model:invoke``."""
    return score(data, content_type or "text/csv")[0]


_calls = 0


def invoke_then_interrupt(data: bytes, content_type: str | None, accept: str | None) -> bytes:
    """As `invoke`, but asks the job to stop (as SIGTERM does) during its second invocation."""
    global _calls
    _calls += 1
    if _calls == 2:
        from engine import interrupts

        interrupts.request(signal.SIGTERM)
    return invoke(data, content_type, accept)


_stats: dict[str, Any] = {"requests": 0, "in_flight": 0, "max_in_flight": 0, "max_body": 0, "bodies": []}
_lock = threading.Lock()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        return

    def _send(self, status: int, body: bytes, ctype: str = "text/plain") -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _mode(self) -> tuple[str, str]:
        parts = self.path.strip("/").split("/")
        return (parts[0], "/".join(parts[1:])) if len(parts) > 1 else ("", parts[0])

    def do_GET(self) -> None:
        mode, route = self._mode()
        if route == "ping":
            self._send(503 if mode == "sick" else 200, b"")
        elif route == "execution-parameters" and mode != "noexec":
            params = {"MaxConcurrentTransforms": 2, "BatchStrategy": "MULTI_RECORD", "MaxPayloadInMB": 1}
            self._send(200, json.dumps(params).encode(), "application/json")
        elif route == "stats":
            with _lock:
                self._send(200, json.dumps(_stats).encode(), "application/json")
        else:
            self._send(404, b"not found")

    def do_POST(self) -> None:
        mode, route = self._mode()
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if route == "reset":
            with _lock:
                _stats.update(requests=0, in_flight=0, max_in_flight=0, max_body=0, bodies=[])
            self._send(200, b"")
            return
        if route != "invocations":
            self._send(404, b"not found")
            return
        with _lock:
            _stats["requests"] += 1
            _stats["in_flight"] += 1
            _stats["max_in_flight"] = max(_stats["max_in_flight"], _stats["in_flight"])
            _stats["max_body"] = max(_stats["max_body"], len(body))
            _stats["bodies"].append([len(body), self.headers.get("Content-Type"), self.headers.get("Accept")])
        try:
            if mode == "slow":
                time.sleep(3)
            elif mode == "delay":
                time.sleep(0.05)
            if mode == "e500":
                self._send(500, b"model exploded\nsecond line")
                return
            if mode == "e400":
                self._send(400, b"unsupported input")
                return
            ctype = self.headers.get("Content-Type") or "text/csv"
            out, out_type = score(body, ctype)
            if mode == "fewer":
                out = b"".join(out.splitlines(keepends=True)[:-1])
            self._send(200, out, out_type)
        except OSError:  # the client gave up (a timeout): nobody to answer
            self.close_connection = True
        except Exception as exc:  # a bad input is the model's 400, as real containers answer
            self._send(400, f"bad input: {exc}".encode())
        finally:
            with _lock:
                _stats["in_flight"] -= 1


def main() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    print(server.server_address[1], flush=True)
    sys.stdout.close()
    server.serve_forever()


if __name__ == "__main__":
    main()
