"""The batch transform capture job: manifests -> transform objects in step -> records -> write -> commit.

Records: one row per output record with the appended ``SageMakerInferenceId`` and
``SageMakerInferenceTime`` taken out of it (CSV: the last two columns, trimmed; JSON and JSON Lines:
the two keys, wherever they are), the input record it answers, and provenance. Everything per record
is a vectorized Arrow or polars operation over a unit of lines; only per-file decisions (CSV or JSON,
IDs present, output joined with its input) look at a file's first record in Python.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from engine.errors import NoDataError
from engine.io.fetch import ordered_map, prefetch
from engine.io.listing import looks_like
from engine.io.storage import Location, open_location
from engine.jobs.run import JobRun
from engine.kernels.envelope import parse_inference_times
from engine.kernels.payload import ColumnSpec, PayloadFailure, decode_payloads
from engine.options import BatchOptions
from engine.report import RunReport
from engine.sources.manifests import (
    Manifest,
    ManifestProblem,
    TransformFile,
    list_manifests,
    pair_manifests,
    read_manifest,
)
from engine.sources.transform import Unit, iter_units
from engine.tables import rejects_schema, table_spec
from engine.times import TIME_TYPE, in_window

__all__ = ["BatchOptions", "iter_batch", "read_batch", "run_batch"]

logger = logging.getLogger(__name__)

_ISO = r"^\s*\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:?\d{2})?\s*$"
# The appended keys, with the comma that joins them to a neighbour: first the ones followed by a comma
# (first or middle position), then a last one preceded by a comma. RE2 via Arrow, one pass each.
_KEY = r'"SageMakerInference(?:Id|Time)"\s*:\s*"[^"\\]*"'
_KEY_THEN_COMMA = _KEY + r"\s*,\s*"
_COMMA_THEN_KEY = r"\s*,\s*" + _KEY
_NOTES_KEPT = 20  # URIs listed per note in the report; the counts are complete


@dataclass
class _Format:
    """What a file's first record says about all of it."""

    json: bool = False
    ids: bool = False
    joined: bool = False
    input_json: bool = False


@dataclass
class Decoded:
    """One unit decoded: rows of the batch table (or decoded records), rejects, counts."""

    rows: list[pa.RecordBatch]
    rejects: pa.RecordBatch
    records: int
    written: int
    out_of_window: int
    bytes: int
    reasons: Counter[str] = field(default_factory=Counter)
    note: tuple[str, str] | None = None  # (kind, uri) for the report


def _lines(data: bytes | None) -> pa.Array:
    """The lines of whole-line bytes as a string array (CR of CRLF removed), in one Arrow call."""
    if not data:
        return pa.array([], pa.string())
    text = pa.array([data], pa.binary()).cast(pa.string())  # raises ArrowInvalid on bad UTF-8
    parts = pc.list_flatten(pc.split_pattern(text, "\n"))
    return pc.utf8_rtrim(parts.slice(0, len(parts) - 1), characters="\r")


def _safe_lines(data: bytes | None) -> tuple[pa.Array, np.ndarray]:
    """Lines, and a mask of lines that are not UTF-8 (decoded with replacement so counts stay right)."""
    try:
        return _lines(data), np.zeros(0 if not data else data.count(b"\n"), dtype=bool)
    except pa.ArrowInvalid:
        assert data is not None
        raw = data.split(b"\n")[:-1]
        bad = np.array([not _is_utf8(r) for r in raw], dtype=bool)
        text = [r.decode("utf-8", "replace").rstrip("\r") for r in raw]
        return pa.array(text, pa.string()), bad


def _whole(data: bytes | None) -> tuple[pa.Array, np.ndarray]:
    """An object that is one record (SplitType=None), newlines and all."""
    if data is None:
        return pa.array([], pa.string()), np.zeros(0, dtype=bool)
    text = data.decode("utf-8", "replace").strip()
    return pa.array([text], pa.string()), np.array([not _is_utf8(data)])


def _is_utf8(b: bytes) -> bool:
    try:
        b.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _first_line(data: bytes | None) -> str | None:
    """The first non-blank line (a per-file probe: stops at the first one)."""
    pos = 0
    while data and pos < len(data):
        end = data.find(b"\n", pos)
        end = len(data) if end < 0 else end
        line = data[pos:end].strip()
        if line:
            return line.decode("utf-8", "replace")
        pos = end + 1
    return None


