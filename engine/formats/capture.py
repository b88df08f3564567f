"""The real-time capture envelope on the wire, in the writing direction: events to JSONL lines and object keys.

What a SageMaker endpoint with data capture writes, one JSON object per line, keys in SageMaker's order::

    {"captureData":{"endpointInput":{"observedContentType":"text/csv","mode":"INPUT","data":"1,2,3",
      "encoding":"CSV"},"endpointOutput":{...,"mode":"OUTPUT",...}},
     "eventMetadata":{"eventId":"<uuid4>","inferenceId":"59","inferenceTime":"2021-05-18T00:29:04Z"},
     "eventVersion":"0"}

into objects keyed ``{endpoint}/{variant}/yyyy/mm/dd/hh/{MM}-{SS}-{mmm}-{uuid4}.jsonl`` (the UTC hour of the
invocation; the name is the time of the object's first record within that hour, as observed on real keys).

How a body is kept follows ``CaptureContentTypeHeader``: a Content-Type whose media type is listed among the
CSV (JSON) content types is kept verbatim as text with ``"encoding":"CSV"`` (``"JSON"``), anything else as
standard base64 with ``"encoding":"BASE64"``. The media type is compared without its parameters and without
case (``text/csv; charset=utf-8`` matched ``text/csv`` on a real endpoint; media types are case-insensitive
by RFC 9110). A listed body that is not UTF-8 cannot be a JSON string verbatim: it is kept as BASE64, so that
nothing is lost (SageMaker's behaviour there is not documented).

Sources are silent on where ``customAttributes`` sits; it is written last in ``eventMetadata``, as the
``X-Amzn-SageMaker-Custom-Attributes`` header's text (a string, which is how the reader keeps it).

These are pure functions: `engine.emulate.capture_writer` does the buffering and the I/O, and the reader
(`engine.kernels.envelope`) reads exactly these field names, which is why they are module constants.
"""

from __future__ import annotations

import base64
import functools
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Final, Literal

import orjson

if TYPE_CHECKING:
    import pyarrow as pa

from engine.errors import OptionsError

__all__ = [
    "CAPTURE_DATA",
    "CUSTOM_ATTRIBUTES",
    "CUSTOM_ATTRIBUTES_HEADER",
    "DATA",
    "DEFAULT_CSV_CONTENT_TYPES",
    "DEFAULT_JSON_CONTENT_TYPES",
    "DEFAULT_VARIANT",
    "ENCODING",
    "ENCODING_BASE64",
    "ENCODING_CSV",
    "ENCODING_JSON",
    "ENDPOINT_INPUT",
    "ENDPOINT_OUTPUT",
    "EVENT_ID",
    "EVENT_METADATA",
    "EVENT_VERSION",
    "EVENT_VERSION_VALUE",
    "FIELD_PATHS",
    "INFERENCE_ID",
    "INFERENCE_ID_HEADER",
    "INFERENCE_TIME",
    "MAX_PAYLOAD_BYTES",
    "MODE",
    "MODE_INPUT",
    "MODE_OUTPUT",
    "OBSERVED_CONTENT_TYPE",
    "CaptureEvent",
    "CapturePayload",
    "ContentTypeHeader",
    "Encoding",
    "Side",
    "check_name",
    "encode_event",
    "encode_events",
    "envelope",
    "format_inference_time",
    "hour_prefix",
    "media_type",
    "object_key",
    "object_name",
    "parse_capture_modes",
    "parse_schema",
    "valid_custom_attributes",
    "valid_inference_id",
]

# Field names of the envelope (sagemaker-formats reference, section 1.1).
CAPTURE_DATA: Final = "captureData"
ENDPOINT_INPUT: Final = "endpointInput"
ENDPOINT_OUTPUT: Final = "endpointOutput"
OBSERVED_CONTENT_TYPE: Final = "observedContentType"
MODE: Final = "mode"
DATA: Final = "data"
ENCODING: Final = "encoding"
EVENT_METADATA: Final = "eventMetadata"
EVENT_ID: Final = "eventId"
INFERENCE_ID: Final = "inferenceId"
INFERENCE_TIME: Final = "inferenceTime"
CUSTOM_ATTRIBUTES: Final = "customAttributes"
EVENT_VERSION: Final = "eventVersion"

