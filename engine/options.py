"""Typed, frozen, keyword-only options of the jobs, and the parsing of their loose inputs."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import datetime, timedelta, timezone
from typing import Any, Literal, TypeVar

from engine.errors import OptionsError
from engine.kernels.payload.spec import ColumnSpec

__all__ = [
    "BatchOptions",
    "DecodeOptions",
    "JobOptions",
    "MergeOptions",
    "ReadOptions",
    "RealtimeOptions",
    "RunOptions",
    "WindowOptions",
    "WriteOptions",
    "check_location",
    "parse_duration",
    "parse_size",
    "parse_time",
]

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


def check_location(name: str, value: object) -> str:
    """`value` as a source or destination location, refusing what is surely a mistake.

    An empty or blank string is what an unset shell variable gives (``realtime "$SRC" "$DEST"``); fsspec
    would take it for the current folder, so a job would scan or write there.

    Raises:
        OptionsError: `value` is not a string, or is empty or only whitespace.
    """
    if not isinstance(value, str) or not value.strip():
        raise OptionsError(f"{name} must be a path or URL, got {value!r}")
    return value


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


_DURATION = re.compile(
    r"(?i)\s*(?:(\d+(?:\.\d+)?)\s*d)?\s*(?:(\d+(?:\.\d+)?)\s*h)?"
    r"\s*(?:(\d+(?:\.\d+)?)\s*m)?\s*(?:(\d+(?:\.\d+)?)\s*s)?\s*"
)


def parse_duration(value: str | int | float | timedelta) -> timedelta:
    """Parse a duration such as ``24h``, ``90m``, ``2d``, ``1h30m`` or ``3600s`` (a bare number is seconds)."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, (int, float)):
        return timedelta(seconds=value)
    text = value.strip()
    try:
        return timedelta(seconds=float(text))
    except ValueError:
        pass
    m = _DURATION.fullmatch(text)
    if not text or not m or not any(m.groups()):
        raise OptionsError(f"invalid duration {value!r}: expected e.g. 24h, 90m, 2d, 1h30m or 3600s")
    d, h, mi, s = (float(g) if g else 0.0 for g in m.groups())
    return timedelta(days=d, hours=h, minutes=mi, seconds=s)


def format_duration(value: timedelta) -> str:
    """``24h``, ``90m``, ``1h30m``: the shortest form `parse_duration` reads back."""
    seconds = int(value.total_seconds())
    if seconds != value.total_seconds():
        return f"{value.total_seconds()}s"
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        n, seconds = divmod(seconds, size)
        if n:
            parts.append(f"{n}{unit}")
    return "".join(parts) or "0s"


def _hour(t: datetime) -> datetime:
    return t.replace(minute=0, second=0, microsecond=0)


def _default_workers() -> int:
    return max(1, os.cpu_count() or 1)


class _Group:
    """The end of the `__post_init__` chain of the option groups (each checks its own fields)."""

    def __post_init__(self) -> None:
        return None


@dataclass(frozen=True, kw_only=True)
class WindowOptions(_Group):
    """Which records: the window [start, end) of inference times (UTC); None leaves that side open."""

    start: datetime | None = None
    end: datetime | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.start is not None:
            object.__setattr__(self, "start", parse_time(self.start))
        if self.end is not None:
            object.__setattr__(self, "end", parse_time(self.end))
        if self.start is not None and self.end is not None and self.start >= self.end:
            raise OptionsError(f"empty window: start {self.start:%Y-%m-%dT%H:%M:%SZ} is not before end")


@dataclass(frozen=True, kw_only=True)
class ReadOptions(_Group):
    """How sources are read: storage, concurrency of fetches, the decoding unit and the longest line."""

    fetch_concurrency: int = 32
    unit_bytes: int = 8 * 2**20
    max_line_bytes: int = 32 * 2**20
    storage_options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__post_init__()
        _at_least_one(self, "fetch_concurrency", "unit_bytes", "max_line_bytes")


@dataclass(frozen=True, kw_only=True)
class DecodeOptions(_Group):
    """Whether payloads are decoded into typed columns, and which columns (a spec implies decoding)."""

    decode: bool = False
    columns: ColumnSpec | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.columns is not None:
            object.__setattr__(self, "decode", True)


