"""The batch reader's line kernels against plain Python references: every shortcut must give the same lines,
blanks, repeated URIs and paired units as the straightforward code it replaced."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.io.storage import open_location
from engine.kernels.batch_records import _blank, _lines, _repeat, _safe_lines, _take
from engine.sources.manifests import TransformFile
from engine.sources.transform import _count_newlines, _single_record, iter_units

# Bytes that make lines hard: CR (alone, doubled, before LF), whitespace of every kind Arrow trims, multi-byte
# characters (a Unicode space among them), commas and the newline itself.
_PIECES = ["a", "1,2", " ", "\t", "\r", "\r\r", "\x0b", "\x1c", "\x85", "\u00a0", "\u3000", "é", ",", "x y", "\n"]
_text = st.lists(st.sampled_from(_PIECES), max_size=60).map(lambda parts: "".join(parts) + "\n")


@settings(max_examples=150, deadline=None)
@given(_text)
def test_lines_and_blanks_equal_the_straightforward_split(text: str) -> None:
    data = text.encode()
    lines = _lines(data)
    want = [line.rstrip("\r") for line in text.split("\n")[:-1]]
    assert lines.to_pylist() == want
    # The blank check trims only candidate lines: same mask as trimming every line with Arrow.
    everything = pc.equal(pc.utf8_trim_whitespace(pa.array(want, pa.string())), "").to_pylist()
    assert _blank(lines).tolist() == everything


def test_invalid_utf8_lines_are_flagged_and_still_counted() -> None:
    lines, bad = _safe_lines(b"ok\r\n\xff\xfe\nfine\n")
    assert lines.to_pylist() == ["ok", "\ufffd\ufffd", "fine"]
    assert bad.tolist() == [False, True, False]


@pytest.mark.parametrize("value", ["", "file:///data/job-0/in-0.csv.out", "s3://bucket/é/ü.out"])
def test_repeated_strings_equal_arrow_repeat(value: str) -> None:
    got = _repeat(value, 5, pa.string())
    got.validate(full=True)
    assert got.equals(pa.repeat(pa.scalar(value, pa.string()), 5))
    assert _repeat(None, 3, pa.string()).to_pylist() == [None] * 3


def test_take_of_every_row_is_the_array_and_of_some_rows_a_take() -> None:
    arr = pa.array(["a", "b", "c"])
    assert _take(arr, np.arange(3)) is arr
    assert _take(arr, np.array([0, 2])).to_pylist() == ["a", "c"]
    assert _take(arr, np.array([1, 2])).to_pylist() == ["b", "c"]


@pytest.mark.parametrize("unit_bytes", [5, 64, 1 << 20])
def test_units_keep_every_line_in_step_whatever_the_block_size(tmp_path: Path, unit_bytes: int) -> None:
    """Blocks cut inside lines and inside chunks: the output and input lines of each unit stay paired and
    numbered, with nothing lost or doubled (the input one line longer, so its last line is the extra)."""
    out_lines = [f"{i},{'x' * (i % 13)},id-{i},2026-11-01T00:00:00Z" for i in range(300)]
    in_lines = [f"{i},{'y' * (i % 7)}" for i in range(301)]
    (tmp_path / "a.out").write_text("\n".join(out_lines))  # no newline after the last line
    (tmp_path / "a").write_text("\r\n".join(in_lines) + "\r\n")
    loc = open_location(str(tmp_path), {})
    tf = TransformFile(
        manifest=f"file://{tmp_path}/m.json", hour=None, input=f"file://{tmp_path}/a", output=f"file://{tmp_path}/a.out"
    )
    units = list(iter_units(loc, [tf], unit_bytes=unit_bytes, max_record_bytes=1 << 20, concurrency=1))
    got_out: list[str] = []
    got_in: list[str] = []
    for u in units:
        assert u.first_line == len(got_out) + 1
        assert u.output is not None and u.input is not None
        o, i = u.output.decode().split("\n")[:-1], u.input.decode().split("\r\n")[:-1]
        assert len(o) == len(i)
        got_out += o
        got_in += i
    assert got_out == out_lines
    assert got_in == in_lines[:300]
    assert units[-1].last and units[-1].extra == ("input", (in_lines[300] + "\r\n").encode())
    assert sum(u.bytes_read for u in units) == (tmp_path / "a.out").stat().st_size + (tmp_path / "a").stat().st_size


def _single_record_by_strip(text: bytes) -> bool:
    """The definition `_single_record` replaced: strip, then one line, or one JSON document."""
    body = text.strip()
    if not body:
        return False
    if body.count(b"\n") == 0:
        return True
    if body[:1] not in (b"{", b"["):
        return False
    try:
        orjson.loads(body)
    except orjson.JSONDecodeError:
        return False
    return True


_RECORD_PIECES = [" ", "\t", "\r", "\n", "\x0b", "\x0c", "\u00a0", "{", "}", "[", "]", '"a"', ":", "1", ",", "x"]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(_RECORD_PIECES), max_size=40).map("".join))
def test_single_record_equals_the_strip_and_count_definition(text: str) -> None:
    data = text.encode()
    assert _single_record(data) == _single_record_by_strip(data)


def test_newlines_are_counted_across_the_scratch_slices() -> None:
    data = (b"x" * 999 + b"\n") * 3000 + b"tail"  # about 3 MB: three scratch slices and a part
    assert _count_newlines(data) == data.count(b"\n") == 3000
    assert _count_newlines(b"") == 0
