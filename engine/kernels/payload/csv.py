"""CSV payload bodies to typed record columns, all bodies of a batch in one `pyarrow.csv` call.

Rules:
- A body holds one record per line; `\\n`, `\\r\\n` and a bare `\\r` end a line (as for the CSV
  parser, so the count of records per body is the parser's count); blank lines, leading and trailing
  ones included, are not records (as pandas and NumPy, which SageMaker's containers parse CSV with,
  skip them). SageMaker does not support CSV with newlines inside values, so a newline always ends a
  record, and a line with an unbalanced double quote fails its body (``invalid_csv``) rather than
  swallowing the lines after it.
- With `header: true` in the spec, the first line of every body is a header and is skipped.
- Columns: the spec's names and types by position; without a spec, ``f0..fN`` (input) or
  ``prediction`` / ``prediction_0..k`` (output), all float64, with N taken from the most common
  column count of the batch's bodies (a batch holds one endpoint and variant).
- A body with a record of another column count (``csv_column_count``) or a value that does not
  convert to its column's type (``invalid_value``) fails as a whole; other bodies are unaffected.
  Empty values are nulls.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv

from engine.kernels.payload.records import SideRecords
from engine.kernels.payload.spec import SideSpec

__all__ = ["decode_csv_bodies", "default_names"]


def default_names(side: Literal["input", "output"], n: int) -> list[str]:
    """``f0..f{n-1}`` for inputs; ``prediction`` or ``prediction_0..`` for outputs."""
    if side == "input":
        return [f"f{i}" for i in range(n)]
    return ["prediction"] if n == 1 else [f"prediction_{i}" for i in range(n)]


def _np(a: pa.Array | pa.ChunkedArray) -> np.ndarray:
    return np.asarray(a.to_numpy(zero_copy_only=False))


def _column_count(text: pa.Array) -> int:
    """The most common number of fields on the first line of the first bodies (a sample is enough)."""
    first = pc.extract_regex(text.slice(0, 256), r"^(?P<line>[^\n]*)").field("line")
    counts = _np(pc.count_substring(first, ",")).astype(np.int64) + 1
    return int(np.bincount(counts).argmax())


def _layout(text: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """The bytes of all of `text`'s values (one numpy view, no copy) and each value's offsets into them."""
    offsets_type = np.int64 if pa.types.is_large_string(text.type) else np.int32
    _, offsets_buf, data_buf = text.buffers()
    offsets = np.frombuffer(offsets_buf, dtype=offsets_type)[text.offset : text.offset + len(text) + 1]
    offsets = offsets.astype(np.int64)
    if data_buf is None or not len(offsets) or offsets[-1] == offsets[0]:
        return np.empty(0, dtype=np.uint8), offsets - (offsets[0] if len(offsets) else 0)
    data = np.frombuffer(data_buf, dtype=np.uint8)[offsets[0] : offsets[-1]]
    return data, offsets - offsets[0]


def _newline_counts(data: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Newlines in each value (as `count_substring(text, "\\n")`, from one scan of the bytes)."""
    at = np.flatnonzero(data == 10)
    counts: np.ndarray = np.searchsorted(at, offsets[1:]) - np.searchsorted(at, offsets[:-1])
    return counts


def _may_have_blank_lines(data: np.ndarray, offsets: np.ndarray) -> bool:
    """False only when no body starts or ends with a newline or holds two in a row: one pass over the
    bytes instead of a regex per body. Two newlines meeting across two bodies say True too, which only
    costs the (exact) regex path."""
    if not len(data):
        return False
    nl = data == 10
    ne = offsets[1:] > offsets[:-1]
    return bool(nl[offsets[:-1][ne]].any() or nl[offsets[1:][ne] - 1].any() or (nl[1:] & nl[:-1]).any())


def _normalized(bodies: pa.Array) -> pa.Array:
    """Bodies with every line ending made `\\n` and blank lines removed, so that lines = records."""
    text = bodies
    data, offsets = _layout(text)
    if (data == 13).any():
        text = pc.replace_substring(pc.replace_substring(text, "\r\n", "\n"), "\r", "\n")
        data, offsets = _layout(text)
    if _may_have_blank_lines(data, offsets) and pc.any(pc.match_substring_regex(text, r"(^|\n)[\n]|\n$|^\n")).as_py():
        text = pc.replace_substring_regex(text, r"\n\n+", "\n")
        text = pc.utf8_trim(text, characters="\n")
    return text


def _unbalanced_quotes(text: pa.Array) -> np.ndarray:
    """Bodies with a line holding an odd number of double quotes (regex only where a quote occurs)."""
    if not (_layout(text)[0] == 34).any():
        return np.zeros(len(text), dtype=bool)  # no quote in any body: one scan of the bytes says so
    has_quote = _np(pc.match_substring(text, '"')).astype(bool)
    out = np.zeros(len(text), dtype=bool)
    if has_quote.any():
        idx = np.flatnonzero(has_quote)
        odd_line = r'(?m)^[^"\n]*"([^"\n]*"[^"\n]*")*[^"\n]*$'
        out[idx] = _np(pc.match_substring_regex(text.take(pa.array(idx)), odd_line)).astype(bool)
    return out