@dataclass(frozen=True, kw_only=True)
class WriteOptions(_Group):
    """How the dataset is written: Parquet codec, row-group size, encryption of what goes to S3."""

    compression: str = "zstd"
    row_group_bytes: int = 16 * 2**20
    kms_key_id: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        _at_least_one(self, "row_group_bytes")
        if self.compression not in ("zstd", "snappy", "gzip", "lz4", "none", "brotli"):
            raise OptionsError(
                f"unknown compression {self.compression!r}: choose zstd, snappy, gzip, lz4, brotli or none"
            )


@dataclass(frozen=True, kw_only=True)
class RunOptions(_Group):
    """How a run behaves: its reject limit, whether an empty window fails, and its decode threads."""

    max_reject_ratio: float = 0.01
    require_data: bool = False
    workers: int = field(default_factory=_default_workers)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 <= self.max_reject_ratio <= 1.0:
            raise OptionsError(f"max_reject_ratio must be within 0..1, got {self.max_reject_ratio}")
        _at_least_one(self, "workers")


def _at_least_one(options: object, *names: str) -> None:
    for name in names:
        if getattr(options, name) < 1:
            raise OptionsError(f"{name} must be at least 1, got {getattr(options, name)}")


G = TypeVar("G", bound=_Group)
J = TypeVar("J", bound="JobOptions")


@dataclass(frozen=True, kw_only=True)
class JobOptions(RunOptions, WriteOptions, DecodeOptions, ReadOptions, WindowOptions):
    """Options every job shares, composed of the groups `WindowOptions`, `ReadOptions`, `DecodeOptions`,
    `WriteOptions` and `RunOptions` (flat keywords for people; `part` and `compose` for code that builds options
    from pieces, such as the container and the Spark driver; `from_env` for the environment layer).

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
        decode: decode the payloads into typed columns, one row per payload record.
        columns: names and types of the decoded columns (implies `decode`); None: the default rules.
        kms_key_id: encrypt every object written to S3 with this KMS key (SSE-KMS, as SageMaker's
            ``KmsKeyId``); only for ``s3://`` destinations.
    """

    def part(self, group: type[G]) -> G:
        """The values of one option group (e.g. ``options.part(ReadOptions)``), as that group."""
        return group(**{f.name: getattr(self, f.name) for f in fields(group)})  # type: ignore[arg-type]

    @classmethod
    def compose(cls: type[J], *groups: _Group, **own: Any) -> J:
        """Options from groups (later groups and keywords win), e.g. ``RealtimeOptions.compose(read, run)``."""
        values: dict[str, Any] = {}
        for group in groups:
            values.update({f.name: getattr(group, f.name) for f in fields(group)})  # type: ignore[arg-type]
        return cls(**{**values, **own})

    @classmethod
    def from_env(cls: type[J], environ: Mapping[str, str] | None = None, **given: Any) -> J:
        """Options from ``CAPTURE_ENGINE_<FIELD>`` variables (e.g. ``CAPTURE_ENGINE_UNIT_BYTES=4MiB``) under
        the keywords `given`, which win. Variables that name no field are ignored.

        Raises:
            OptionsError: a variable's value does not parse as its field's type.
        """
        from engine.environment import environment_values

        return cls(**{**environment_values(cls, environ), **given})

    def window_hours(self) -> tuple[datetime | None, datetime | None] | None:
        """The hour prefixes to list: the window widened to whole hours plus one hour of slack each side.

        Slack, because a capture object lands in the hour its first record was written, and its
        later records may belong to the next hour (and clocks are not perfectly in step). A window
        open on one side is open there too (None); without a window, None: list everything.
        """
        if self.start is None and self.end is None:
            return None
        first = None if self.start is None else _hour(self.start) - timedelta(hours=1)
        if self.end is None:
            return first, None
        last = _hour(self.end)
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


_SEGMENT = re.compile(r"[^/\\]+")


