"""Capture for self-hosted endpoints: SageMaker-compatible real-time capture from any Python model server.

    from engine.capture import CaptureMiddleware, CaptureWriter

    writer = CaptureWriter("s3://bucket/data-capture", endpoint="churn", sampling_percentage=100)
    app = CaptureMiddleware(app, writer)          # ASGI (FastAPI, Starlette...); WSGICaptureMiddleware for WSGI

The objects land under ``{dest}/{endpoint}/{variant}/yyyy/mm/dd/hh/`` as SageMaker writes them, so
``capture-engine realtime`` and every monitoring job read them as they read a real endpoint's capture.
`CaptureWriter` documents buffering, memory and the loss policy; `engine.formats.capture` the wire format.
"""

from engine.emulate.capture_writer import CaptureConfig, CaptureStats, CaptureWriter
from engine.emulate.middleware import CaptureMiddleware, WSGICaptureMiddleware
from engine.formats.capture import CaptureEvent, CapturePayload, ContentTypeHeader, encode_event, encode_events

__all__ = [
    "CaptureConfig",
    "CaptureEvent",
    "CaptureMiddleware",
    "CapturePayload",
    "CaptureStats",
    "CaptureWriter",
    "ContentTypeHeader",
    "WSGICaptureMiddleware",
    "encode_event",
    "encode_events",
]
