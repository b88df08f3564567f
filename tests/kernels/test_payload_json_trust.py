"""pyarrow's parse standing in for the strict validation: rows and rejects identical to validating every unit.

The reference is the same decoder with ``trust_parser=False`` (every unit validated with serde_json, as before).
The worst defect here would be silent wrong data (a corrupt body decoded into a row), so damaged JSON of every
kind RFC 8259 and rapidjson-with-Arrow's-flags might disagree on is generated and compared.
"""

from __future__ import annotations

import json
import math
from typing import Any, Literal
from unittest import mock

import polars as pl
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import engine.kernels.payload.json as payload_json
from engine.kernels.payload.json import _decode, _trusted, _trusted_bodies
from engine.kernels.payload.json._texts import _documents, _lines
from engine.kernels.payload.records import SideRecords
from engine.kernels.payload.spec import SideSpec

Side = Literal["input", "output"]


def decode(bodies: pa.Array, *, lines: bool, side: Side, trust: bool) -> SideRecords:
    return _decode(bodies, lines=lines, side=side, spec=SideSpec(), arrays="list", trust_parser=trust)


def trusted(bodies: list[str], *, lines: bool, side: Side = "input") -> bool:
    """Whether the batch is decoded without validating every unit."""
    arr = pa.array(bodies, pa.string())
    texts = pl.Series("text", arr)
    units = _lines(texts) if lines else _documents(texts)
    return _trusted(arr, units, lines, side, "list") is not None


def same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return bool(a == b)


def assert_same_as_strict(bodies: pa.Array, *, lines: bool, side: Side) -> SideRecords:
    """The decode equals the strict one, and both equal the general path's (the fast path switched off)."""
    got = decode(bodies, lines=lines, side=side, trust=True)
    assert_equal(got, decode(bodies, lines=lines, side=side, trust=False))
    with mock.patch.object(payload_json, "_fast_decode", return_value=None):
        assert_equal(got, decode(bodies, lines=lines, side=side, trust=False))
    return got


def assert_equal(got: SideRecords, want: SideRecords) -> None:
    assert got.failed == want.failed
    assert got.event.tolist() == want.event.tolist()
    assert got.table.schema == want.table.schema
    assert got.table.num_rows == want.table.num_rows
    for name in want.table.column_names:
        assert same(got.table.column(name).to_pylist(), want.table.column(name).to_pylist()), name


# --- the defects one by one ------------------------------------------------------------------------------------

GOOD = '{"features": [0.5, 1.25], "label": "cat", "n": 3}'
DEFECTS = [
    '{"features": [NaN, 1.25], "label": "cat", "n": 3}',
    '{"features": [-Infinity, 1.25], "label": "cat", "n": 3}',
    '{"features": [Inf, 1.25], "label": "cat", "n": 3}',
    '{"features": [2e308, 1.25], "label": "cat", "n": 3}',
    '{"features": [0.5, 1.25], "label": "c\tt", "n": 3}',
    '{"features": [0.5, 1.25], "label": "c\x01t", "n": 3}',
    '{"features": [0.5, 1.25], "label": "\\ud800", "n": 3}',
    '{"features": [0.5, 1.25], "label": "\\udc00x", "n": 3}',
    '{"features": [0.5, 1.25], "label": "\\x", "n": 3}',
    '{"features": [0.5, 1.25], "label": "cat", "n": 03}',
    '{"features": [0.5, 1.25,], "label": "cat", "n": 3}',
    '{"features": [0.5, 1.25], "label": "cat", "n": 3,}',
    '{"features": [0.5, 1.25], "label": "cat", "n": 3} {"n": 4}',
    '{"features": [0.5, 1.25], "label": "cat", "n": 3}x',
    '{"features": [0.5, 1.25], "label": "cat", "n": 3',
    '{"features": [0.5, 1.], "label": "cat", "n": 3}',
    '{"features": [0.5, .5], "label": "cat", "n": 3}',
    '{"features": [0.5, 1.25], "label": "cat", "n": +3}',
    '{"features": [0.5, 1.25], "label": \'cat\', "n": 3}',
    '{"features": [0.5, 1.25], "label": "cat", "n": 3 /* c */}',
    '{"features": [0.5, 1.25], "label": "cat", "n": tru}',
    '{"features": [0.5, 1.25], "label": "cat", "n": 3}\x0c',
    '{"features": [0.5, 1.25], "label": "cat", "n": 3}\x00',
    '{"features": [0.5, 1.25], "label": "cat", "n": 3}\r{"n": 4}',
    '{"features": [0.5, 1.25], "label": "cat", "n": 3, "deep": ' + "[" * 130 + "]" * 130 + "}",
]


