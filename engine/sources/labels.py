"""The label objects of a label window: ``{root}/yyyy/mm/dd/hh/{name}.jsonl`` by the hour labels were collected,
which is later than the inferences they label (`label_window` widens the inference window by `label_lead`)."""

from __future__ import annotations

import logging
import re
from datetime import datetime, timedelta, timezone

from engine.errors import SourceError
from engine.io.listing import CaptureObject, HourRange, list_capture_objects
from engine.io.storage import Location, translate_errors

# The unit's line geometry and UTF-8 check are the envelope decoder's: labels are JSONL of the same kind.
from engine.options import JobOptions, MergeOptions

__all__ = ["label_window", "list_label_objects"]

logger = logging.getLogger(__name__)


_HOUR_KEY = re.compile(r"(?:^|/)(\d{4})/(\d{2})/(\d{2})/(\d{2})/[^/]+$")


def label_window(options: JobOptions) -> tuple[datetime | None, datetime | None] | None:
    """First and last hour folder of ground truth to list (inclusive), or None for all of them.

    `MergeOptions`: the prediction window's hours widened by `label_delay`; other options: [start, end).
    """
    if isinstance(options, MergeOptions):
        return options.label_hours()
    if options.start is None and options.end is None:
        return None
    first = None if options.start is None else options.start.replace(minute=0, second=0, microsecond=0)
    if options.end is None:
        return first, None
    last = (options.end - timedelta(milliseconds=1)).replace(minute=0, second=0, microsecond=0)
    return first, last


def _hour_of(path: str) -> datetime | None:
    m = _HOUR_KEY.search(path)
    if not m:
        return None
    try:
        y, mo, d, h = (int(g) for g in m.groups())
        return datetime(y, mo, d, h, tzinfo=timezone.utc)
    except ValueError:
        return None


def list_label_objects(loc: Location, *, hours: HourRange | None, concurrency: int = 32) -> list[CaptureObject]:
    """The ground-truth objects under `loc.root` in the hour folders within `hours` (inclusive), in read order.

    The root is the folder holding the year folders, any level below it, or one object. Objects come in
    (hour, key) order: the order in which a later label supersedes an earlier one.

    Raises:
        SourceError: the root does not exist or cannot be listed.
    """
    with translate_errors(loc.uri(loc.root)):
        exists = loc.fs.exists(loc.root)
    if not exists:
        raise SourceError("ground truth not found", uri=loc.uri(loc.root))
    found = list_capture_objects(loc, hours=hours, concurrency=concurrency)
    # The capture layout names an endpoint and variant above the hours; ground truth has none.
    objects = [CaptureObject(o.path, o.uri, o.size, None, None, _hour_of(o.path)) for o in found]
    if hours is not None:
        first, last = hours
        objects = [
            o
            for o in objects
            if o.hour is None or ((first is None or first <= o.hour) and (last is None or o.hour <= last))
        ]
    objects.sort(key=lambda o: (o.hour or datetime.min.replace(tzinfo=timezone.utc), o.path))
    return objects
