"""The model a local batch transform calls: a container speaking SageMaker's protocol, or a Python callable.

Container protocol (reference 5.1): ``GET /ping`` answers 200 when the model is ready (SageMaker allows it
2 s); ``POST /invocations`` takes a mini-batch with its ``Content-Type`` and ``Accept`` and answers within
``InvocationsTimeoutInSeconds``; the optional ``GET /execution-parameters`` suggests
``MaxConcurrentTransforms``, ``BatchStrategy`` and ``MaxPayloadInMB``. The stdlib ``http.client`` speaks it,
one keep-alive connection per thread, so no dependency is added.

A callable is named ``module:function`` and is called as ``function(data: bytes, content_type, accept)``,
returning the response body (``bytes`` or ``str``); an exception it raises fails the invocation.

Failures: a connection error, a timeout or an HTTP 5xx is retried up to ``InvocationsMaxRetries`` times (a
4xx is the model refusing this input: retrying cannot help); then the invocation fails with one line naming
the model, the status and the start of the body.
"""

from __future__ import annotations

import http.client
import importlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

import orjson

__all__ = ["CallableModel", "HttpModel", "InvocationError", "Model", "ModelUnavailable", "open_model"]

logger = logging.getLogger(__name__)

_PING_TIMEOUT = 2.0  # SageMaker's own ping timeout
_BODY_SHOWN = 200


class InvocationError(Exception):
    """One invocation failed (after its retries); the message is one line."""


class ModelUnavailable(Exception):
    """The model cannot be reached or is not healthy (``/ping``), so no record can be transformed."""


@dataclass(frozen=True)
class Response:
    body: bytes
    content_type: str | None


class Model(Protocol):
    """What the job needs of a model."""

    name: str

    def ping(self, wait: float) -> None: ...

    def execution_parameters(self) -> dict[str, Any]: ...

    def invoke(self, data: bytes, content_type: str | None, accept: str | None) -> Response: ...

    def close(self) -> None: ...


class HttpModel:
    """A model server at `url` (``http://host:port``, or ``https://``), speaking the container protocol."""

    def __init__(self, url: str, *, timeout: float, retries: int) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"a model URL is http://HOST:PORT, got {url!r}")
        self.name = url.rstrip("/")
        self.base = parts.path.rstrip("/")
        self.scheme, self.host, self.port = parts.scheme, parts.hostname, parts.port
        self.timeout, self.retries = timeout, retries
        self._local = threading.local()
        self._all: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()

    def _connection(self, timeout: float) -> http.client.HTTPConnection:
        conn: http.client.HTTPConnection | None = getattr(self._local, "conn", None)
        if conn is None:
            cls = http.client.HTTPSConnection if self.scheme == "https" else http.client.HTTPConnection
            conn = cls(self.host, self.port, timeout=timeout)
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        conn.timeout = timeout
        if conn.sock is not None:
            conn.sock.settimeout(timeout)
        return conn

    def _drop(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def _request(
        self, method: str, path: str, body: bytes | None, headers: dict[str, str], timeout: float
    ) -> tuple[int, bytes, str | None]:
        conn = self._connection(timeout)
        try:
            conn.request(method, self.base + path, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
        except BaseException:
            self._drop()  # a connection in an unknown state is never reused
            raise
        if resp.will_close:
            self._drop()
        return resp.status, data, resp.getheader("Content-Type")

    def ping(self, wait: float) -> None:
        """Wait up to `wait` seconds for ``GET /ping`` to answer 200 (at least one attempt)."""
        deadline = time.monotonic() + wait
        while True:
            try:
                status, body, _ = self._request("GET", "/ping", None, {}, _PING_TIMEOUT)
                if status == 200:
                    return
                problem = f"GET /ping answered HTTP {status} {_shown(body)}".rstrip()
            except (OSError, http.client.HTTPException) as exc:
                problem = f"cannot reach it ({_why(exc)})"
            if time.monotonic() >= deadline:
                raise ModelUnavailable(f"the model at {self.name} is not available: {problem}")
            time.sleep(0.2)

    def execution_parameters(self) -> dict[str, Any]:
        """What ``GET /execution-parameters`` suggests; empty when the server has no such route."""
        try:
            status, body, _ = self._request("GET", "/execution-parameters", None, {}, _PING_TIMEOUT)
        except (OSError, http.client.HTTPException):
            return {}
        if status != 200:
            return {}
        try:
            value = orjson.loads(body)
        except orjson.JSONDecodeError:
            logger.warning("%s/execution-parameters is not JSON; ignored", self.name)
            return {}
        return value if isinstance(value, dict) else {}

    def invoke(self, data: bytes, content_type: str | None, accept: str | None) -> Response:
        headers = {"Content-Length": str(len(data))}
        if content_type:
            headers["Content-Type"] = content_type
        if accept:
            headers["Accept"] = accept
        problem, attempts = "", 0
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(min(0.1 * 2**attempt, 2.0))
            attempts += 1
            try:
                status, body, ctype = self._request("POST", "/invocations", data, headers, self.timeout)
            except TimeoutError:
                problem = f"no answer within {self.timeout:g} s (InvocationsTimeoutInSeconds)"
                continue
            except (OSError, http.client.HTTPException) as exc:
                problem = f"cannot reach it ({_why(exc)})"
                continue
            if status == 200:
                return Response(body, ctype)
            problem = f"HTTP {status} {_shown(body)}".rstrip()
            if status < 500:
                break
        tries = f" ({attempts} attempts)" if attempts > 1 else ""
        raise InvocationError(f"the model at {self.name} failed: {problem}{tries}")

    def close(self) -> None:
        with self._lock:
            for conn in self._all:
                conn.close()
            self._all.clear()


class CallableModel:
    """A Python function as the model: ``fn(data, content_type, accept) -> bytes | str``."""

    def __init__(self, spec: str) -> None:
        module, sep, attr = spec.partition(":")
        if not sep or not module or not attr:
            raise ValueError(f"a model is http://HOST:PORT or module:function, got {spec!r}")
        try:
            fn = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as exc:
            raise ValueError(f"cannot load the model {spec} ({exc})") from None
        if not callable(fn):
            raise ValueError(f"the model {spec} is not callable")
        self.name = spec
        self.fn: Callable[[bytes, str | None, str | None], bytes | str] = fn

    def ping(self, wait: float) -> None:
        return None

    def execution_parameters(self) -> dict[str, Any]:
        return {}

    def invoke(self, data: bytes, content_type: str | None, accept: str | None) -> Response:
        try:
            out = self.fn(data, content_type, accept)
        except Exception as exc:
            raise InvocationError(f"the model {self.name} raised {type(exc).__name__}: {exc}") from exc
        if isinstance(out, str):
            out = out.encode()
        if not isinstance(out, bytes):
            raise InvocationError(f"the model {self.name} returned {type(out).__name__}, not bytes or str")
        return Response(out, accept)

    def close(self) -> None:
        return None


def open_model(spec: str, *, timeout: float, retries: int) -> Model:
    """The model named by `spec`: an ``http(s)://`` URL or ``module:function``.

    Raises:
        ValueError: `spec` is neither, or the callable cannot be loaded.
    """
    if spec.startswith(("http://", "https://")):
        return HttpModel(spec, timeout=timeout, retries=retries)
    return CallableModel(spec)


def _shown(body: bytes) -> str:
    text = body.decode("utf-8", "replace").strip().replace("\n", " ")
    return (text[:_BODY_SHOWN] + "...") if len(text) > _BODY_SHOWN else text


def _why(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, TimeoutError):
        return "timed out"
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