MODE_INPUT: Final = "INPUT"
MODE_OUTPUT: Final = "OUTPUT"
ENCODING_CSV: Final = "CSV"
ENCODING_JSON: Final = "JSON"
ENCODING_BASE64: Final = "BASE64"
EVENT_VERSION_VALUE: Final = "0"  # in every record ever seen

# InvokeEndpoint's HTTP headers for the two caller-supplied fields.
INFERENCE_ID_HEADER: Final = "X-Amzn-SageMaker-Inference-Id"
CUSTOM_ATTRIBUTES_HEADER: Final = "X-Amzn-SageMaker-Custom-Attributes"


# The reading direction: what `pyarrow.json` parses (unknown fields are ignored, so extra and reordered keys
# cost nothing), and where each flat column of the capture table comes from. The decoder reads these.
@functools.cache
def parse_schema() -> pa.Schema:
    """The explicit schema pyarrow parses capture lines with (pyarrow is imported here, not by the writers)."""
    import pyarrow as pa

    payload = pa.struct([(n, pa.string()) for n in (OBSERVED_CONTENT_TYPE, MODE, DATA, ENCODING)])
    metadata = pa.struct([(n, pa.string()) for n in (EVENT_ID, INFERENCE_ID, INFERENCE_TIME, CUSTOM_ATTRIBUTES)])
    return pa.schema(
        [
            (CAPTURE_DATA, pa.struct([(ENDPOINT_INPUT, payload), (ENDPOINT_OUTPUT, payload)])),
            (EVENT_METADATA, metadata),
            (EVENT_VERSION, pa.string()),
        ]
    )


# Flat column -> its path in the record, in the order both decode paths produce the columns.
FIELD_PATHS: Final[dict[str, tuple[str, ...]]] = {
    "event_id": (EVENT_METADATA, EVENT_ID),
    "inference_id": (EVENT_METADATA, INFERENCE_ID),
    "inference_time": (EVENT_METADATA, INFERENCE_TIME),
    "event_version": (EVENT_VERSION,),
    "input_content_type": (CAPTURE_DATA, ENDPOINT_INPUT, OBSERVED_CONTENT_TYPE),
    "input_encoding": (CAPTURE_DATA, ENDPOINT_INPUT, ENCODING),
    "input_data": (CAPTURE_DATA, ENDPOINT_INPUT, DATA),
    "output_content_type": (CAPTURE_DATA, ENDPOINT_OUTPUT, OBSERVED_CONTENT_TYPE),
    "output_encoding": (CAPTURE_DATA, ENDPOINT_OUTPUT, ENCODING),
    "output_data": (CAPTURE_DATA, ENDPOINT_OUTPUT, DATA),
    "custom_attributes": (EVENT_METADATA, CUSTOM_ATTRIBUTES),
}

# The SageMaker Python SDK's DataCaptureConfig defaults (it always sends CaptureContentTypeHeader).
DEFAULT_CSV_CONTENT_TYPES: Final = ("text/csv",)
DEFAULT_JSON_CONTENT_TYPES: Final = ("application/json",)
DEFAULT_VARIANT: Final = "AllTraffic"
MAX_PAYLOAD_BYTES: Final = 6_291_456  # InvokeEndpoint's Body limit (6 MB)

Encoding = Literal["CSV", "JSON", "BASE64"]
Side = Literal["Input", "Output"]

# CaptureContentTypeHeader: 1-10 entries per list, each 1-256 characters of this pattern.
_CONTENT_TYPE = re.compile(r"[a-zA-Z0-9](-*[a-zA-Z0-9])*/[a-zA-Z0-9](-*[a-zA-Z0-9.])*")
_MAX_CONTENT_TYPES = 10
_MAX_CONTENT_TYPE_CHARS = 256
# EndpointName and VariantName: the same pattern, at most 63 characters; no "/" can reach a key.
_NAME = re.compile(r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}")
# InvokeEndpoint's InferenceId: 1-64 characters, \A\S[\p{Print}]*\z (Java's \p{Print}: printable US-ASCII).
_INFERENCE_ID = re.compile(r"[\x21-\x7e][\x20-\x7e]{0,63}")
# InvokeEndpoint's CustomAttributes: at most 1024 characters of \p{ASCII}.
_CUSTOM_ATTRIBUTES = re.compile(r"[\x00-\x7f]{0,1024}")
# CaptureOption.CaptureMode, plus the SDK's REQUEST/RESPONSE spellings, to the sides they capture.
_MODES: Final[dict[str, frozenset[Side]]] = {
    "input": frozenset({"Input"}),
    "request": frozenset({"Input"}),
    "output": frozenset({"Output"}),
    "response": frozenset({"Output"}),
    "inputandoutput": frozenset({"Input", "Output"}),
}
_MAX_CAPTURE_OPTIONS = 32


