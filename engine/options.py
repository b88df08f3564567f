"""Typed, frozen, keyword-only options of the jobs, and the parsing of their loose inputs."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from engine.errors import OptionsError
from engine.payload.spec import ColumnSpec

__all__ = ["JobOptions", "RealtimeOptions", "parse_size", "parse_time"]

_TIME = re.compile(
    r"(?P<date>\d{4}-\d{2}-\d{2})(?:[T ](?P<h>\d{2})(?::(?P<m>\d{2})(?::(?P<s>\d{2})(?:\.(?P<f>\d+))?)?)?)?"
    r"(?P<tz>Z|[+-]\d{2}:?\d{2})?"
)
_SIZE = re.compile(r"(?i)\s*(\d+(?:\.\d+)?)\s*(b|kb|kib|mb|mib|gb|gib|tb|tib)?\s*")
_UNITS = {
    None: 1,
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}


def parse_time(value: str | datetime) -> datetime:
    """Parse an ISO-8601 UTC time such as ``2026-11-01T13`` or ``2026-11-01T13:00:00Z``.

    A time without a zone is taken as UTC; a time with an offset is converted to UTC.
    """
    if isinstance(value, datetime):
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)
    m = _TIME.fullmatch(value.strip())
    if not m:
        raise OptionsError(f"invalid time {value!r}: expected ISO-8601 UTC such as 2026-11-01T13:00:00Z")
    text = m.group("date") + "T" + (m.group("h") or "00") + ":" + (m.group("m") or "00")
    text += ":" + (m.group("s") or "00") + ("." + m.group("f")[:6] if m.group("f") else "")
    tz = m.group("tz")
    text += "+00:00" if tz in (None, "Z") else tz
    try:
        return datetime.fromisoformat(text).astimezone(timezone.utc)
    except ValueError as exc:
        raise OptionsError(f"invalid time {value!r}: {exc}") from None


def parse_size(value: str | int) -> int:
    """Parse a byte size such as ``1GB``, ``64MiB`` or ``1000``."""
    if isinstance(value, int):
        return value
    m = _SIZE.fullmatch(value)
    if not m:
        raise OptionsError(f"invalid size {value!r}: expected a number with an optional unit (KB, MB, GB, MiB...)")
    unit = m.group(2).lower() if m.group(2) else None
    return int(float(m.group(1)) * _UNITS[unit])


def _default_workers() -> int:
    return max(1, os.cpu_count() or 1)


@dataclass(frozen=True, kw_only=True)
class JobOptions:
    """Options every job shares: window, limits, concurrency, storage and output format.

    Attributes:
        start: first instant of the window (inclusive, UTC); None reads from the beginning.
        end: end of the window (exclusive, UTC); None reads to the end.
        max_reject_ratio: the run fails when rejects / records exceeds this (0..1).
        require_data: an empty window is an error instead of an empty report.
        workers: decode threads (pyarrow releases the GIL, so threads use every core).
        fetch_concurrency: objects fetched at once from object stores (GETs are latency-bound, so
            many); local disk uses at most 4.
        unit_bytes: bytes of capture decoded as one unit; bounds memory together with `workers`.
        max_line_bytes: longer lines are rejected (a SageMaker body is at most 6 MB, 8 MB as base64).
        storage_options: passed to fsspec for source and destination (e.g. S3 endpoint, credentials).
        compression: Parquet codec.
        row_group_bytes: buffered bytes per partition before a row group is written.
        decode: decode the payloads into typed columns, one row per payload record (design 3.3).
        columns: names and types of the decoded columns (implies `decode`); None: the default rules.
        kms_key_id: encrypt every object written to S3 with this KMS key (SSE-KMS, as SageMaker's
            ``KmsKeyId``); only for ``s3://`` destinations.
    """

    start: datetime | None = None
    end: datetime | None = None
    max_reject_ratio: float = 0.01
    require_data: bool = False
    workers: int = field(default_factory=_default_workers)
    fetch_concurrency: int = 32
    unit_bytes: int = 8 * 2**20
    max_line_bytes: int = 32 * 2**20
    storage_options: Mapping[str, Any] = field(default_factory=dict)
    compression: str = "zstd"
    row_group_bytes: int = 16 * 2**20
    decode: bool = False
    columns: ColumnSpec | None = None
    kms_key_id: str | None = None

    def __post_init__(self) -> None:
        if self.columns is not None:
            object.__setattr__(self, "decode", True)
        if self.start is not None:
            object.__setattr__(self, "start", parse_time(self.start))
        if self.end is not None:
            object.__setattr__(self, "end", parse_time(self.end))
        if self.start is not None and self.end is not None and self.start >= self.end:
            raise OptionsError(f"empty window: start {self.start:%Y-%m-%dT%H:%M:%SZ} is not before end")
        if not 0.0 <= self.max_reject_ratio <= 1.0:
            raise OptionsError(f"max_reject_ratio must be within 0..1, got {self.max_reject_ratio}")
        for name in ("workers", "fetch_concurrency", "unit_bytes", "max_line_bytes", "row_group_bytes"):
            if getattr(self, name) < 1:
                raise OptionsError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.compression not in ("zstd", "snappy", "gzip", "lz4", "none", "brotli"):
            raise OptionsError(
                f"unknown compression {self.compression!r}: choose zstd, snappy, gzip, lz4, brotli or none"
            )

    def window_hours(self) -> tuple[datetime, datetime] | None:
        """The hour prefixes to list: the window widened to whole hours plus one hour of slack each side.

        Slack, because a capture object lands in the hour its first record was written, and its
        later records may belong to the next hour (and clocks are not perfectly in step).
        """
        if self.start is None or self.end is None:
            return None
        first = self.start.replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)
        last = self.end.replace(minute=0, second=0, microsecond=0)
        if last == self.end:
            last -= timedelta(hours=1)
        return first, last + timedelta(hours=1)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able view for the run report; storage options are reduced to their keys (no secrets)."""
        out: dict[str, Any] = {}
        for k, v in self.__dict__.items():
            if k == "storage_options":
                out[k] = sorted(v)
            elif k == "columns":
                out[k] = None if v is None else {"input": v.input.names, "output": v.output.names, "arrays": v.arrays}
            elif isinstance(v, datetime):
                out[k] = v.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            else:
                out[k] = v
        return out


@dataclass(frozen=True, kw_only=True)
class RealtimeOptions(JobOptions):
    """Options of the real-time capture job and reader (`JobOptions`; nothing of its own yet)."""
