"""Batch transform units to rows: each file's format sniffed from its first record, appended IDs and times taken
out (CSV: the last two columns; JSON: the two keys), input and output paired, rejects with their reasons."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from engine.kernels.joined import _joined_input, _member_spans, _rebuild, _split_joined_csv
from engine.kernels.payload import Body, ColumnSpec, PayloadFailure, decode_sides
from engine.options import BatchOptions
from engine.report import Counts
from engine.sources.transform import Unit
from engine.tables import rejects_schema, table_spec
from engine.times import TIME_TYPE, in_window, parse_inference_times

__all__ = ["Decoded", "sniff"]

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

    def outputs(self) -> list[pa.RecordBatch]:
        return self.rows

    def reject_batches(self) -> list[pa.RecordBatch]:
        return [self.rejects]

    def counts(self) -> Counts:
        return Counts(
            records=self.records,
            kept=self.written,
            rejected=self.rejects.num_rows,
            out_of_window=self.out_of_window,
            bytes=self.bytes,
            reasons=self.reasons,
        )


def _lines(data: bytes | None) -> pa.Array:
    """The lines of whole-line bytes as a string array (CR of CRLF removed).

    The array is built over `data` itself (offsets from one numpy pass for the newlines), then the newline and
    any CRs before it are trimmed: one copy of the text, where splitting on the pattern made two.
    """
    if not data:
        return pa.array([], pa.string())
    ends = np.flatnonzero(np.frombuffer(data, dtype=np.uint8) == 10)
    offsets = np.empty(len(ends) + 1, dtype=np.int32 if len(data) < 2**31 else np.int64)
    offsets[0] = 0
    offsets[1:] = ends + 1
    kind = pa.binary() if offsets.dtype == np.int32 else pa.large_binary()
    raw = pa.Array.from_buffers(kind, len(ends), [None, pa.py_buffer(offsets), pa.py_buffer(data)])
    text = raw.cast(pa.string() if kind == pa.binary() else pa.large_string())  # raises ArrowInvalid on bad UTF-8
    return pc.utf8_rtrim(text, characters="\r\n").cast(pa.string())


def _safe_lines(data: bytes | None) -> tuple[pa.Array, np.ndarray]:
    """Lines, and a mask of lines that are not UTF-8 (decoded with replacement so counts stay right)."""
    try:
        lines = _lines(data)
        return lines, np.zeros(len(lines), dtype=bool)
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
    """One value n times, built in Arrow (no Python list of n items).

    A string is laid out directly (its bytes n times, offsets in steps of its length): `pa.repeat` appends
    it value by value, which cost about a fifth of decoding a unit with three URI columns. The bytes are
    repeated by Arrow's `binary_repeat`, which releases the GIL and allocates from Arrow's pool: Python's
    ``bytes * n`` held the GIL for the whole copy (the three URI columns are as many bytes as the payloads)
    and took fresh pages from the C allocator for every unit.
    """
    if isinstance(value, str) and type_ == pa.string() and n:
        b = value.encode()
        if len(b) * n < 2**31:
            if b:
                # On a one-value array, not a scalar: a scalar's result is copied once more into the scalar.
                data = pc.binary_repeat(pa.array([b], pa.binary()), n).buffers()[2]
                offsets = np.arange(0, (n + 1) * len(b), len(b), dtype=np.int32)
            else:
                data, offsets = pa.py_buffer(b""), np.zeros(n + 1, np.int32)
            return pa.Array.from_buffers(pa.string(), n, [None, pa.py_buffer(offsets), data])
    return pa.repeat(pa.scalar(value, type_), n)


def _take(arr: pa.Array, idx: np.ndarray) -> pa.Array:
    if len(idx) == len(arr) and (not len(idx) or (idx[0] == 0 and idx[-1] == len(idx) - 1)):
        return arr  # every row, in order (the common case): `idx` is increasing, so it is 0..n-1
    return arr.take(pa.array(idx, pa.int64()))


# First bytes a whitespace-only line can start with: ASCII whitespace, or a lead byte of a longer UTF-8
# character (Unicode spaces such as U+00A0 or U+3000 are all above ASCII).
_MAYBE_SPACE = np.zeros(256, dtype=bool)
_MAYBE_SPACE[[9, 10, 11, 12, 13, 28, 29, 30, 31, 32]] = True
_MAYBE_SPACE[0x80:] = True


def _blank(lines: pa.Array) -> np.ndarray:
    """Mask of lines that are empty or only whitespace.

    Only lines that are empty or start with a byte whitespace can start with are trimmed (most lines start
    with a digit, a letter or a bracket): trimming every line copied the whole unit's text once more.
    """
    n = len(lines)
    if not n:
        return np.zeros(0, dtype=bool)
    if lines.offset or lines.null_count:
        return _mask(pc.equal(pc.utf8_trim_whitespace(lines), ""))
    offsets = np.frombuffer(lines.buffers()[1], dtype=np.int32, count=n + 1)
    data = lines.buffers()[2]
    values = np.frombuffer(data, dtype=np.uint8) if data is not None else np.zeros(0, dtype=np.uint8)
    empty = offsets[1:] == offsets[:-1]
    first = np.where(empty, 0, values[np.minimum(offsets[:-1], max(len(values) - 1, 0))] if len(values) else 0)
    candidates = np.flatnonzero(empty | _MAYBE_SPACE[first])
    out = np.zeros(n, dtype=bool)
    if len(candidates):
        some = lines.take(pa.array(candidates, pa.int64()))
        out[candidates] = _mask(pc.equal(pc.utf8_trim_whitespace(some), ""))
    return out


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
        reject(_blank(lead), "empty_record", "blank line", lead)

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
            padded = parts
            if not three.all():
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


def _decode(rows: pa.RecordBatch, fmt: _Format, spec: ColumnSpec) -> tuple[list[pa.RecordBatch], list[PayloadFailure]]:
    """Typed columns through the payload decoder: input record -> features, output -> predictions."""

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
    carried = rows.drop_columns(["input_data", "output_data", "input_encoding", "output_encoding", "record_index"])
    out_enc = rows.column("output_encoding")
    inp_body, out_body = Body(inp, in_enc, ctype(in_enc)), Body(prediction, out_enc, ctype(out_enc))
    decoded, failed = decode_sides(carried, inp_body, out_body, spec)
    return ([decoded] if decoded is not None and decoded.num_rows else []), failed
