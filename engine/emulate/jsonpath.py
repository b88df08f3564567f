"""The JSONPath subset of batch transform's ``InputFilter`` and ``OutputFilter``, no more (formats reference 4.4).

Documented operators: ``$``; ``.<name>``; ``*``; ``['<name>'(,'<name>')]``; ``[<n>(,<n>)]`` with negative
indices; ``[<start>:<end>]``; at most 63 characters; nothing nested inside brackets. A CSV row is a JSON
array of its fields, so only index paths apply to CSV.

What a path selects, where the docs show only examples: a name or one index gives that value; several
names give an object of those members (``$['id','SageMakerOutput']``); several indices, a slice or ``*``
give an array (``$[0,5:]``). A missing name or an index out of range is an error (the docs say so for
``OutputFilter``). The slice end is **inclusive** as documented (``$[1:4]`` is the second through fifth
columns), which is not JSONPath's or Python's rule; ``slice_end="exclusive"`` gives the other one.

CSV rows without quotes are filtered in one vectorized pass (Arrow split, numpy gather); quoted rows and
JSON records are parsed one by one (orjson), since a JSON value has to be parsed to be cut.
"""

from __future__ import annotations

import csv
import io
import logging
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["MAX_LENGTH", "JsonPath", "PathError", "parse_path"]

logger = logging.getLogger(__name__)

MAX_LENGTH = 63
_NAME = re.compile(r"[^.\[\]\s'\",*]+")
_QUOTED = re.compile(r"'([^']*)'|\"([^\"]*)\"")
_ITEM = re.compile(r"\s*(-?\d+)?\s*(:)?\s*(-?\d+)?\s*")


class PathError(ValueError):
    """A filter that is not in the documented subset, or that does not apply to a record."""


@dataclass(frozen=True)
class _Segment:
    kind: str  # "name", "names", "wild", "index"
    names: tuple[str, ...] = ()
    items: tuple[tuple[int | None, int | None, bool], ...] = ()  # (start, end, is_slice)

    @property
    def single(self) -> bool:
        """It selects one value (not a list or an object of several)."""
        if self.kind == "name":
            return True
        if self.kind == "names":
            return len(self.names) == 1
        return self.kind == "index" and len(self.items) == 1 and not self.items[0][2]


@dataclass(frozen=True)
class JsonPath:
    """A parsed filter; `identity` for ``$`` (the default, which changes nothing)."""

    text: str
    segments: tuple[_Segment, ...]
    inclusive: bool = True

    @property
    def identity(self) -> bool:
        return not self.segments

    def indices(self, length: int) -> list[int] | int:
        """For a path of one index segment (or ``*``): the positions it takes from an array of `length`."""
        seg = self.segments[0]
        if seg.kind == "wild":
            return list(range(length))
        picked: list[int] = []
        for start, end, is_slice in seg.items:
            if not is_slice:
                assert start is not None
                at = start + length if start < 0 else start
                if not 0 <= at < length:
                    raise PathError(f"index {start} is out of range for {length} values ({self.text})")
                picked.append(at)
                continue
            lo = 0 if start is None else (start + length if start < 0 else start)
            hi = length if end is None else (end + length if end < 0 else end) + (1 if self.inclusive else 0)
            picked.extend(range(max(lo, 0), min(hi, length)))
        return picked[0] if seg.single else picked

    @property
    def flat_index(self) -> bool:
        """One index segment (or ``*``): the vectorized CSV path applies."""
        return len(self.segments) == 1 and self.segments[0].kind in ("index", "wild")

    def apply(self, value: Any) -> Any:
        """The part of a parsed JSON value (or a CSV row as a list of field texts) that the path selects."""
        for seg in self.segments:
            value = self._step(seg, value)
        return value

    def _step(self, seg: _Segment, value: Any) -> Any:
        if seg.kind in ("name", "names"):
            if not isinstance(value, dict):
                raise PathError(f"{self.text} selects names from a value that is not an object")
            missing = [n for n in seg.names if n not in value]
            if missing:
                raise PathError(f"{self.text}: the record has no member {missing[0]!r}")
            return value[seg.names[0]] if seg.single else {n: value[n] for n in seg.names}
        if seg.kind == "wild":
            if isinstance(value, dict):
                return list(value.values())
            if isinstance(value, list):
                return list(value)
            raise PathError(f"{self.text}: * applies to an object or an array")
        if not isinstance(value, list):
            raise PathError(f"{self.text} selects indices from a value that is not an array")
        at = JsonPath(self.text, (seg,), self.inclusive).indices(len(value))
        return value[at] if isinstance(at, int) else [value[i] for i in at]

    def apply_json(self, records: pa.Array) -> pa.Array:
        """The selected part of each JSON record, as compact JSON text."""
        if self.identity:
            return records
        out: list[str] = []
        try:
            for text in records.to_pylist():
                out.append(orjson.dumps(self.apply(orjson.loads(text))).decode())  # noqa: PERF401  (the count names the record)
        except orjson.JSONDecodeError:
            raise PathError(f"record {len(out) + 1} is not JSON, so {self.text} cannot apply") from None
        except PathError as exc:
            raise PathError(f"record {len(out) + 1}: {exc}") from None
        return pa.array(out, pa.string())

    def apply_csv(self, records: pa.Array) -> pa.Array:
        """The selected columns of each CSV row (RFC 4180), as CSV text; field texts are kept as they are."""
        if self.identity:
            return records
        records = records.cast(pa.string())
        quoted = np.asarray(pc.fill_null(pc.match_substring(records, '"'), False).to_numpy(zero_copy_only=False))
        if not self.flat_index or quoted.any():
            return self._csv_rows(records)
        parts = pc.split_pattern(records, ",")
        lengths = np.asarray(pc.list_value_length(parts).to_numpy(zero_copy_only=False), dtype=np.int64)
        values = pc.list_flatten(parts)
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        counts = np.zeros(len(lengths), dtype=np.int64)
        order: list[tuple[np.ndarray, np.ndarray]] = []
        for length in np.unique(lengths):  # one selection per distinct row width, not per row
            rows = np.flatnonzero(lengths == length)
            try:
                at = self.indices(int(length))
            except PathError as exc:
                raise PathError(f"record {rows[0] + 1}: {exc}") from None
            picks = np.atleast_1d(np.asarray(at, dtype=np.int64))
            counts[rows] = len(picks)
            order.append((rows, (starts[rows][:, None] + picks[None, :])))
        # Gather in row order: row r's picks at offsets[r]..offsets[r + 1].
        offsets = np.concatenate([[0], np.cumsum(counts)])
        take = np.empty(int(offsets[-1]), dtype=np.int64)
        for rows, idx in order:
            width = idx.shape[1]
            if width:
                take[(offsets[rows][:, None] + np.arange(width)[None, :]).ravel()] = idx.ravel()
        picked = values.take(pa.array(take, pa.int64()))
        lists = pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), picked)
        return pc.binary_join(lists, ",")

    def _csv_rows(self, records: pa.Array) -> pa.Array:
        out: list[str] = []
        try:
            for text in records.to_pylist():
                value = self.apply(next(csv.reader([text]), []))
                if isinstance(value, dict):
                    raise PathError(f"{self.text} selects names, which a CSV row does not have")
                buf = io.StringIO()
                csv.writer(buf, lineterminator="").writerow(value if isinstance(value, list) else [value])
                out.append(buf.getvalue())
        except PathError as exc:
            raise PathError(f"record {len(out) + 1}: {exc}") from None
        return pa.array(out, pa.string())


