"""Path layouts as data: how a partition key (endpoint, variant, UTC hour) becomes a folder.

A `Layout` is fixed leading folders, one folder per key name, then the hour's folders, each a template; the
writers (`engine.sinks.dataset`) take one and never build a path themselves. The layouts:

- `HIVE`: the engine's datasets, ``endpoint=e/variant=v/year=YYYY/month=MM/day=DD/hour=HH``, zero-padded, UTC,
  null values as ``__HIVE_DEFAULT_PARTITION__``; `HIVE_HOURS` without the endpoint and variant folders (batch
  tables, rejects of sources without endpoints);
- `sagemaker_merged`: SageMaker's merge job output, ``merge/{endpoint}/{variant}/yyyy/mm/dd/hh`` (real-time)
  or ``merge/[{schedule}/]yyyy/mm/dd/hh`` (batch), which Model Monitor's analyzers read;
- `CAPTURE`: SageMaker's capture keys' hour folders, ``{endpoint}/{variant}/yyyy/mm/dd/hh``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from typing import Literal
from urllib.parse import quote

from engine.kernels.partition import HIVE_NULL, PartitionKey

__all__ = [
    "CAPTURE",
    "HIVE",
    "HIVE_HOURS",
    "MAX_SEGMENT_BYTES",
    "Layout",
    "hive",
    "sagemaker_merged",
]

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
# Filesystems limit a name to 255 bytes; `endpoint=` plus an escaped name must fit, with room to spare.
MAX_SEGMENT_BYTES = 200
_SAFE = "-_.~ "

Escape = Literal["hive", "percent"]


def _hive_escape(value: str | None) -> str:
    # Hive escapes path-unsafe characters with %XX; SageMaker names are [a-zA-Z0-9-], so this is rare.
    if value is None:
        return HIVE_NULL
    escaped = quote(value, safe=_SAFE)
    if escaped == HIVE_NULL:
        # Readers take this exact name (however escaped) for null: a folder really named so gets a suffix.
        return f"{HIVE_NULL}~{hashlib.sha256(value.encode()).hexdigest()[:16]}"
    if len(escaped) <= MAX_SEGMENT_BYTES:
        return escaped
    # Too long for a folder name (100 non-ASCII letters escape to 900 bytes): keep the escaped prefix of
    # whole characters that fits, plus a hash of the whole name, so distinct names stay distinct.
    head: list[str] = []
    size = 0
    for ch in value:
        q = quote(ch, safe=_SAFE)
        if size + len(q) > MAX_SEGMENT_BYTES - 17:
            break
        head.append(q)
        size += len(q)
    return "".join(head) + "~" + hashlib.sha256(value.encode()).hexdigest()[:16]


def _percent_escape(value: str | None) -> str:
    # SageMaker's own folders: the name as it is (escaped only where a path could not hold it).
    return HIVE_NULL if value is None else quote(value, safe=_SAFE)


_ESCAPES = {"hive": _hive_escape, "percent": _percent_escape}


@dataclass(frozen=True)
class Layout:
    """Folder segments of a partition key: `root`, then `key_segment` per name in `keys`, then `hour_segments`.

    Templates take ``{name}`` and ``{value}`` (key folders) or ``{year}``, ``{month}``, ``{day}``, ``{hour}``
    (zero-padded, UTC; the hour folders); a key without an hour gets `null_hour` instead of the hour folders.
    """

    root: tuple[str, ...] = ()
    keys: tuple[Literal["endpoint", "variant"], ...] = ("endpoint", "variant")
    key_segment: str = "{value}"
    hour_segments: tuple[str, ...] = ("{year}", "{month}", "{day}", "{hour}")
    null_hour: tuple[str, ...] = (HIVE_NULL,)
    escape: Escape = "percent"

    def folder(self, key: PartitionKey) -> str:
        """The relative folder of `key` (no leading or trailing slash)."""
        endpoint, variant, hour = key
        values = {"endpoint": endpoint, "variant": variant}
        esc = _ESCAPES[self.escape]
        parts = [*self.root]
        parts += [self.key_segment.format(name=n, value=esc(values[n])) for n in self.keys]
        if hour is None:
            parts += self.null_hour
        else:
            t = _EPOCH + timedelta(hours=hour)  # also before 1970; %Y would not zero-pad year 1 on glibc
            fields = {"year": f"{t.year:04d}", "month": f"{t:%m}", "day": f"{t:%d}", "hour": f"{t:%H}"}
            parts += [s.format(**fields) for s in self.hour_segments]
        return "/".join(parts)

    def under(self, *root: str) -> Layout:
        """This layout below the folders `root` (empty names are left out)."""
        return replace(self, root=(*(r for r in root if r), *self.root))


HIVE = Layout(
    key_segment="{name}={value}",
    hour_segments=("year={year}", "month={month}", "day={day}", "hour={hour}"),
    null_hour=tuple(f"{n}={HIVE_NULL}" for n in ("year", "month", "day", "hour")),
    escape="hive",
)
HIVE_HOURS = replace(HIVE, keys=())
CAPTURE = Layout()


def hive(partition_by: tuple[str, ...]) -> Layout:
    """The hive layout of a table partitioned by `partition_by` (with or without endpoint and variant)."""
    return HIVE if "endpoint" in partition_by else HIVE_HOURS


def sagemaker_merged(kind: Literal["realtime", "batch"], schedule_name: str | None = None) -> Layout:
    """SageMaker's merged layout: ``merge/{e}/{v}/yyyy/mm/dd/hh``, batch ``merge/[{schedule}/]yyyy/mm/dd/hh``."""
    if kind == "realtime":
        return Layout(root=("merge",))
    return Layout(root=("merge", *([schedule_name] if schedule_name else [])), keys=())