def _read(buf: pa.Buffer, names: list[str], types: dict[str, pa.DataType]) -> tuple[pa.Table, dict[int, int]]:
    """Parse the joined bodies; returns the table and {1-based line skipped as malformed: its column count}."""
    skipped: dict[int, int] = {}

    def on_invalid(row: pcsv.InvalidRow) -> str:
        skipped[int(row.number)] = int(row.actual_columns)
        return "skip"

    table = pcsv.read_csv(
        pa.BufferReader(buf),
        # One block and one thread: the row numbers given to `on_invalid` are only known this way;
        # the decode units already run in parallel.
        read_options=pcsv.ReadOptions(column_names=names, use_threads=False, block_size=max(1 << 20, buf.size + 1)),
        parse_options=pcsv.ParseOptions(invalid_row_handler=on_invalid, newlines_in_values=False),
        convert_options=pcsv.ConvertOptions(column_types=types, strings_can_be_null=False),
    )
    return table, skipped


def _convert(table: pa.Table, types: dict[str, pa.DataType]) -> tuple[pa.Table, np.ndarray, list[str]]:
    """Cast string columns to their types; rows with a value that does not convert are flagged."""
    bad = np.zeros(table.num_rows, dtype=bool)
    detail = [""] * table.num_rows
    columns = []
    for name in table.column_names:
        raw = table.column(name)
        target = types[name]
        if pa.types.is_string(target):
            columns.append(raw)
            continue
        series = pl.from_arrow(raw.combine_chunks())
        assert isinstance(series, pl.Series)
        stripped = series.str.strip_chars()
        empty = stripped.str.len_bytes() == 0
        if pa.types.is_integer(target) or pa.types.is_floating(target):
            cast = stripped.cast(pl.from_arrow(pa.array([], target)).dtype, strict=False)  # type: ignore[union-attr]
            failed = (cast.is_null() & ~empty).to_numpy()
            values = cast.to_arrow().cast(target)
        else:
            # bool, timestamp, date...: Arrow's own cast, the failing values found by bisection.
            text = pa.array(stripped.to_arrow(), pa.string())
            text = pc.if_else(pa.array(empty.to_numpy()), pa.scalar(None, pa.string()), text)
            failed = _failing(text, target)
            values = pc.if_else(pa.array(failed), pa.scalar(None, pa.string()), text).cast(target)
        for i in np.flatnonzero(failed & ~bad).tolist():
            detail[i] = f"column {name!r}: {series[i]!r} is not {target}"
        bad |= failed
        columns.append(values)
    return pa.table(columns, names=table.column_names), bad, detail


def _failing(text: pa.Array, target: pa.DataType) -> np.ndarray:
    """Mask of the values that do not cast to `target`: halves are cast until each failure is alone."""
    out = np.zeros(len(text), dtype=bool)
    stack = [(0, len(text))]
    while stack:
        lo, hi = stack.pop()
        if hi <= lo:
            continue
        try:
            text.slice(lo, hi - lo).cast(target)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            if hi - lo == 1:
                out[lo] = True
            else:
                mid = (lo + hi) // 2
                stack += [(lo, mid), (mid, hi)]
    return out


def decode_csv_bodies(bodies: pa.Array, *, side: Literal["input", "output"], spec: SideSpec) -> SideRecords:
    """Decode CSV bodies (string array, no nulls) into records; see the module docstring for the rules."""
    if len(bodies) == 0:
        return SideRecords.empty()
    text = _normalized(bodies)
    if spec.header:
        text = pc.replace_substring_regex(text, pattern=r"^[^\n]*(\n|$)", replacement="", max_replacements=1)
    failed: dict[int, tuple[str, str]] = {}
    empty = _np(pc.equal(pc.binary_length(text), 0)).astype(bool)
    for i in np.flatnonzero(empty).tolist():
        failed[i] = ("empty_payload", f"the {side} body holds no CSV record")
    unbalanced = _unbalanced_quotes(text) & ~empty
    for i in np.flatnonzero(unbalanced).tolist():
        failed[i] = ("invalid_csv", f"an {side} line has an unbalanced double quote")
    keep = np.flatnonzero(~empty & ~unbalanced)
    if not len(keep):
        return SideRecords(np.empty(0, dtype=np.int64), pa.table({}), failed)
    text = text.take(pa.array(keep)) if len(keep) < len(text) else text
    counts = _newline_counts(*_layout(text)) + 1
    line_body = np.repeat(keep, counts)  # body index of every physical line of the joined buffer

    if spec.columns:
        names, types = spec.names, dict(spec.columns)
    else:
        names = default_names(side, _column_count(text))
        types = dict.fromkeys(names, pa.float64())

    joined = pc.binary_join(pa.ListArray.from_arrays(pa.array([0, len(text)], pa.int32()), text), "\n")
    buf = joined[0].as_buffer()
    try:
        table, skipped = _read(buf, names, types)
        bad_rows = np.zeros(table.num_rows, dtype=bool)
        detail: list[str] = []
    except pa.ArrowInvalid:
        # A value that does not convert fails the whole read: read text, then find the bad rows.
        table, skipped = _read(buf, names, dict.fromkeys(names, pa.string()))
        table, bad_rows, detail = _convert(table, types)

    lines_kept = np.ones(len(line_body), dtype=bool)
    if skipped:
        lines_kept[np.fromiter(skipped, dtype=np.int64, count=len(skipped)) - 1] = False
    event = line_body[lines_kept]
    for line, got in skipped.items():
        body = int(line_body[line - 1])
        failed.setdefault(body, ("csv_column_count", f"an {side} record has {got} columns, expected {len(names)}"))
    for r in np.flatnonzero(bad_rows).tolist():
        failed.setdefault(int(event[r]), ("invalid_value", f"{side} {detail[r]}"))

    if failed:
        ok_rows = ~np.isin(event, np.fromiter(failed, dtype=np.int64, count=len(failed)))
        if not ok_rows.all():
            table = table.filter(pa.array(ok_rows))
            event = event[ok_rows]
    return SideRecords(event.astype(np.int64), table, failed)