def sniff(unit: Unit) -> _Format:
    """A file's format from its first unit: CSV or JSON, appended IDs, output joined with its input."""
    fmt = _Format()
    if unit.whole:  # one record, perhaps pretty-printed over many lines
        head = None if unit.output is None else unit.output.decode("utf-8", "replace").strip() or None
        first_in = None if unit.input is None else unit.input.decode("utf-8", "replace").strip() or None
    else:
        head, first_in = _first_line(unit.output), _first_line(unit.input)
    fmt.input_json = first_in is not None and first_in[:1] in ("{", "[")
    if head is None:
        return fmt
    fmt.json = head[:1] in ("{", "[")
    if fmt.json:
        probe = pl.Series([head])
        fmt.ids = bool(probe.str.json_path_match("$.SageMakerInferenceId").is_not_null().all())
        fmt.joined = bool(
            probe.str.json_path_match("$.SageMakerOutput").is_not_null().all()
            or probe.str.json_path_match("$.SageMakerInput").is_not_null().all()
        )
    else:
        parts = head.rsplit(",", 2)
        fmt.ids = len(parts) == 3 and pc.match_substring_regex(pa.scalar(parts[2]), _ISO).as_py() is True
        body = parts[0] if fmt.ids else head
        fmt.joined = first_in is not None and body.startswith(first_in + ",")
    return fmt


class _Rejects:
    """Collects rejected lines of one unit as `_rejects` rows."""

    def __init__(self, hour: datetime | None) -> None:
        self.hour = hour
        self.parts: list[pa.RecordBatch] = []
        self.reasons: Counter[str] = Counter()

    def add(self, uri: str | None, lines: np.ndarray, reason: str, detail: str, raw: pa.Array | None) -> None:
        n = len(lines)
        if not n:
            return
        self.reasons[reason] += n
        raw_col = pa.nulls(n, pa.binary()) if raw is None else raw.cast(pa.binary())
        self.parts.append(
            pa.RecordBatch.from_arrays(
                [
                    pa.nulls(n, pa.string()),
                    pa.nulls(n, pa.string()),
                    _repeat(self.hour, n, TIME_TYPE),
                    _repeat(uri or "", n, pa.string()),
                    pa.array(lines, pa.int64()),
                    _repeat(reason, n, pa.string()),
                    _repeat(detail, n, pa.string()),
                    raw_col,
                ],
                schema=rejects_schema(),
            )
        )

    def batch(self) -> pa.RecordBatch:
        if not self.parts:
            return _empty_rejects()
        return pa.concat_batches(self.parts) if len(self.parts) > 1 else self.parts[0]


def _empty_rejects() -> pa.RecordBatch:
    return pa.RecordBatch.from_pylist([], schema=rejects_schema())


def _repeat(value: Any, n: int, type_: pa.DataType) -> pa.Array:
    """One value n times, built in Arrow (no Python list of n items)."""
    return pa.repeat(pa.scalar(value, type_), n)


def _take(arr: pa.Array, idx: np.ndarray) -> pa.Array:
    return arr.take(pa.array(idx, pa.int64()))


def _mask(a: pa.Array | pa.ChunkedArray) -> np.ndarray:
    return np.asarray(pc.fill_null(a, False).to_numpy(zero_copy_only=False), dtype=bool)