@dataclass(frozen=True, kw_only=True)
class MergeOptions(JobOptions):
    """Options of the merge of predictions with ground truth (`JobOptions` plus the join's own).

    The window [start, end) selects predictions by `inference_time`; labels are looked for in the hour
    folders of the label window, from the hour of `start` to `end + label_delay` (both needed; without a
    window every label is read).

    Attributes:
        label_delay: how long after the prediction window labels may still be collected (SageMaker's
            ground-truth offsets play this role); widens the label window only.
        label_lead: how long before the prediction window's start the label folders begin. Labels are
            filed by upload hour, and real uploads (every public notebook) land in the hour before the
            predictions' hour too: clocks, and uploads stamped at the start of a labelling batch.
        how: ``inner`` keeps matched predictions only; ``left`` keeps every prediction, with null labels
            when none matched.
        sagemaker_format: also write SageMaker's merged JSON Lines layout under ``DEST/_sagemaker/merge/`` (needs
            raw, not decoded, predictions).
        schedule_name: the folder SageMaker puts between ``merge/`` and the hour for batch transform
            merges (its monitoring schedule name); None: no folder.
        join_memory: memory for the label side of the join (labels take about their JSON Lines size in
            memory). Label windows whose objects are larger are hash-partitioned into buckets spilled to a
            local temporary directory together with the predictions, and joined bucket by bucket.
        prefix_map: batch capture only: rewrites manifest prefixes before reading, as
            `BatchOptions.prefix_map`.
    """

    label_delay: timedelta = timedelta(hours=24)
    label_lead: timedelta = timedelta(hours=1)
    how: Literal["inner", "left"] = "inner"
    sagemaker_format: bool = False
    schedule_name: str | None = None
    join_memory: int = 256 * 2**20
    prefix_map: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "label_delay", parse_duration(self.label_delay))
        object.__setattr__(self, "label_lead", parse_duration(self.label_lead))
        if self.label_delay < timedelta(0):
            raise OptionsError(f"label_delay must not be negative, got {self.label_delay}")
        if self.label_lead < timedelta(0):
            raise OptionsError(f"label_lead must not be negative, got {self.label_lead}")
        if self.how not in ("inner", "left"):
            raise OptionsError(f"how must be inner or left, got {self.how!r}")
        if self.join_memory < 1:
            raise OptionsError(f"join_memory must be at least 1, got {self.join_memory}")
        if self.schedule_name is not None and not _SEGMENT.fullmatch(self.schedule_name):
            raise OptionsError(f"schedule_name must be one folder name, got {self.schedule_name!r}")
        if self.sagemaker_format and self.decode:
            raise OptionsError(
                "the sagemaker format writes the raw capture bodies SageMaker merges: it cannot be combined "
                "with payload decoding (--decode/--columns)"
            )

    def label_hours(self) -> tuple[datetime | None, datetime | None] | None:
        """The first and last hour folders of ground truth to list: [start - label_lead, end + label_delay).

        A side the window leaves open stays open (None): a window with only a start lists from
        ``start - label_lead`` onward, never the months of labels before it.
        """
        if self.start is None and self.end is None:
            return None
        first = None if self.start is None else _hour(self.start - self.label_lead)
        last = None if self.end is None else _hour(self.end + self.label_delay - timedelta(milliseconds=1))
        return first, last

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        out["label_delay"] = format_duration(self.label_delay)
        out["label_lead"] = format_duration(self.label_lead)
        return out


@dataclass(frozen=True, kw_only=True)
class BatchOptions(JobOptions):
    """Options of the batch job (`JobOptions`) plus where manifest prefixes really are.

    Attributes:
        prefix_map: rewrites manifest prefixes before reading, longest FROM first: inside a
            processing container the objects are mounted on local disk while the manifests still
            say ``s3://...`` (``{"s3://bucket/transform-output/": "/opt/ml/processing/output/"}``).
    """

    prefix_map: Mapping[str, str] = field(default_factory=dict)

    def manifest_hours(self) -> tuple[datetime | None, datetime | None] | None:
        """The manifest hour folders of the window: a folder is the job's start hour, so no slack.

        A side the window leaves open stays open (None).
        """
        if self.start is None and self.end is None:
            return None
        first = None if self.start is None else _hour(self.start)
        if self.end is None:
            return first, None
        last = _hour(self.end)
        return first, last if last < self.end else last - timedelta(hours=1)