@pytest.mark.parametrize("defect", DEFECTS)
@pytest.mark.parametrize("lines", [True, False])
def test_each_defect_is_rejected_as_the_strict_validation_rejects_it(defect: str, lines: bool) -> None:
    bodies = [GOOD, defect, GOOD]
    got = assert_same_as_strict(pa.array(bodies, pa.string()), lines=lines, side="input")
    assert 1 in got.failed and got.failed[1][0] == "invalid_json"
    assert got.event.tolist() == [0, 2]


def test_a_newline_inside_a_document_string_is_rejected() -> None:
    # Documents are read with their newlines made whitespace; inside a string a raw newline is invalid JSON.
    bodies = ['{"instances": [{"a": "x\ny"}]}', '{"instances": [{"a": "xy"}]}']
    got = assert_same_as_strict(pa.array(bodies, pa.string()), lines=False, side="input")
    assert list(got.failed) == [0]
    pretty = ['{\n  "instances": [\n    {"a": "x y"}\r\n  ]\n}']
    assert trusted(pretty, lines=False)
    assert_same_as_strict(pa.array(pretty, pa.string()), lines=False, side="input")


def test_clean_batches_are_trusted_and_suspect_units_are_validated() -> None:
    assert trusted([GOOD, GOOD + "\n" + GOOD], lines=True)
    assert trusted(['{"instances": [' + GOOD + "]}"], lines=False)
    # "NaN" in a string is valid; the unit is only validated on its own, the batch stays trusted.
    assert trusted([GOOD, '{"label": "NaN and Info", "n": 1}'], lines=True)
    assert trusted([GOOD, '{"label": "\\ud83d\\ude00", "n": 1}'], lines=True)
    assert not trusted([GOOD, DEFECTS[0]], lines=True)
    assert not trusted([GOOD, DEFECTS[-1]], lines=True)  # too deep for serde_json
    assert not trusted([GOOD, DEFECTS[3]], lines=True)  # beyond double range


@pytest.mark.parametrize("first", ["null", "null, null"])
def test_lists_opening_with_null_are_not_shifted(first: str) -> None:
    # pyarrow 26's reader drops nulls that open a list of numbers; its table fails validation, and the batch
    # goes the general way instead of shifting the values.
    bodies = [f'{{"f": [{first}, 1.5, 2.5]}}', '{"f": [3.5]}', '{"f": [1.0, null]}']
    got = assert_same_as_strict(pa.array(bodies, pa.string()), lines=True, side="input")
    nulls = [None] * first.count("null")
    assert got.table.column("f").to_pylist() == [[*nulls, 1.5, 2.5], [3.5], [1.0, None]]
    docs = ['{"instances": [{"f": [' + first + ", 1]}]}", '{"instances": [{"f": [2]}]}']
    got = assert_same_as_strict(pa.array(docs, pa.string()), lines=False, side="input")
    assert got.table.column("f").to_pylist() == [[*nulls, 1.0], [2.0]]


def whole(bodies: list[str]) -> bool:
    """Whether JSON Lines bodies are decoded whole, without splitting them into lines."""
    arr = pa.array(bodies, pa.string())
    return _trusted_bodies(arr, pl.Series("text", arr), "input", "list") is not None


@pytest.mark.parametrize(
    ("bodies", "taken"),
    [
        (['{"a": 1}\n{"a": 2}', '{"a": 3}\r\n\r\n{"a": 4}\r\n', "", "\n\n", '{"a": 5}'], True),
        (['{"a": 1}\n\n', '{"a": 2}'], True),
        (['{"a": 1}\n  \n{"a": 2}'], False),  # a whitespace-only line: split the usual way
        (['  {"a": 1}'], False),
        (['{"a": 1}', "[1, 2]"], False),
        # Two values on one line and one value over two lines would give as many rows as lines: the line
        # check refuses the second, and a string running over a newline is refused by rapidjson.
        (['{"a": 1} {"a": 2}\n{"a":\n3}'], False),
        (['{"a": 1} {"a": 2}', '{"a": "x}', '{", "b": 1}'], False),
        (['{"a": 1} {"a": 2}\n{"a": "x}\n{", "b": 1}'], False),
        (['{"a": 1}\r{"a": 2}', '{"a": 3}'], False),
        (['{"a": 1}{"a": 2}\n'], False),
    ],
)
def test_jsonl_bodies_read_whole_only_with_one_object_per_line(bodies: list[str], taken: bool) -> None:
    assert whole(bodies) is taken
    assert_same_as_strict(pa.array(bodies, pa.string()), lines=True, side="input")