def media_type(content_type: str | None) -> str | None:
    """The media type of a Content-Type value, lower case, without parameters (None if there is none)."""
    if content_type is None:
        return None
    return content_type.split(";", 1)[0].strip().lower() or None


def _content_types(kind: str, values: Sequence[str]) -> frozenset[str]:
    if isinstance(values, str):
        raise OptionsError(f"{kind}_content_types must be a list of content types, got the string {values!r}")
    if len(values) > _MAX_CONTENT_TYPES:
        raise OptionsError(f"{kind}_content_types holds at most {_MAX_CONTENT_TYPES} entries, got {len(values)}")
    for value in values:
        if not isinstance(value, str) or len(value) > _MAX_CONTENT_TYPE_CHARS or not _CONTENT_TYPE.fullmatch(value):
            raise OptionsError(
                f"{kind}_content_types entry {value!r} is not a content type SageMaker accepts "
                "(type/subtype of letters, digits and '-', '.' in the subtype, up to 256 characters)"
            )
    return frozenset(v.lower() for v in values)


@dataclass(frozen=True, kw_only=True)
class ContentTypeHeader:
    """``CaptureContentTypeHeader``: which Content-Types are kept as CSV or JSON text; the rest is BASE64.

    Empty lists are what an endpoint created without the header does: every body is BASE64.
    """

    csv_content_types: tuple[str, ...] = DEFAULT_CSV_CONTENT_TYPES
    json_content_types: tuple[str, ...] = DEFAULT_JSON_CONTENT_TYPES
    _csv: frozenset[str] = field(init=False, repr=False, compare=False)
    _json: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        csv = _content_types("csv", self.csv_content_types)
        json = _content_types("json", self.json_content_types)
        both = sorted(csv & json)
        if both:
            raise OptionsError(f"content type {both[0]!r} is listed as both CSV and JSON")
        object.__setattr__(self, "csv_content_types", tuple(self.csv_content_types))
        object.__setattr__(self, "json_content_types", tuple(self.json_content_types))
        object.__setattr__(self, "_csv", csv)
        object.__setattr__(self, "_json", json)

    def encoding(self, content_type: str | None) -> Encoding:
        """The encoding SageMaker records for a body of this Content-Type (before the UTF-8 check)."""
        media = media_type(content_type)
        if media in self._csv:
            return "CSV"
        if media in self._json:
            return "JSON"
        return "BASE64"


@dataclass(frozen=True, kw_only=True, slots=True)
class CapturePayload:
    """One side of an invocation as it was on the wire: the body's bytes and its Content-Type header."""

    data: bytes
    content_type: str | None


@dataclass(frozen=True, kw_only=True, slots=True)
class CaptureEvent:
    """One captured invocation. A side that was not captured (capture mode) is None.

    `inference_time` is the invocation's time at full precision: the record keeps whole seconds, the
    object name keeps the milliseconds of its first record. A naive time is taken as UTC.
    """

    event_id: str
    inference_time: datetime
    input: CapturePayload | None = None
    output: CapturePayload | None = None
    inference_id: str | None = None
    custom_attributes: str | None = None


def format_inference_time(t: datetime) -> str:
    """``inferenceTime`` as SageMaker writes it: UTC, whole seconds, ``Z`` (``2021-05-18T00:29:04Z``)."""
    return _utc(t).replace(tzinfo=None).isoformat(timespec="seconds") + "Z"  # isoformat: C, and pads the year


def _utc(t: datetime) -> datetime:
    return t.replace(tzinfo=timezone.utc) if t.tzinfo is None else t.astimezone(timezone.utc)


