"""Options of a local batch transform, checked as ``CreateTransformJob`` checks them (reference 5.1-5.3)."""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from engine.emulate.jsonpath import JsonPath, PathError, parse_path
from engine.errors import OptionsError

__all__ = ["DATA_PROCESSING_TYPES", "TransformOptions", "media_type"]

logger = logging.getLogger(__name__)

SPLIT_TYPES = ("None", "Line", "RecordIO")
STRATEGIES = ("SingleRecord", "MultiRecord")
DATA_PROCESSING_TYPES = ("text/csv", "application/json", "application/jsonlines")
_DEFAULTS = {"max_concurrent": 1, "batch_strategy": "MultiRecord", "max_payload_mb": 6}  # SDK local mode's
_MAX_PAYLOAD_MB = 100


def media_type(content_type: str | None) -> str | None:
    """The media type of a Content-Type header, lower case, without parameters (``text/csv; charset=utf-8``)."""
    return content_type.split(";", 1)[0].strip().lower() if content_type else None


@dataclass(frozen=True, kw_only=True)
class TransformOptions:
    """A transform job's settings, named as in ``CreateTransformJob``.

    Attributes:
        content_type, accept: ``TransformInput.ContentType`` and ``TransformOutput.Accept``, sent as the
            ``Content-Type`` and ``Accept`` of every request.
        split_type: ``None`` (the whole object per request), ``Line`` or ``RecordIO``.
        batch_strategy: ``SingleRecord`` or ``MultiRecord``; None: the model's ``/execution-parameters``,
            else ``MultiRecord``. Ignored (with a warning) when `split_type` is ``None``.
        max_payload_mb: ``MaxPayloadInMB`` (1..100, in MiB); None: execution parameters, else 6.
        max_concurrent: ``MaxConcurrentTransforms``, requests in flight; None: execution parameters, else 1.
        assemble_with: ``None`` (responses concatenated as they are) or ``Line`` (a newline after each record).
        input_filter, output_filter, join_source: ``DataProcessing``; see `engine.emulate.jsonpath`.
        generate_inference_id: ``BatchDataCaptureConfig.GenerateInferenceId``.
        compression: ``CompressionType`` of the input, ``None`` or ``Gzip``.
        manifest: the input is a ``ManifestFile`` (else an ``S3Prefix``).
        capture: ``BatchDataCaptureConfig.DestinationS3Uri``: where the input and output manifests go.
        invocations_timeout, max_retries: ``ModelClientConfig`` (1..3600 s, 0..3).
        ping_timeout: how long to wait for the model's ``/ping`` to answer 200 before failing.
        slice_end: ``inclusive`` (documented) or ``exclusive`` filter slice ends.
        start_time: the job's start (inference times, capture hour); None: now.
        storage_options: fsspec options for every location.
    """

    content_type: str | None = None
    accept: str | None = None
    split_type: str = "None"
    batch_strategy: str | None = None
    max_payload_mb: int | None = None
    max_concurrent: int | None = None
    assemble_with: str = "None"
    input_filter: str = "$"
    output_filter: str = "$"
    join_source: str = "None"
    generate_inference_id: bool = False
    compression: str = "None"
    manifest: bool = False
    capture: str | None = None
    invocations_timeout: float = 600.0
    max_retries: int = 3
    ping_timeout: float = 10.0
    slice_end: str = "inclusive"
    start_time: datetime | None = None
    storage_options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _choice("--split-type", self.split_type, SPLIT_TYPES)
        _choice("--assemble-with", self.assemble_with, ("None", "Line"))
        _choice("--join-source", self.join_source, ("None", "Input"))
        _choice("--compression", self.compression, ("None", "Gzip"))
        _choice("--slice-end", self.slice_end, ("inclusive", "exclusive"))
        if self.batch_strategy is not None:
            _choice("--batch-strategy", self.batch_strategy, STRATEGIES)
        if self.max_payload_mb is not None and not 1 <= self.max_payload_mb <= _MAX_PAYLOAD_MB:
            # 0 (chunked encoding) is refused: SageMaker's own algorithms do not support it either.
            raise OptionsError(f"--max-payload is 1..{_MAX_PAYLOAD_MB} MB, got {self.max_payload_mb}")
        if self.max_concurrent is not None and self.max_concurrent < 1:
            raise OptionsError(f"--max-concurrent is at least 1, got {self.max_concurrent}")
        if not 1 <= self.invocations_timeout <= 3600:
            raise OptionsError(f"--invocations-timeout is 1..3600 seconds, got {self.invocations_timeout:g}")
        if not 0 <= self.max_retries <= 3:
            raise OptionsError(f"--max-retries is 0..3, got {self.max_retries}")
        if self.ping_timeout < 0:
            raise OptionsError(f"--ping-timeout is at least 0 seconds, got {self.ping_timeout:g}")
        _ = (self.input_path, self.output_path)  # parses (and so checks) both
        if self.data_processing:
            for flag, value in (("--content-type", self.content_type), ("--accept", self.accept)):
                if media_type(value) not in DATA_PROCESSING_TYPES:
                    raise OptionsError(
                        f"with --input-filter, --output-filter or --join-source, {flag} must be one of "
                        f"{', '.join(DATA_PROCESSING_TYPES)} (got {value!r})"
                    )
            csv_in = media_type(self.content_type) == "text/csv"
            if csv_in and (self.split_type != "Line" or self.assemble_with != "Line"):
                raise OptionsError("data processing of CSV needs --split-type Line and --assemble-with Line")
            if self.join_source == "Input" and self.split_type == "RecordIO":
                raise OptionsError("--join-source Input needs --split-type None or Line (records of text)")
        if self.generate_inference_id and self.split_type == "RecordIO":
            raise OptionsError("--generate-inference-id needs CSV or JSON records (--split-type None or Line)")
        if self.generate_inference_id and self.split_type == "Line" and self.assemble_with != "Line":
            # Records concatenated without a separator could not be told apart again, IDs or not.
            raise OptionsError("--generate-inference-id with --split-type Line needs --assemble-with Line")

    @property
    def input_path(self) -> JsonPath:
        return _path("--input-filter", self.input_filter, self.slice_end)

    @property
    def output_path(self) -> JsonPath:
        return _path("--output-filter", self.output_filter, self.slice_end)

    @property
    def data_processing(self) -> bool:
        """Any of InputFilter, OutputFilter, JoinSource set to something other than its default."""
        return self.input_filter != "$" or self.output_filter != "$" or self.join_source != "None"

    def resolved(self, suggested: Mapping[str, Any]) -> TransformOptions:
        """These options with the unset ones from the model's execution parameters, then the defaults.

        Precedence as SageMaker's: the job's request, then ``/execution-parameters``, then 1, MultiRecord, 6.
        """
        values: dict[str, Any] = {}
        strategy = {"MULTI_RECORD": "MultiRecord", "SINGLE_RECORD": "SingleRecord"}.get(
            str(suggested.get("BatchStrategy", "")).upper()
        )
        from_model = {
            "max_concurrent": suggested.get("MaxConcurrentTransforms"),
            "batch_strategy": strategy,
            "max_payload_mb": suggested.get("MaxPayloadInMB"),
        }
        for name, default in _DEFAULTS.items():
            mine = getattr(self, name)
            value = from_model[name] if mine is None else mine
            ok = isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool) and value > 0)
            values[name] = value if value is not None and ok else default
        values["max_payload_mb"] = min(values["max_payload_mb"], _MAX_PAYLOAD_MB)
        if self.split_type == "None" and self.batch_strategy is not None:
            logger.warning("--batch-strategy %s has no effect with --split-type None", self.batch_strategy)
        if values["max_concurrent"] * values["max_payload_mb"] > _MAX_PAYLOAD_MB:
            raise OptionsError(
                f"MaxConcurrentTransforms x MaxPayloadInMB must be at most {_MAX_PAYLOAD_MB}, got "
                f"{values['max_concurrent']} x {values['max_payload_mb']}"
            )
        return replace(self, **values)


def _choice(flag: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise OptionsError(f"{flag} is one of {', '.join(allowed)}, got {value!r}")


@functools.lru_cache(maxsize=64)  # parsed once per filter (it may warn)
def _path(flag: str, text: str, slice_end: str) -> JsonPath:
    try:
        return parse_path(text, slice_end=slice_end)
    except PathError as exc:
        raise OptionsError(f"{flag}: {exc}") from None
