"""What a `CaptureWriter` captures and how it buffers (`CaptureConfig`), and what it counted (`CaptureStats`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from engine.errors import OptionsError
from engine.formats.capture import (
    DEFAULT_CSV_CONTENT_TYPES,
    DEFAULT_JSON_CONTENT_TYPES,
    DEFAULT_VARIANT,
    MAX_PAYLOAD_BYTES,
    ContentTypeHeader,
    check_name,
    parse_capture_modes,
)

__all__ = ["CaptureConfig", "CaptureStats"]

_WHOLE_NUMBERS = (
    "max_object_bytes",
    "max_buffer_bytes",
    "max_buffer_events",
    "max_payload_bytes",
    "max_open_objects",
    "write_attempts",
)


@dataclass(frozen=True, kw_only=True)
class CaptureConfig:
    """What a `CaptureWriter` captures and how it buffers; validated on construction (OptionsError).

    Defaults are the SageMaker Python SDK's ``DataCaptureConfig`` (20 % sampling, request and response,
    ``text/csv`` as CSV, ``application/json`` as JSON).

    Attributes:
        endpoint: The endpoint name, the first folder of every key.
        variant: The production variant, the second folder.
        sampling_percentage: ``InitialSamplingPercentage``, 0-100: each invocation is captured with this
            probability, independently (SageMaker does not document its sampling rule).
        capture_modes: ``CaptureOptions``: ``Input``, ``Output``, ``InputAndOutput`` (or the SDK's
            ``REQUEST``/``RESPONSE``).
        csv_content_types: Content types kept as CSV text (``CaptureContentTypeHeader.CsvContentTypes``).
        json_content_types: Content types kept as JSON text; anything else is BASE64.
        max_object_bytes: An object is written once it holds this many bytes.
        max_object_seconds: ... or this long after its first record (by the writer's clock).
        max_buffer_bytes: Bodies waiting for the writer thread, at most; beyond it events are dropped.
        max_buffer_events: Events waiting for the writer thread, at most.
        max_payload_bytes: A larger request or response body is not captured.
        max_open_objects: Hour objects open at once (late events of the previous hour keep theirs open).
        write_attempts: Tries per object before its events count as lost.
        seed: Seed of the sampling draws (None: from the OS).
        storage_options: fsspec options of the destination (credentials, endpoint URL...).
        kms_key_id: SSE-KMS key for objects written to S3, as SageMaker's ``KmsKeyId``.
    """

    endpoint: str
    variant: str = DEFAULT_VARIANT
    sampling_percentage: float = 20.0
    capture_modes: tuple[str, ...] = ("Input", "Output")
    csv_content_types: tuple[str, ...] = DEFAULT_CSV_CONTENT_TYPES
    json_content_types: tuple[str, ...] = DEFAULT_JSON_CONTENT_TYPES
    max_object_bytes: int = 8 * 2**20
    max_object_seconds: float = 60.0
    max_buffer_bytes: int = 64 * 2**20
    max_buffer_events: int = 10_000
    max_payload_bytes: int = MAX_PAYLOAD_BYTES
    max_open_objects: int = 4
    write_attempts: int = 3
    seed: int | None = None
    storage_options: Mapping[str, Any] | None = None
    kms_key_id: str | None = None

    def __post_init__(self) -> None:
        check_name("endpoint", self.endpoint)
        check_name("variant", self.variant)
        if not 0 <= self.sampling_percentage <= 100:
            raise OptionsError(f"sampling_percentage must be within 0-100, got {self.sampling_percentage}")
        modes: Any = self.capture_modes  # a caller may pass one mode as a string
        parse_capture_modes(modes)
        object.__setattr__(self, "capture_modes", (modes,) if isinstance(modes, str) else tuple(modes))
        # Validated (and kept as tuples) by the header itself.
        header = ContentTypeHeader(csv_content_types=self.csv_content_types, json_content_types=self.json_content_types)
        object.__setattr__(self, "csv_content_types", header.csv_content_types)
        object.__setattr__(self, "json_content_types", header.json_content_types)
        for name in _WHOLE_NUMBERS:
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise OptionsError(f"{name} must be a whole number >= 1, got {value!r}")
        if not self.max_object_seconds > 0:
            raise OptionsError(f"max_object_seconds must be > 0, got {self.max_object_seconds}")


@dataclass(frozen=True, kw_only=True)
class CaptureStats:
    """A snapshot of a writer's counters.

    Every sampled invocation ends in exactly one of: ``captured`` (queued for writing), one of the
    ``dropped_*`` counters, or one of the ``skipped_*`` counters (the middleware's: a response status other
    than 2xx, a request or response that did not complete). Every captured event ends, once the writer is
    flushed, in ``written`` or ``lost_write_errors``; until then it is ``queued_events`` or ``open_events``.
    """

    requests: int  # invocations offered to sampling
    sampled: int
    captured: int
    written: int  # events in objects written
    objects: int
    bytes_written: int
    dropped_buffer_full: int
    dropped_too_large: int
    dropped_closed: int
    skipped_status: int
    skipped_incomplete: int
    lost_write_errors: int
    write_errors: int  # objects that could not be written
    invalid_metadata: int  # inference IDs / custom attributes InvokeEndpoint would refuse: not recorded
    queued_events: int
    queued_bytes: int
    peak_queued_bytes: int
    open_events: int  # in objects not written yet

    @property
    def dropped(self) -> int:
        """Sampled events not captured for lack of room, size or an open writer."""
        return self.dropped_buffer_full + self.dropped_too_large + self.dropped_closed