class _Decoder:
    """Decodes one unit of a transform file, given the format sniffed from the file's first unit."""

    def __init__(self, options: BatchOptions) -> None:
        self.options = options

    @staticmethod
    def _rejected(unit: Unit, rej: _Rejects) -> Decoded:
        """A unit whose every leading line is a reject (its gzip object, or its partner's, is unusable)."""
        assert unit.reject is not None
        reason, uri, detail = unit.reject
        tf = unit.file
        lead_is_out = unit.output is not None
        raw = _raw_lines(unit.output if lead_is_out else unit.input, unit.whole)
        n = len(raw)
        lines = np.arange(unit.first_line, unit.first_line + n, dtype=np.int64)
        rej.add(tf.output if lead_is_out else tf.input, lines, reason, detail[:500], raw)
        note = ("corrupt", uri) if reason == "corrupt_gzip" and unit.first_line == 1 else None
        return Decoded([], rej.batch(), n, 0, 0, unit.bytes_read, rej.reasons, note)

    def __call__(self, job: tuple[Unit, _Format]) -> Decoded:
        unit, fmt = job
        tf = unit.file
        rej = _Rejects(tf.hour)
        if unit.missing is not None and unit.output is None and unit.input is None:
            uri = tf.output if unit.missing == "output" else tf.input
            if unit.missing.startswith("corrupt"):
                rej.add(tf.output or tf.input, np.array([unit.first_line]), "corrupt_gzip", unit.missing, None)
                return Decoded([], rej.batch(), 1, 0, 0, unit.bytes_read, rej.reasons, ("corrupt", uri or ""))
            return Decoded([], _empty_rejects(), 0, 0, 0, 0, Counter(), (f"missing_{unit.missing}", uri or ""))
        if unit.reject is not None:
            return self._rejected(unit, rej)
        split = _whole if unit.whole else _safe_lines
        out, out_bad = split(unit.output)
        inp, in_bad = split(unit.input)
        lead_is_out = unit.output is not None
        lead = out if lead_is_out else inp
        n = len(lead)
        line = np.arange(unit.first_line, unit.first_line + n, dtype=np.int64)
        lead_uri = tf.output if lead_is_out else tf.input
        ok = np.ones(n, dtype=bool)

        def reject(mask: np.ndarray, reason: str, detail: str, raw: pa.Array | None = None) -> None:
            hit = mask & ok
            if hit.any():
                idx = np.flatnonzero(hit)
                rej.add(lead_uri, line[idx], reason, detail, None if raw is None else _take(raw, idx))
                ok[hit] = False

        bad_utf8 = out_bad if lead_is_out else in_bad
        if len(bad_utf8):
            reject(bad_utf8, "invalid_utf8", "the record is not UTF-8 text", lead)
        if lead_is_out and unit.input is not None and len(inp) < n:
            # The input ran out before the output: these outputs answer no input line we can name.
            tail = np.arange(n) >= len(inp)
            reject(tail, "line_count_mismatch", f"the output has more lines than its input {tf.input}", out)
            inp = pa.concat_arrays([inp, pa.nulls(n - len(inp), pa.string())])
        blank = _mask(pc.equal(pc.utf8_trim_whitespace(lead), ""))
        reject(blank, "empty_record", "blank line", lead)

        ids = pa.nulls(n, pa.string())
        times = pa.nulls(n, TIME_TYPE)
        data = lead
        if lead_is_out and fmt.json:
            series = pl.Series(out)
            reject(~series.str.json_path_match("$").is_not_null().to_numpy(), "invalid_json", "not JSON", out)
            if fmt.ids:
                ids = series.str.json_path_match("$.SageMakerInferenceId").to_arrow().cast(pa.string())
                raw_times = series.str.json_path_match("$.SageMakerInferenceTime").to_arrow().cast(pa.string())
                data = pc.replace_substring_regex(out, _KEY_THEN_COMMA, "")
                data = pc.replace_substring_regex(data, _COMMA_THEN_KEY, "")
                times = parse_inference_times(raw_times)
        elif lead_is_out and fmt.ids:
            parts = pc.split_pattern(out, ",", max_splits=2, reverse=True)
            three = _mask(pc.equal(pc.list_value_length(parts), 3))
            reject(~three, "missing_inference_id", "the output line lacks the appended ID and time columns", out)
            padded = pc.if_else(pa.array(three), parts, pa.scalar(["", "", ""], pa.list_(pa.string())))
            data = pc.list_element(padded, 0)
            ids = pc.utf8_trim_whitespace(pc.list_element(padded, 1))
            raw_times = pc.utf8_trim_whitespace(pc.list_element(padded, 2))
            times = parse_inference_times(raw_times)
        if fmt.ids and lead_is_out:
            no_id = ~_mask(pc.greater(pc.utf8_length(pc.fill_null(ids, "")), 0))
            reject(no_id, "missing_inference_id", "no SageMakerInferenceId in the output record", out)
            reject(~_mask(pc.is_valid(times)), "invalid_inference_time", "unparseable SageMakerInferenceTime", out)
        else:
            ids = pa.nulls(n, pa.string())
            times = _repeat(tf.hour, n, TIME_TYPE)

        inside = ok.copy()
        if self.options.start is not None or self.options.end is not None:
            inside &= in_window(times, self.options.start, self.options.end)
        out_of_window = int((ok & ~inside).sum())
        keep = np.flatnonzero(inside)

        encoding = "JSON" if fmt.json else "CSV"
        in_encoding = "JSON" if fmt.input_json else "CSV"
        k = len(keep)
        has_in = unit.input is not None
        rows = pa.RecordBatch.from_arrays(
            [
                _repeat(tf.manifest, k, pa.string()),
                _repeat(tf.input, k, pa.string()),
                _repeat(tf.output, k, pa.string()),
                pa.array(line[keep], pa.int64()),
                pa.array(np.zeros(k, dtype=np.int32), pa.int32()),
                _take(ids, keep),
                _take(times, keep),
                _repeat(in_encoding if has_in else None, k, pa.string()),
                _take(inp, keep) if has_in else pa.nulls(k, pa.string()),
                _repeat(encoding if lead_is_out else None, k, pa.string()),
                _take(data, keep) if lead_is_out else pa.nulls(k, pa.string()),
                _repeat(fmt.joined, k, pa.bool_()),
            ],
            schema=table_spec("batch").schema,
        )
        records = n
        if unit.extra is not None:
            extra, _ = _safe_lines(unit.extra[1])  # unpaired lines may be any bytes, invalid UTF-8 included
            extra_lines = np.arange(unit.first_line + n, unit.first_line + n + len(extra), dtype=np.int64)
            rej.add(tf.input, extra_lines, "line_count_mismatch", f"the input has more lines than {tf.output}", extra)
            records += len(extra)
        batches = [rows]
        written = k
        if self.options.decode and k:
            batches, failed = _decode(rows, fmt, self.options.columns or ColumnSpec())
            for reason, group in _by_reason(failed):
                idx = np.array([f.row for f in group], dtype=np.int64)
                raws = pa.array([f.raw for f in group], pa.binary())
                rej.add(tf.output or tf.input, line[keep][idx], reason, group[0].detail, raws)
            written = k - len(failed)
        note = ("missing_input", tf.input or "") if unit.missing == "input" and unit.first_line == 1 else None
        return Decoded(batches, rej.batch(), records, written, out_of_window, unit.bytes_read, rej.reasons, note)


