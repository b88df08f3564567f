"""Layout: find the capture objects a window needs, listing only the hour prefixes it covers.

SageMaker writes real-time capture to ``{root}/{endpoint}/{variant}/yyyy/mm/dd/hh/{name}.jsonl``.
The given root may be any level of that tree (the capture root, an endpoint, a variant, a year, a
day, an hour) or a single object.
"""

from __future__ import annotations

import logging
import re
import zlib
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from engine.errors import SourceError
from engine.io.storage import Location, translate_errors

__all__ = ["CaptureObject", "HourRange", "find", "list_capture_objects", "looks_like", "looks_like_object"]

logger = logging.getLogger(__name__)

_SUFFIXES = (".jsonl", ".json", ".jsonl.gz", ".json.gz", ".gz")
_DATE_PARTS = (re.compile(r"\d{4}"), re.compile(r"\d{2}"), re.compile(r"\d{2}"), re.compile(r"\d{2}"))
# First and last hour folder to list (inclusive); None on a side: no bound there (a one-sided window).
HourRange = tuple[datetime | None, datetime | None]
_KEY = re.compile(r"(?:^|/)([^/]+)/([^/]+)/(\d{4})/(\d{2})/(\d{2})/(\d{2})/[^/]+$")


@dataclass(frozen=True)
class CaptureObject:
    """One capture object to read, with what its key says about it."""

    path: str
    uri: str
    size: int
    endpoint: str | None
    variant: str | None
    hour: datetime | None  # the hour folder (UTC), None outside the standard layout


def _is_capture_name(name: str) -> bool:
    base = name.rsplit("/", 1)[-1]
    return not base.startswith((".", "_")) and base.endswith(_SUFFIXES)


def describe_key(path: str) -> tuple[str | None, str | None, datetime | None]:
    """Endpoint, variant and hour folder from a key in SageMaker's layout, else Nones."""
    m = _KEY.search(path)
    if not m:
        return None, None, None
    try:
        y, mo, d, h = (int(g) for g in m.groups()[2:])
        hour = datetime(y, mo, d, h, tzinfo=timezone.utc)
    except ValueError:
        return None, None, None
    return m.group(1), m.group(2), hour


def _date_depth(path: str) -> int:
    """How many trailing segments of `path` are yyyy[/mm[/dd[/hh]]] date folders."""
    parts = path.rstrip("/").split("/")
    for k in (4, 3, 2, 1):
        tail = parts[-k:]
        if len(parts) > k and all(_DATE_PARTS[i].fullmatch(p) for i, p in enumerate(tail)):
            return k
    return 0


def _dirs(loc: Location, path: str) -> list[str]:
    with translate_errors(loc.uri(path)):
        entries = loc.fs.ls(path, detail=True)
    return sorted(e["name"].rstrip("/") for e in entries if e.get("type") == "directory")


def _levels_to_years(loc: Location, path: str) -> int:
    """0 if `path` holds year folders (a variant), 1 for an endpoint, 2 for a capture root."""
    probe = path
    for depth in range(3):
        children = _dirs(loc, probe)
        if not children:
            return depth
        if any(re.fullmatch(r"\d{4}", c.rsplit("/", 1)[-1]) for c in children):
            return depth
        probe = children[0]
    return 2


def _hours(first: datetime, last: datetime) -> list[datetime]:
    out, h = [], first
    while h <= last:
        out.append(h)
        h += timedelta(hours=1)
    return out


def _in_range(parts: tuple[int, ...], hours: HourRange) -> bool:
    """Whether the date folder `parts` (year[, month[, day[, hour]]]) holds any hour within `hours`."""
    first, last = hours
    n = len(parts)
    if first is not None and parts < (first.year, first.month, first.day, first.hour)[:n]:
        return False
    return last is None or parts <= (last.year, last.month, last.day, last.hour)[:n]


def _open_hour_dirs(loc: Location, start: str, fixed: list[int], hours: HourRange, concurrency: int) -> list[str]:
    """The hour folders under `start` (a variant, or a date folder `fixed` deep) within a one-sided range.

    Without one of the bounds the hours cannot be enumerated, so the date folders are walked level by level
    and pruned by the bound there is: a job given only ``--start`` lists the years, months, days and hours
    from that hour on, never the months of capture before it.
    """
    level = [(start, tuple(fixed))] if _in_range(tuple(fixed), hours) else []
    while level and len(level[0][1]) < 4:

        def children(entry: tuple[str, tuple[int, ...]]) -> list[tuple[str, tuple[int, ...]]]:
            path, parts = entry
            try:
                names = _dirs(loc, path)
            except SourceError:  # a folder that vanished or cannot be listed holds no hours to read
                return []
            out = []
            for d in names:
                name = d.rsplit("/", 1)[-1]
                if _DATE_PARTS[len(parts)].fullmatch(name) and _in_range((*parts, int(name)), hours):
                    out.append((d, (*parts, int(name))))
            return out

        if len(level) == 1:
            level = children(level[0])
        else:
            with ThreadPoolExecutor(max_workers=min(concurrency, len(level))) as pool:
                level = [c for r in pool.map(children, level) for c in r]
    return [path for path, _ in level]


def find(loc: Location, path: str, *, missing_ok: bool) -> dict[str, dict[str, Any]]:
    """Everything under `path` with its details (fsspec `find`); nothing where `path` is absent and `missing_ok`."""
    try:
        with translate_errors(loc.uri(path)):
            found: dict[str, dict[str, Any]] = loc.fs.find(path, detail=True)
    except SourceError:
        if missing_ok:
            return {}
        raise
    return found


def _files(loc: Location, path: str, *, missing_ok: bool) -> list[dict[str, Any]]:
    found = find(loc, path, missing_ok=missing_ok)
    return [info for info in found.values() if info.get("type") == "file" and _is_capture_name(info["name"])]