def _side(payload: CapturePayload, mode: str, header: ContentTypeHeader) -> dict[str, Any]:
    encoding = header.encoding(payload.content_type)
    text: str | None = None
    if encoding != "BASE64":
        try:
            text = payload.data.decode("utf-8")
        except UnicodeDecodeError:
            encoding = "BASE64"
    if text is None:
        text = base64.b64encode(payload.data).decode("ascii")
    return {OBSERVED_CONTENT_TYPE: payload.content_type, MODE: mode, DATA: text, ENCODING: encoding}


def envelope(event: CaptureEvent, header: ContentTypeHeader) -> dict[str, Any]:
    """The capture record of `event` as a JSON object, keys in SageMaker's order."""
    capture: dict[str, Any] = {}
    if event.input is not None:
        capture[ENDPOINT_INPUT] = _side(event.input, MODE_INPUT, header)
    if event.output is not None:
        capture[ENDPOINT_OUTPUT] = _side(event.output, MODE_OUTPUT, header)
    metadata: dict[str, Any] = {EVENT_ID: event.event_id}
    if event.inference_id is not None:
        metadata[INFERENCE_ID] = event.inference_id
    metadata[INFERENCE_TIME] = format_inference_time(event.inference_time)
    if event.custom_attributes is not None:
        metadata[CUSTOM_ATTRIBUTES] = event.custom_attributes
    return {CAPTURE_DATA: capture, EVENT_METADATA: metadata, EVENT_VERSION: EVENT_VERSION_VALUE}


def encode_event(event: CaptureEvent, header: ContentTypeHeader) -> bytes:
    """One capture line, compact JSON as SageMaker writes it, without its newline."""
    return orjson.dumps(envelope(event, header))


def encode_events(events: Iterable[CaptureEvent], header: ContentTypeHeader) -> bytes:
    """A capture object's JSONL: every record on its own line, each line ending in a newline."""
    return b"".join([encode_event(e, header) + b"\n" for e in events])


def check_name(kind: str, value: str) -> str:
    """`value` if it is a valid SageMaker endpoint or variant name (`kind` says which), else OptionsError."""
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise OptionsError(
            f"{kind} name {value!r} is not a SageMaker name (1-63 letters, digits and '-', starting and ending "
            "with a letter or digit)"
        )
    return value


def hour_prefix(endpoint: str, variant: str, t: datetime) -> str:
    """``{endpoint}/{variant}/yyyy/mm/dd/hh``: the folder of the UTC hour of `t`."""
    return f"{endpoint}/{variant}/{_utc(t):%Y/%m/%d/%H}"


def object_name(first: datetime, unique: str) -> str:
    """``{MM}-{SS}-{mmm}-{unique}.jsonl`` from the time of an object's first record (`unique`: a uuid4)."""
    t = _utc(first)
    return f"{t:%M-%S}-{t.microsecond // 1000:03d}-{unique}.jsonl"


def object_key(endpoint: str, variant: str, first: datetime, unique: str) -> str:
    """The key of a capture object below the destination: hour folder of `first`, then its name."""
    return f"{hour_prefix(endpoint, variant, first)}/{object_name(first, unique)}"


def parse_capture_modes(modes: Sequence[str]) -> frozenset[Side]:
    """The sides captured under ``CaptureOptions`` (``Input``, ``Output``, ``InputAndOutput``; the SDK's
    ``REQUEST`` and ``RESPONSE`` too, in any case): 1-32 entries."""
    if isinstance(modes, str):
        modes = [modes]
    if not 1 <= len(modes) <= _MAX_CAPTURE_OPTIONS:
        raise OptionsError(f"capture_modes holds 1-{_MAX_CAPTURE_OPTIONS} entries, got {len(modes)}")
    sides: set[Side] = set()
    for mode in modes:
        got = _MODES.get(mode.lower()) if isinstance(mode, str) else None
        if got is None:
            raise OptionsError(f"capture mode {mode!r} is not Input, Output or InputAndOutput (or REQUEST, RESPONSE)")
        sides |= got
    return frozenset(sides)


def valid_inference_id(value: str) -> bool:
    """Whether InvokeEndpoint would accept `value` as an InferenceId (1-64 printable ASCII, no leading space)."""
    return bool(_INFERENCE_ID.fullmatch(value))


def valid_custom_attributes(value: str) -> bool:
    """Whether InvokeEndpoint would accept `value` as CustomAttributes (at most 1024 ASCII characters)."""
    return bool(_CUSTOM_ATTRIBUTES.fullmatch(value))