def _raw_lines(data: bytes | None, whole: bool) -> pa.Array:
    """The lines of whole-line bytes as they are (binary: they may not be UTF-8), in one Arrow call."""
    if not data:
        return pa.array([], pa.binary())
    if whole:
        return pa.array([data.rstrip(b"\n")], pa.binary())
    parts = pc.list_flatten(pc.split_pattern(pa.array([data], pa.binary()), b"\n"))
    return parts.slice(0, len(parts) - 1)


def _by_reason(failed: list[PayloadFailure]) -> Iterator[tuple[str, list[PayloadFailure]]]:
    groups: dict[str, list[PayloadFailure]] = {}
    for f in failed:
        groups.setdefault(f.reason, []).append(f)
    yield from groups.items()


_WS = np.array([32, 9, 10, 13], dtype=np.uint8)


def _skip_ws(b: np.ndarray, pos: np.ndarray, step: int, limit: np.ndarray) -> np.ndarray:
    """Move each position over JSON whitespace (forward: step 1, at b[pos]; backward: step -1, at b[pos - 1]);
    a loop per whitespace byte in a row, not per row."""
    pos = pos.copy()
    look = 0 if step > 0 else -1
    active = np.flatnonzero(pos != limit)
    while len(active):
        ws = np.isin(b[pos[active] + look], _WS)
        active = active[ws]
        pos[active] += step
        active = active[pos[active] != limit[active]]
    return pos


