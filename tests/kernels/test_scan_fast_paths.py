"""Vectorized shortcuts must answer exactly as the general code they spare: SageMaker-shaped inference times
(numpy) against the general parser (polars, every accepted format), and the fetch's line scan against a
line-by-line reading."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.io.fetch import line_stats
from engine.times import _fixed_shape, _general, parse_inference_times

# Near the template: digits anywhere, separators mostly right, so invalid dates and shapes are common.
_CHAR = st.sampled_from("0123456789-T:Z .+x")


@st.composite
def _times(draw: st.DrawFn) -> str | None:
    kind = draw(st.integers(0, 9))
    if kind == 0:
        return None
    if kind <= 5:  # the shape, fields up to just past their limits (Feb 30, month 13, hour 24, second 60, 61)
        y = draw(st.one_of(st.integers(0, 9999), st.sampled_from([0, 1, 1900, 2000, 2100, 2024, 9999])))
        mo, day = draw(st.integers(0, 13)), draw(st.integers(0, 32))
        h, mi, sec = draw(st.integers(0, 25)), draw(st.integers(0, 61)), draw(st.integers(0, 62))
        return f"{y:04d}-{mo:02d}-{day:02d}T{h:02d}:{mi:02d}:{sec:02d}Z"
    if kind <= 7:  # plausible dates in other formats and damaged ones
        y, mo, day = draw(st.integers(1, 9999)), draw(st.integers(1, 12)), draw(st.integers(1, 28))
        base = f"{y:04d}-{mo:02d}-{day:02d}T{draw(st.integers(0, 23)):02d}:{draw(st.integers(0, 59)):02d}:00"
        tail = draw(st.sampled_from(["Z", ".5Z", ".123456", "+01:00", "-0130", "", "ZZ", " "]))
        text = base + tail
        cut = draw(st.integers(0, len(text)))
        return text if draw(st.booleans()) else text[:cut] + draw(st.text(_CHAR, max_size=2)) + text[cut + 1 :]
    return draw(st.text(_CHAR, min_size=18, max_size=22))


@settings(max_examples=300, deadline=None)
@given(st.lists(_times(), max_size=40), st.integers(0, 3))
def test_sagemaker_shaped_times_parse_as_the_general_parser_does(values: list[str | None], skip: int) -> None:
    arr = pa.array(values, pa.string()).slice(min(skip, len(values)))  # offset arrays too
    got = parse_inference_times(arr)
    want = _general(arr)
    assert got.type == want.type
    assert got.to_pylist() == want.to_pylist()


def test_fixed_shape_takes_the_common_case_and_leaves_the_rest() -> None:
    values = pa.array(
        [
            "2021-05-18T00:29:04Z",
            "2024-02-29T23:59:59Z",  # leap day
            "2023-02-29T00:00:00Z",  # no such day: general parser (null)
            "2100-02-29T00:00:00Z",  # not a leap year
            "2000-02-29T00:00:00Z",  # a leap year
            "0001-01-01T00:00:00Z",
            "9999-12-31T23:59:59Z",
            "2021-05-18T00:29:60Z",  # leap second: left to the general parser
            "2020-12-03T19:08:02.123456",
            None,
        ]
    )
    us, ok = _fixed_shape(values)
    assert ok.tolist() == [True, True, False, False, True, True, True, False, False, False]
    assert us[0] == 1_621_297_744_000_000
    assert us[5] == -62_135_596_800_000_000
    assert parse_inference_times(values).to_pylist() == _general(values).to_pylist()


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from([b"{", b"}", b"\n", b" ", b"a", b"{\n"]), max_size=60))
def test_line_stats_match_a_reading_line_by_line(parts: list[bytes]) -> None:
    data = b"".join(parts) + b"\n"
    lines = data[:-1].split(b"\n")
    count, braced = line_stats(data)
    assert count == data.count(b"\n")
    assert braced == all(line.startswith(b"{") for line in lines)


def test_line_stats_of_a_real_unit() -> None:
    unit = b'{"a":1}\n{"b":2}\n'
    assert line_stats(unit) == (2, True)
    assert line_stats(unit + b"\n") == (3, False)  # a blank line
    assert line_stats(b" " + unit) == (2, False)
    assert line_stats(b"") == (0, False)
    assert np.array_equal(np.frombuffer(unit, np.uint8)[[0, 8]], [ord("{")] * 2)