def parse_path(text: str, *, slice_end: str = "inclusive") -> JsonPath:
    """Parse a filter of the documented subset.

    Raises:
        PathError: the filter is longer than 63 characters or uses what the subset does not have (the
            message names the position).
    """
    if slice_end not in ("inclusive", "exclusive"):
        raise PathError(f"slice_end must be inclusive or exclusive, got {slice_end!r}")
    if len(text) > MAX_LENGTH:
        raise PathError(f"a filter has at most {MAX_LENGTH} characters, {text!r} has {len(text)}")
    if not text.startswith("$"):
        raise PathError(f"a filter starts with $: {text!r}")
    pos, segments = 1, []
    while pos < len(text):
        if text.startswith(".[", pos):
            raise PathError(f"{text!r}: brackets after a dot (nesting) are not supported, at position {pos}")
        if text[pos] == ".":
            if text.startswith("*", pos + 1):
                segments.append(_Segment("wild"))
                pos += 2
                continue
            m = _NAME.match(text, pos + 1)
            if not m:
                raise PathError(f"{text!r}: a name is expected after the dot at position {pos}")
            segments.append(_Segment("name", (m.group(),)))
            pos = m.end()
        elif text[pos] == "[":
            end = text.find("]", pos)
            if end < 0:
                raise PathError(f"{text!r}: unclosed bracket at position {pos}")
            segments.append(_bracket(text, text[pos + 1 : end], pos))
            pos = end + 1
        else:
            raise PathError(f"{text!r}: unexpected {text[pos]!r} at position {pos}")
    path = JsonPath(text, tuple(segments), slice_end == "inclusive")
    if path.inclusive and any(e is not None for s in segments for _, e, sl in s.items if sl):
        logger.warning(
            "%s: the slice end is taken as inclusive, as SageMaker documents ($[1:4] = the second through fifth "
            "values); Python and JSONPath exclude it (--slice-end exclusive)",
            text,
        )
    return path


def _bracket(text: str, inner: str, pos: int) -> _Segment:
    body = inner.strip()
    if body == "*":
        return _Segment("wild")
    if "[" in body or ("." in body and body[:1] not in ("'", '"')):
        raise PathError(f"{text!r}: nothing may nest inside brackets (position {pos})")
    if body[:1] in ("'", '"'):
        names = []
        for piece in body.split(","):
            m = _QUOTED.fullmatch(piece.strip())
            if not m:
                raise PathError(f"{text!r}: expected quoted names inside the brackets at position {pos}")
            name = m.group(1) if m.group(1) is not None else m.group(2)
            if "." in name:
                raise PathError(f"{text!r}: nested names such as {name!r} are not supported")
            names.append(name)
        return _Segment("names", tuple(names))
    items = []
    for piece in body.split(","):
        m = _ITEM.fullmatch(piece)
        if not m or (m.group(1) is None and not m.group(2)):
            raise PathError(f"{text!r}: expected indices or slices inside the brackets at position {pos}")
        start = int(m.group(1)) if m.group(1) is not None else None
        end = int(m.group(3)) if m.group(3) is not None else None
        if not m.group(2) and end is not None:
            raise PathError(f"{text!r}: expected indices or slices inside the brackets at position {pos}")
        items.append((start, end, bool(m.group(2))))
    return _Segment("index", items=tuple(items))