def _member_spans(texts: pa.Array, key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Where the top-level member `key` of each JSON object text is, in bytes of the text, without parsing it.

    Returns (value start, value end, cut start, cut end), -1 where the member is absent: the value's exact text
    is ``text[vs:ve]``, and removing ``text[cs:ce]`` removes the member with one separating comma. Vectorized
    over the bytes (numpy): unescaped quotes delimit strings, brackets outside strings give the depth, and a
    member is a key string followed by a colon at depth 1. The texts must be valid JSON (rejects come first).
    """
    n = len(texts)
    none = np.full(n, -1, dtype=np.int64)
    buffers = texts.buffers()
    if not n or buffers[2] is None:
        return none, none.copy(), none.copy(), none.copy()
    offs = np.frombuffer(buffers[1], dtype=np.int32)[texts.offset : texts.offset + n + 1].astype(np.int64)
    lo, hi = int(offs[0]), int(offs[-1])
    b = np.frombuffer(buffers[2], dtype=np.uint8)[lo:hi]
    starts, ends = offs[:-1] - lo, offs[1:] - lo
    # Quotes not escaped: preceded by an even run of backslashes.
    quotes = np.flatnonzero(b == 34)
    slashes = b == 92
    if slashes.any() and len(quotes):
        last_plain = np.maximum.accumulate(np.where(slashes, -1, np.arange(len(b))))
        before = np.where(quotes > 0, last_plain[np.maximum(quotes - 1, 0)], -1)
        run = np.where(quotes > 0, quotes - 1 - before, 0)
        quotes = quotes[run % 2 == 0]
    row_quotes = np.searchsorted(quotes, starts)
    # Structural characters: those outside strings (an even count of quotes before them in their row).
    cand = np.flatnonzero(np.isin(b, np.frombuffer(b"{}[],:", dtype=np.uint8)))
    cand_row = np.searchsorted(starts, cand, side="right") - 1
    outside = (np.searchsorted(quotes, cand) - row_quotes[cand_row]) % 2 == 0
    s, s_row = cand[outside], cand_row[outside]
    ch = b[s]
    delta = np.where((ch == 123) | (ch == 91), 1, np.where((ch == 125) | (ch == 93), -1, 0))
    depth = np.cumsum(delta)
    first = np.searchsorted(s, starts)
    base = np.where(first > 0, depth[np.maximum(first - 1, 0)], 0)
    depth = depth - base[s_row]  # depth after the character, within its row
    colons = np.flatnonzero((ch == 58) & (depth == 1))
    k = np.frombuffer(key.encode(), dtype=np.uint8)
    c_pos = s[colons]
    qi = np.searchsorted(quotes, c_pos) - 1  # the key's closing quote, then its opening one
    ok = qi >= 1
    close = np.where(ok, quotes[np.maximum(qi, 0)], 0)
    open_ = np.where(ok, quotes[np.maximum(qi - 1, 0)], 0)
    ok &= (close - open_ - 1 == len(k)) & (open_ >= starts[s_row[colons]])
    if ok.any():
        at = open_[ok, None] + 1 + np.arange(len(k))
        ok[ok] = (b[at] == k).all(axis=1)
    hit = colons[ok]
    rows = s_row[hit]
    if not len(rows):
        return none, none.copy(), none.copy(), none.copy()
    rows, keep = np.unique(rows, return_index=True)  # the first such member of a row
    hit, key_open = hit[keep], open_[ok][keep]
    # The value runs to the next comma at depth 1 or to the object's closing brace.
    sep = np.flatnonzero(((ch == 44) & (depth == 1)) | ((ch == 125) & (depth == 0)))
    at_sep = np.searchsorted(sep, hit, side="right")
    closed = at_sep < len(sep)
    nxt = sep[np.minimum(at_sep, max(len(sep) - 1, 0))] if len(sep) else hit
    closed &= s_row[nxt] == rows  # not closed within its row: not valid JSON, the member is left alone
    rows, hit, key_open, nxt = rows[closed], hit[closed], key_open[closed], nxt[closed]
    vs = _skip_ws(b, s[hit] + 1, 1, ends[rows])
    ve = _skip_ws(b, s[nxt], -1, vs)
    comma_after = ch[nxt] == 44
    commas = sep[ch[sep] == 44]
    prev = np.searchsorted(commas, hit) - 1
    prev_at = commas[np.maximum(prev, 0)] if len(commas) else hit
    prev_pos = s[prev_at]
    has_prev = (prev >= 0) & (s_row[prev_at] == rows)
    after = _skip_ws(b, s[nxt] + 1, 1, ends[rows])
    cs = np.where(comma_after, key_open, np.where(has_prev, prev_pos, key_open))
    ce = np.where(comma_after, after, ve)
    out = [none.copy() for _ in range(4)]
    for arr, val in zip(out, (vs, ve, cs, ce), strict=True):
        arr[rows] = val - starts[rows]
    return out[0], out[1], out[2], out[3]


def _rebuild(texts: pa.Array, keep: bool, starts: np.ndarray, ends: np.ndarray) -> pa.Array:
    """Each text cut to ``[starts, ends)`` (`keep`) or with ``[starts, ends)`` removed (not `keep`); unchanged
    where starts is -1 and not `keep`, null where it is -1 and `keep`. Bytes are copied, never re-encoded."""
    n = len(texts)
    buffers = texts.buffers()
    offs = np.frombuffer(buffers[1], dtype=np.int32)[texts.offset : texts.offset + n + 1].astype(np.int64)
    data = np.frombuffer(buffers[2], dtype=np.uint8) if buffers[2] is not None else np.zeros(0, np.uint8)
    found = starts >= 0
    s = np.where(found, offs[:-1] + starts, offs[:-1])
    e = np.where(found, offs[:-1] + ends, offs[1:])
    # Pieces per row: kept rows one piece [s, e); cut rows two pieces [row start, s) and [e, row end).
    piece_s = np.where(keep, s, offs[:-1])
    piece_e = np.where(keep, e, np.where(found, s, offs[1:]))
    tail_s = np.where(keep | ~found, 0, e)
    tail_e = np.where(keep | ~found, 0, offs[1:])
    ps = np.stack([piece_s, tail_s], axis=1).ravel()
    pe = np.stack([piece_e, tail_e], axis=1).ravel()
    lengths = pe - ps
    total = int(lengths.sum())
    piece_offs = np.concatenate([[0], np.cumsum(lengths)])
    idx = np.arange(total, dtype=np.int64) + np.repeat(ps - piece_offs[:-1], lengths)
    out_offs = piece_offs[::2].astype(np.int32)
    arr = pa.StringArray.from_buffers(n, pa.py_buffer(out_offs.tobytes()), pa.py_buffer(data[idx].tobytes()))
    valid: pa.Array | None = texts.is_valid() if texts.null_count else None
    if keep and not found.all():
        mask = pa.array(found)
        valid = mask if valid is None else pc.and_(valid, mask)
    return arr if valid is None else pc.if_else(valid, arr, pa.scalar(None, pa.string()))


def _prediction(rows: pa.RecordBatch, fmt: _Format) -> pa.Array:
    """The output's own part: for outputs joined with their input, without the input columns."""
    out = rows.column("output_data")
    if not fmt.joined:
        return out
    if fmt.json:
        # The member's own text, byte for byte: a JSON path would re-serialize its numbers (some a digit off).
        vs, ve, _, _ = _member_spans(out, "SageMakerOutput")
        return _rebuild(out, True, vs, ve)
    # CSV joined: the input line, a comma, then the prediction columns.
    frame = pl.DataFrame({"o": pl.Series(out), "i": pl.Series(rows.column("input_data"))})
    cut = frame.select(
        pl.when(pl.col("o").str.starts_with(pl.col("i") + ","))
        .then(pl.col("o").str.slice(pl.col("i").str.len_bytes() + 1))
        .otherwise(pl.col("o"))
    ).to_series()
    return cut.to_arrow().cast(pa.string())


_RE2_REPEAT = 1000  # RE2's largest repetition count
_CSV_FIELD = r'(?:"(?:[^"]|"")*"|[^,"]*)'  # one RFC 4180 field, quoted (commas and "" inside) or not


def _split_joined_csv(out: pa.Array, k: int, m: int) -> tuple[pa.Array, pa.Array]:
    """CSV lines of exactly k + m fields cut after field k, as their own text (null where the count differs)."""
    first = rf"(?:{_CSV_FIELD},){{{k - 1}}}{_CSV_FIELD}" if k > 1 else _CSV_FIELD
    rest = rf"(?:{_CSV_FIELD},){{{m - 1}}}{_CSV_FIELD}" if m > 1 else _CSV_FIELD
    parts = pc.extract_regex(out, rf"^(?P<i>{first}),(?P<o>{rest})$")
    return pc.struct_field(parts, "i"), pc.struct_field(parts, "o")


def _joined_input(out: pa.Array) -> pa.Array:
    """The input inside joined JSON outputs, as its own text: ``SageMakerInput`` when the transform wrapped a
    non-object input, else the object without ``SageMakerOutput`` (formats reference 4.4); null if neither."""
    vs, ve, _, _ = _member_spans(out, "SageMakerInput")
    wrapped = _rebuild(out, True, vs, ve)
    _, _, cs, ce = _member_spans(out, "SageMakerOutput")
    rest = pc.if_else(pa.array(cs >= 0), _rebuild(out, False, cs, ce), pa.scalar(None, pa.string()))
    return pc.coalesce(wrapped, rest)


def _decode(rows: pa.RecordBatch, fmt: _Format, spec: ColumnSpec) -> tuple[list[pa.RecordBatch], list[PayloadFailure]]:
    """Typed columns through the real-time payload decoder: input record -> features, output -> predictions."""
    n = rows.num_rows

    def ctype(enc: pa.Array) -> pa.Array:
        return pc.if_else(pc.equal(enc, "JSON"), "application/json", pc.if_else(pc.equal(enc, "CSV"), "text/csv", None))

    inp, in_enc = rows.column("input_data"), rows.column("input_encoding")
    if fmt.joined and fmt.json and inp.null_count:
        # Only the output was captured, but a joined output holds its input: decode the features from there.
        derived = _joined_input(rows.column("output_data"))
        inp = pc.coalesce(inp, derived)
        in_enc = pc.coalesce(in_enc, pc.if_else(pc.is_valid(derived), "JSON", pa.scalar(None, pa.string())))
    prediction = _prediction(rows, fmt)
    k, m = len(spec.input.columns), len(spec.output.columns)
    if not fmt.json and inp.null_count and k and m and k + m <= _RE2_REPEAT:
        # CSV joined with its input, only the output captured: a line does not say where its input ends, but a
        # column spec naming k input and m output columns does (JoinSource=Input writes input, then prediction).
        i_part, o_part = _split_joined_csv(rows.column("output_data"), k, m)
        use = pc.fill_null(pc.and_(pc.is_null(inp), pc.is_valid(i_part)), False)
        inp = pc.if_else(use, i_part, inp)
        in_enc = pc.if_else(use, pa.scalar("CSV"), in_enc)
        prediction = pc.if_else(use, o_part, prediction)
    frame = rows.drop_columns(["input_data", "output_data", "input_encoding", "output_encoding", "record_index"])
    frame = frame.append_column("input_content_type", ctype(in_enc))
    frame = frame.append_column("input_encoding", in_enc)
    frame = frame.append_column("input_data", inp)
    frame = frame.append_column("output_content_type", ctype(rows.column("output_encoding")))
    frame = frame.append_column("output_encoding", rows.column("output_encoding"))
    frame = frame.append_column("output_data", prediction)
    frame = frame.append_column("row", pa.array(np.arange(n), pa.int64()))
    decoded, rejected = decode_payloads(frame, spec)
    failed = [f for _, fs in rejected for f in fs]
    # decode_payloads reports rows of the group it got; with one group that is our row number.
    return [d.drop_columns(["row", "input_content_type", "output_content_type"]) for d in decoded], failed


def _manifests(
    loc: Location, options: BatchOptions, report: RunReport
) -> tuple[list[TransformFile], list[ManifestProblem]]:
    t0 = time.perf_counter()
    inputs, outputs = list_manifests(loc, hours=options.manifest_hours(), concurrency=options.fetch_concurrency)
    parsed: list[Manifest] = []
    problems: list[ManifestProblem] = []
    for side, objs in (("input", inputs), ("output", outputs)):
        for m, p in ordered_map(
            lambda o, s=side: read_manifest(loc, o, s, prefix_map=options.prefix_map),  # type: ignore[misc]
            objs,
            workers=options.fetch_concurrency,
            lookahead=options.fetch_concurrency,
        ):
            problems += p
            if m is not None:
                parsed.append(m)
    files = pair_manifests([m for m in parsed if m.side == "input"], [m for m in parsed if m.side == "output"])
    report.add_time("list", time.perf_counter() - t0)
    report.counts["manifests"] = len(inputs) + len(outputs)
    report.counts["transform_files"] = len(files)
    logger.info("%d manifests list %d transform files under %s", len(inputs) + len(outputs), len(files), loc.url)
    return files, problems


def _problem_rejects(problems: list[ManifestProblem]) -> pa.RecordBatch:
    rows = [
        {
            "endpoint": None,
            "variant": None,
            "source_hour": p.manifest.hour,
            "source_file": p.manifest.uri,
            "source_line": p.entry,
            "reason": p.reason,
            "detail": p.detail[:500],
            "raw": p.raw,
        }
        for p in problems
    ]
    return pa.RecordBatch.from_pylist(rows, schema=rejects_schema())


def _decoded(
    source: str, options: BatchOptions, report: RunReport
) -> tuple[Iterator[Decoded], pa.RecordBatch, list[TransformFile]]:
    loc = open_location(source, options.storage_options, connections=options.fetch_concurrency)
    files, problems = _manifests(loc, options, report)
    units = iter_units(
        loc,
        files,
        unit_bytes=options.unit_bytes,
        max_record_bytes=options.max_line_bytes,
        concurrency=min(options.fetch_concurrency, 4) if loc.is_local else options.fetch_concurrency,
    )
    decoder = _Decoder(options)

    def timed(job: tuple[Unit, _Format]) -> Decoded:
        t0 = time.perf_counter()
        d = decoder(job)
        report.add_time("decode", time.perf_counter() - t0)
        return d

    def with_formats() -> Iterator[tuple[Unit, _Format]]:
        # Sniffed in order here, so that the units of one file can then be decoded in parallel.
        fmt = _Format()
        for unit in units:
            if unit.first_line == 1:
                fmt = sniff(unit)
            yield unit, fmt

    # Reading runs in its own thread, so that the caller's thread (writing Parquet) never waits on it.
    jobs = prefetch(with_formats(), depth=2)
    decoded = ordered_map(timed, jobs, workers=options.workers, lookahead=options.workers + 1)
    return decoded, _problem_rejects(problems), files


def _account(report: RunReport, d: Decoded) -> None:
    report.records += d.records
    report.bytes_read += d.bytes
    report.rejected += d.rejects.num_rows
    report.events_written += d.written
    report.out_of_window += d.out_of_window
    report.rejects_by_reason.update(d.reasons)
    if d.note is not None:
        kind, uri = d.note
        report.counts[kind + "s"] = report.counts.get(kind + "s", 0) + 1
        kept = report.notes.setdefault(kind + "s", [])
        if len(kept) < _NOTES_KEPT:
            kept.append(uri)
        logger.warning("%s: %s", kind.replace("_", " "), uri)


def iter_batch(
    source: str,
    *,
    options: BatchOptions | None = None,
    report: RunReport | None = None,
    on_rejects: Callable[[pa.RecordBatch], None] | None = None,
) -> Iterator[pa.RecordBatch]:
    """Stream the batch transform records under `source`: table rows, or with `options.decode` payload records.

    Decoded records carry the columns of their file, so batches may differ in schema (that is why this is an
    iterator, not a `pyarrow.RecordBatchReader` like `read_batch`). Every record read is counted in `report`
    (records, rows, rejects by reason, outside the window), so ``records = events_written + rejected +
    out_of_window`` holds for the batch source of a merge too; rejects go to `on_rejects` (else the log).

    Raises:
        SourceError: the source does not exist or cannot be read (at the call: manifests are listed then).
    """
    options = options or BatchOptions()
    report = report or RunReport(command="read", source=source, dest=None, options={})
    decoded, problems, _ = _decoded(source, options, report)
    report.objects += report.counts.get("transform_files", 0)

    def rejected(batch: pa.RecordBatch) -> None:
        if not batch.num_rows:
            return
        if on_rejects is not None:
            on_rejects(batch)
        else:
            logger.warning("%d records rejected in %s", batch.num_rows, source)

    def rows() -> Iterator[pa.RecordBatch]:
        report.records += problems.num_rows
        report.rejected += problems.num_rows
        report.rejects_by_reason.update(problems.column("reason").to_pylist())
        rejected(problems)
        for d in decoded:
            _account(report, d)
            rejected(d.rejects)
            yield from (b for b in d.rows if b.num_rows)

    return rows()


def read_batch(
    source: str,
    *,
    options: BatchOptions | None = None,
    on_rejects: Callable[[pa.RecordBatch], None] | None = None,
) -> pa.RecordBatchReader:
    """Stream the batch transform records under `source` (table "batch" of schemas/tables.json; raw, not decoded).

    Args:
        source: a batch data-capture destination (holding ``input/`` and/or ``output/`` manifests) or
            one manifest file, as a local path or fsspec URL.
        options: window, prefix map, concurrency and limits; see `BatchOptions`. `decode` is ignored
            (decoded records vary in schema: use `iter_batch`).
        on_rejects: called with each batch of rejected records (``_rejects`` columns).
    """
    options = options or BatchOptions()
    if options.decode:
        options = BatchOptions(**{**options.__dict__, "decode": False, "columns": None})
    quiet = on_rejects if on_rejects is not None else (lambda _: None)
    rows = iter_batch(source, options=options, on_rejects=quiet)
    return pa.RecordBatchReader.from_batches(table_spec("batch").schema, rows)


def run_batch(
    source: str,
    dest: str,
    *,
    options: BatchOptions | None = None,
    progress: Callable[[RunReport, int], None] | None = None,
) -> RunReport:
    """Read batch transform capture under `source` into hour-partitioned Parquet under `dest`.

    Raises:
        SourceError: the source does not exist or cannot be read.
        SinkError: the destination cannot be written.
        RejectLimitError: rejects exceed `options.max_reject_ratio` (rejects are kept, nothing else).
        NoDataError: the window is empty and `options.require_data` is set.
    """
    options = options or BatchOptions()
    run = JobRun(dest, command="batch", source=source, options=options, endpoint_rejects=False)
    report = run.report
    decoded, problems, files = _decoded(source, options, report)
    report.objects = report.counts.get("transform_files", 0)
    empty_message = "the window held no batch transform records (nothing to write)"
    loc = open_location(source, options.storage_options)
    if not report.counts.get("manifests") and (what := looks_like(loc, job="batch")) is not None:
        # Pointed at the wrong data: say so, rather than commit an empty dataset without a word.
        empty_message = f"no batch capture manifests under {source}: it looks like {what}"
        if options.require_data:
            raise NoDataError(empty_message)
        logger.warning("%s", empty_message)
    report.records += problems.num_rows
    report.rejected += problems.num_rows
    report.rejects_by_reason.update(problems.column("reason").to_pylist())
    with run:
        data = run.writer("batch", time_column="inference_time", dynamic=options.decode)
        # The rejects of every manifest hour read are replaced, so a fixed input clears old rejects.
        for hour in {f.hour for f in files} | set(problems.column("source_hour").to_pylist()):
            run.rejects.touch((None, None, None if hour is None else int(hour.timestamp()) // 3600))
        run.rejects.write(problems)
        for d in decoded:
            _account(report, d)
            t0 = time.perf_counter()
            for b in d.rows:
                data.write(b)
            run.rejects.write(d.rejects)
            report.add_time("write", time.perf_counter() - t0)
            if progress is not None:
                progress(report, report.objects)
        return run.commit(
            data,
            empty_message=empty_message,
            no_data_error=f"no batch transform records in the window under {source}",
        )