def test_invalid_utf8_takes_the_strict_path() -> None:
    raw = pa.array([GOOD.encode(), b'{"label": "\xff", "n": 1}'], pa.binary())
    bodies = pa.Array.from_buffers(pa.string(), len(raw), raw.buffers())
    texts = pl.Series("text", bodies)
    assert _trusted(bodies, _lines(texts), True, "input", "list") is None
    assert _trusted_bodies(bodies, texts, "input", "list") is None
    assert _trusted(pa.array([GOOD], pa.string()), _lines(pl.Series("text", [GOOD])), True, "input", "list")


# --- generated JSON, valid and damaged ---------------------------------------------------------------------------

DAMAGE = [
    "NaN",
    "-NaN",
    "Infinity",
    "-Infinity",
    "Inf",
    "1e400",
    "2e308",
    ",",
    ":",
    "\x01",
    "\x1f",
    "\x00",
    "\x7f",
    "\t",
    "\n",
    "\r",
    " ",
    "\\",
    '"',
    "\\ud800",
    "\\udc00",
    "\\ud83d\\ude00",
    "\\x",
    "\\u12",
    "0",
    "01",
    "-",
    ".",
    "e",
    "}",
    "{",
    "]",
    "[",
    "tru",
    "nul",
    "\ufeff",
    "\u2028",
    "\u00e9",
    '{"a": 1}',
    "'",
    "/* c */",
    "1e-999",
    "1e999999999999",
    "12345678901234567890",
    "9223372036854775808",
    "0.12345678901234567890123",
]

floats = st.floats(allow_nan=False, allow_infinity=False, width=64)
ints = st.integers(-(10**12), 10**12)


@st.composite
def record(draw: st.DrawFn) -> dict[str, Any]:
    """An object record of one schema (so pyarrow's typed read usually takes the batch), some fields absent."""
    rec: dict[str, Any] = {}
    if draw(st.booleans()):
        rec["features"] = draw(st.lists(st.one_of(floats, ints, st.none()), max_size=4))
    if draw(st.booleans()):
        rec["score"] = draw(floats)
    if draw(st.booleans()):
        rec["label"] = draw(st.one_of(st.text(max_size=6), st.sampled_from(["NaN", "Inf", "x\\y", "\u2028"])))
    if draw(st.booleans()):
        rec["n"] = draw(ints)
    if draw(st.booleans()):
        rec["meta"] = {"ok": draw(st.booleans()), "k": draw(st.text(max_size=3))}
    return rec or draw(st.sampled_from([{}, {"n": 1}]))  # an empty object is a record of no columns


@st.composite
def damaged(draw: st.DrawFn, text: str) -> str:
    """`text`, or `text` with one or two defects: truncation, an inserted or replacing token, trailing data."""
    for _ in range(draw(st.integers(0, 2))):
        how = draw(st.sampled_from(["insert", "replace", "truncate", "append"]))
        at = draw(st.integers(0, max(len(text) - 1, 0)))
        token = draw(st.sampled_from(DAMAGE))
        if how == "insert":
            text = text[:at] + token + text[at:]
        elif how == "replace":
            text = text[:at] + token + text[at + 1 :]
        elif how == "truncate":
            text = text[:at]
        else:
            text = text + token
    return text


@st.composite
def jsonl_body(draw: st.DrawFn) -> str:
    recs = draw(st.lists(record(), min_size=1, max_size=4))
    line_texts = [draw(damaged(json.dumps(r, ensure_ascii=draw(st.booleans())))) for r in recs]
    return draw(st.sampled_from(["\n", "\r\n"])).join(line_texts) + draw(st.sampled_from(["", "\n", "\n\n"]))


@st.composite
def document_body(draw: st.DrawFn, side: Side) -> str:
    recs = draw(st.lists(record(), min_size=1, max_size=4))
    key = draw(st.sampled_from(["instances", "predictions"] if side == "output" else ["instances", "inputs"]))
    indent = draw(st.sampled_from([None, 2]))
    return draw(damaged(json.dumps({key: recs}, indent=indent, ensure_ascii=draw(st.booleans()))))


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(bodies=st.lists(jsonl_body(), min_size=1, max_size=6))
def test_generated_jsonl_decodes_as_with_strict_validation(bodies: list[str]) -> None:
    assert_same_as_strict(pa.array(bodies, pa.string()), lines=True, side="input")


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), side=st.sampled_from(["input", "output"]))
def test_generated_documents_decode_as_with_strict_validation(data: st.DataObject, side: Side) -> None:
    bodies = data.draw(st.lists(document_body(side), min_size=1, max_size=6))
    assert_same_as_strict(pa.array(bodies, pa.string()), lines=False, side=side)