def list_capture_objects(
    loc: Location,
    *,
    hours: HourRange | None,
    concurrency: int = 32,
) -> list[CaptureObject]:
    """List the capture objects under `loc.root`, only in the hour prefixes within `hours` (inclusive).

    A side of `hours` that is None is unbounded: the date folders on the other side are not listed.

    Raises:
        SourceError: the root does not exist or cannot be listed.
    """
    fs, root = loc.fs, loc.root
    with translate_errors(loc.uri(root)):
        exists = fs.exists(root)
    if not exists:
        raise SourceError("capture source not found", uri=loc.uri(root))
    if fs.isfile(root):
        info = fs.info(root)
        return [_object(loc, info)]

    depth = _date_depth(root)
    if depth:
        # Root inside the date tree: the fixed date parts narrow the hours to list.
        parts = root.rstrip("/").split("/")
        variant_dirs = ["/".join(parts[:-depth])]
        fixed = [int(p) for p in parts[-depth:]]
    else:
        levels = _levels_to_years(loc, root)
        variant_dirs = [root]
        for _ in range(levels):
            variant_dirs = [d for v in variant_dirs for d in _dirs(loc, v)]
        fixed = []

    if hours is None:
        prefixes = [root] if depth else variant_dirs
        infos = _gather(prefixes, loc, concurrency, missing_ok=False)
    else:
        first, last = hours
        if first is not None and last is not None:
            wanted = [h for h in _hours(first, last) if [h.year, h.month, h.day, h.hour][: len(fixed)] == fixed]
            prefixes = [f"{v}/{h:%Y/%m/%d/%H}" for v in variant_dirs for h in wanted]
        else:
            starts = [root] if depth else variant_dirs
            prefixes = [p for s in starts for p in _open_hour_dirs(loc, s, fixed, hours, concurrency)]
        logger.info("listing %d hour prefixes under %s", len(prefixes), loc.uri(root))
        infos = _gather(prefixes, loc, concurrency, missing_ok=True)

    objects = [_object(loc, info) for info in infos]
    if hours is not None:
        # Files outside the folder hours (e.g. a deeper subfolder) still obey the window's prefixes.
        first, last = hours
        objects = [
            o
            for o in objects
            if o.hour is None or ((first is None or first <= o.hour) and (last is None or o.hour <= last))
        ]
    objects.sort(key=lambda o: (o.endpoint or "", o.variant or "", o.hour or datetime.min, o.path))
    return objects


def _gather(prefixes: list[str], loc: Location, concurrency: int, *, missing_ok: bool) -> list[dict[str, Any]]:
    if len(prefixes) <= 1:
        return [i for p in prefixes for i in _files(loc, p, missing_ok=missing_ok)]
    # Listing is latency-bound on object stores: one request per hour prefix, many at once.
    with ThreadPoolExecutor(max_workers=min(concurrency, len(prefixes))) as pool:
        results: Iterable[list[dict[str, Any]]] = pool.map(lambda p: _files(loc, p, missing_ok=missing_ok), prefixes)
        return [i for r in results for i in r]


def _object(loc: Location, info: dict[str, Any]) -> CaptureObject:
    path = info["name"]
    endpoint, variant, hour = describe_key(path)
    return CaptureObject(
        path=path, uri=loc.uri(path), size=int(info.get("size") or 0), endpoint=endpoint, variant=variant, hour=hour
    )


def looks_like(loc: Location, *, job: str = "realtime") -> str | None:
    """What the folder `loc.root` seems to hold when it holds no capture objects, from its listing only.

    For the one line that tells a user they pointed a job at the wrong data: a Parquet dataset (an
    earlier run's DEST), batch transform capture (``input/`` and ``output/`` manifests, for the real-time
    `job`) or real-time capture (for the batch `job`). None when nothing is recognised.
    """
    try:
        with translate_errors(loc.uri(loc.root)):
            if not loc.fs.isdir(loc.root):
                return None
            names = {e.rstrip("/").rsplit("/", 1)[-1] for e in loc.fs.ls(loc.root, detail=False)}
    except SourceError:
        return None
    if not names:
        return None
    if "_SUCCESS" in names or any(n.startswith(("endpoint=", "year=")) or n.endswith(".parquet") for n in names):
        return "a Parquet dataset (the output of an earlier run), not capture"
    if job != "batch":
        return "batch transform capture (read it with capture-engine batch)" if names <= {"input", "output"} else None
    try:
        found = list_capture_objects(loc, hours=None)
    except SourceError:
        return None
    if any(o.endpoint is not None for o in found[:1]):
        return "real-time endpoint capture (read it with capture-engine realtime)"
    return None


def looks_like_object(loc: Location, path: str) -> str | None:
    """What a JSON Lines object that decoded to no capture record holds, from its first line.

    Only called once a run found nothing but rejects, so that a good run never reads an object twice.
    """
    try:
        with translate_errors(loc.uri(path)), loc.fs.open(path, "rb") as f:
            head = f.read(64 * 1024)
        if head[:2] == b"\x1f\x8b":  # a gzip object: the start of the stream is enough for its first line
            head = zlib.decompressobj(wbits=31).decompress(head)
    except (SourceError, OSError, zlib.error):
        return None
    first = head.lstrip(b"\xef\xbb\xbf \r\n\t").split(b"\n", 1)[0]
    if first.startswith(b"[") and b'"prefix"' in first:
        return "batch transform capture manifests (read them with capture-engine batch)"
    if b'"groundTruthData"' in first and b'"captureData"' not in first:
        return "ground truth (give it to capture-engine merge --ground-truth)"
    return None
