"""ASGI and WSGI middleware that capture a self-hosted model's invocations with a `CaptureWriter`.

``CaptureMiddleware(app, writer)`` wraps an ASGI app (FastAPI, Starlette, KServe's server...);
``WSGICaptureMiddleware(app, writer)`` a WSGI app (Flask...). Each invocation (by default every ``POST``; give
``paths`` to capture only those, e.g. ``{"/invocations"}``) is sampled first, so an unsampled one costs one
random draw. For a sampled one the middleware records the request body and Content-Type, the response body
and Content-Type, and the ``X-Amzn-SageMaker-Inference-Id`` and ``X-Amzn-SageMaker-Custom-Attributes``
request headers, with the time the request arrived as ``inferenceTime``.

What is recorded, and when:

* Only complete 2xx exchanges; another status is counted as ``skipped_status`` (SageMaker returns a model
  error to the caller then, and its capture of those is not documented), an exchange cut short (the client
  left, the app raised, an ASGI app that answered without reading its request body) as ``skipped_incomplete``.
* Streamed responses pass through unchanged, chunk by chunk as the app sends them: the middleware keeps a
  copy of each chunk, never holds one back, and records the whole body (what the client received, as one
  ``endpointOutput``) once the last chunk went out. SageMaker reportedly captures nothing of
  InvokeEndpointWithResponseStream; capturing the assembled body is what a monitoring job can use. A copy
  stops at ``max_payload_bytes`` (the stream goes on; the invocation counts as ``dropped_too_large``), so an
  endless stream costs bounded memory.
* ASGI: the request body is copied as the app reads it. WSGI: the body (up to ``max_payload_bytes``, by
  ``CONTENT_LENGTH`` or to the end of a terminated input) is read first and handed to the app as a
  ``BytesIO``; a list or tuple response is recorded at once, any other iterable as it is consumed (so a
  ``wsgi.file_wrapper`` response loses the server's sendfile path while it is captured).
* ASGI lifespan: when the app finishes its shutdown the writer is closed, flushing what it holds
  (``close_on_shutdown``). That is what saves the capture when uvicorn is stopped by SIGTERM: it re-raises
  the signal after shutting down, so no atexit hook runs. An app without lifespan support relies on the
  writer's atexit hook, which runs on a normal exit only. WSGI has no shutdown event: see `CaptureWriter`.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Awaitable, Callable, Collection, Iterable, Iterator, MutableMapping
from datetime import datetime
from typing import Any

from engine.emulate.capture_writer import CaptureWriter
from engine.formats.capture import CUSTOM_ATTRIBUTES_HEADER, INFERENCE_ID_HEADER

__all__ = ["CaptureMiddleware", "WSGICaptureMiddleware"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
StartResponse = Callable[..., Callable[[bytes], object]]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]

_INFERENCE_ID = INFERENCE_ID_HEADER.lower().encode()
_CUSTOM_ATTRIBUTES = CUSTOM_ATTRIBUTES_HEADER.lower().encode()
_WSGI_INFERENCE_ID = "HTTP_" + INFERENCE_ID_HEADER.upper().replace("-", "_")
_WSGI_CUSTOM_ATTRIBUTES = "HTTP_" + CUSTOM_ATTRIBUTES_HEADER.upper().replace("-", "_")


class _Exchange:
    """One sampled invocation being copied: bodies up to the payload limit, then recorded or discarded once."""

    __slots__ = (
        "custom_attributes",
        "done",
        "inference_id",
        "limit",
        "overflow",
        "request",
        "request_complete",
        "request_type",
        "response",
        "response_complete",
        "response_type",
        "size",
        "status",
        "time",
        "writer",
    )

    def __init__(self, writer: CaptureWriter) -> None:
        self.writer = writer
        self.time: datetime = writer.now()
        self.limit = writer.config.max_payload_bytes
        self.request: list[bytes] = []
        self.response: list[bytes] = []
        self.size = [0, 0]
        self.overflow = False
        self.request_complete = not writer.captures_input
        self.response_complete = False
        self.request_type: str | None = None
        self.response_type: str | None = None
        self.inference_id: str | None = None
        self.custom_attributes: str | None = None
        self.status = 0
        self.done = False

    def keep(self, side: int, chunk: bytes) -> None:
        if self.overflow or not chunk:
            return
        self.size[side] += len(chunk)
        if self.size[side] > self.limit:
            self.overflow = True
            self.request, self.response = [], []
            return
        (self.request if side == 0 else self.response).append(bytes(chunk))

    def finish(self) -> None:
        if self.done:
            return
        self.done = True
        w = self.writer
        if self.overflow:
            w.discard("too_large")
        elif not (self.request_complete and self.response_complete):
            w.discard("incomplete")
        elif not 200 <= self.status < 300:
            w.discard("status")
        else:
            w.record(
                request=b"".join(self.request) if w.captures_input else None,
                request_content_type=self.request_type,
                response=b"".join(self.response) if w.captures_output else None,
                response_content_type=self.response_type,
                inference_id=self.inference_id,
                custom_attributes=self.custom_attributes,
                inference_time=self.time,
            )


def _selected(method: str, path: str, methods: frozenset[str], paths: frozenset[str] | None) -> bool:
    return method in methods and (paths is None or path in paths)


class CaptureMiddleware:
    """ASGI middleware: captures the app's invocations with `writer` (see the module docs).

    Args:
        app: The ASGI application.
        writer: Where the invocations go (its sampling, capture modes and content types apply).
        methods: HTTP methods that are invocations.
        paths: Paths that are invocations (exact match), None for every path.
        close_on_shutdown: Close (flush) the writer when the app completes its lifespan shutdown.
    """

    def __init__(
        self,
        app: ASGIApp,
        writer: CaptureWriter,
        *,
        methods: Collection[str] = ("POST",),
        paths: Collection[str] | None = None,
        close_on_shutdown: bool = True,
    ) -> None:
        self.app = app
        self.writer = writer
        self.methods = frozenset(m.upper() for m in methods)
        self.paths = None if paths is None else frozenset(paths)
        self.close_on_shutdown = close_on_shutdown

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan" and self.close_on_shutdown:
            await self.app(scope, receive, self._lifespan_send(send))
            return
        if (
            kind != "http"
            or not _selected(scope["method"], scope["path"], self.methods, self.paths)
            or not self.writer.sample()
        ):
            await self.app(scope, receive, send)
            return
        x = _Exchange(self.writer)
        for name, value in scope["headers"]:
            if name == b"content-type":
                x.request_type = value.decode("latin-1")
            elif name == _INFERENCE_ID:
                x.inference_id = value.decode("latin-1")
            elif name == _CUSTOM_ATTRIBUTES:
                x.custom_attributes = value.decode("latin-1")
            elif name == b"content-length" and value.strip() == b"0":
                x.request_complete = True  # nothing to read: an app may answer without calling receive
        capture_input = self.writer.captures_input

        async def receive_copy() -> Message:
            message = await receive()
            if message["type"] == "http.request" and capture_input:
                x.keep(0, message.get("body", b""))
                if not message.get("more_body", False):
                    x.request_complete = True
            return message

        async def send_copy(message: Message) -> None:
            kind = message["type"]
            if kind == "http.response.start":
                x.status = int(message["status"])
                for name, value in message.get("headers", ()):
                    if name.lower() == b"content-type":
                        x.response_type = value.decode("latin-1")
                        break
            elif kind == "http.response.body":
                x.keep(1, message.get("body", b""))
                last = not message.get("more_body", False)
                await send(message)
                if last:
                    x.response_complete = True
                    x.finish()
                return
            await send(message)

        try:
            await self.app(scope, receive_copy, send_copy)
        finally:
            x.finish()

    def _lifespan_send(self, send: Send) -> Send:
        writer = self.writer

        async def lifespan_send(message: Message) -> None:
            if message["type"] in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
                # close() waits for storage: off the event loop.
                await asyncio.get_running_loop().run_in_executor(None, writer.close)
            await send(message)

        return lifespan_send


class WSGICaptureMiddleware:
    """WSGI middleware: captures the app's invocations with `writer` (see the module docs).

    Args:
        app: The WSGI application.
        writer: Where the invocations go.
        methods: HTTP methods that are invocations.
        paths: Paths (``PATH_INFO``, exact match) that are invocations, None for every path.
    """

    def __init__(
        self,
        app: WSGIApp,
        writer: CaptureWriter,
        *,
        methods: Collection[str] = ("POST",),
        paths: Collection[str] | None = None,
    ) -> None:
        self.app = app
        self.writer = writer
        self.methods = frozenset(m.upper() for m in methods)
        self.paths = None if paths is None else frozenset(paths)

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if (
            not _selected(environ.get("REQUEST_METHOD", "GET"), environ.get("PATH_INFO", ""), self.methods, self.paths)
            or not self.writer.sample()
        ):
            return self.app(environ, start_response)
        x = _Exchange(self.writer)
        x.request_type = environ.get("CONTENT_TYPE") or None
        x.inference_id = environ.get(_WSGI_INFERENCE_ID)
        x.custom_attributes = environ.get(_WSGI_CUSTOM_ATTRIBUTES)
        if self.writer.captures_input:
            body = _read_body(environ, x.limit)
            if body is None:
                x.overflow = True
            else:
                environ["wsgi.input"] = io.BytesIO(body)
                x.keep(0, body)
                x.request_complete = True

        def start_copy(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable[[bytes], object]:
            x.status = int(status.split(" ", 1)[0])
            x.response_type = next((v for k, v in headers if k.lower() == "content-type"), None)
            write = start_response(status, headers, exc_info)

            def write_copy(data: bytes) -> object:
                x.keep(1, data)
                return write(data)

            return write_copy

        try:
            result = self.app(environ, start_copy)
        except BaseException:
            x.finish()
            raise
        if isinstance(result, (list, tuple)):
            # The whole body is here already: record it now and hand the server the app's own list.
            for chunk in result:
                x.keep(1, chunk)
            x.response_complete = True
            x.finish()
            return result
        return _CopiedBody(result, x)


def _read_body(environ: dict[str, Any], limit: int) -> bytes | None:
    """The request body (its CONTENT_LENGTH, or all of a terminated input); None if above `limit`."""
    stream = environ.get("wsgi.input")
    if stream is None:
        return b""
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    if length > limit:
        return None
    if length:
        data: bytes = stream.read(length)
        return data
    if environ.get("wsgi.input_terminated"):
        data = stream.read(limit + 1)
        return None if len(data) > limit else data
    return b""  # PEP 3333: without a length, reading could block; no body


class _CopiedBody:
    """A WSGI response iterable passed through chunk by chunk, copied, recorded when exhausted."""

    def __init__(self, result: Iterable[bytes], exchange: _Exchange) -> None:
        self.result = result
        self.exchange = exchange

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self.result:
            self.exchange.keep(1, chunk)
            yield chunk
        self.exchange.response_complete = True
        self.exchange.finish()

    def close(self) -> None:
        try:
            close = getattr(self.result, "close", None)
            if close is not None:
                close()
        finally:
            self.exchange.finish()
