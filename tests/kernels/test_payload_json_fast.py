"""The pyarrow fast path for object records: taken for SageMaker's shapes, refused on conflicts, equal to the
general path on everything it takes (the general path is the oracle: the fast one is switched off for it)."""

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
from engine.kernels.payload.json import decode_json_bodies
from engine.kernels.payload.json._fast import _fast_decode
from engine.kernels.payload.json._texts import _documents, _lines
from engine.kernels.payload.records import SideRecords
from engine.kernels.payload.spec import ArrayMode, SideSpec

Side = Literal["input", "output"]


def decode(bodies: list[str], *, lines: bool, side: Side, arrays: ArrayMode = "list") -> SideRecords:
    return decode_json_bodies(pa.array(bodies, pa.string()), lines=lines, side=side, spec=SideSpec(), arrays=arrays)


def general(bodies: list[str], *, lines: bool, side: Side, arrays: ArrayMode = "list") -> SideRecords:
    """The decode with the fast path switched off: what the decoder gave before it existed."""
    with mock.patch.object(payload_json, "_fast_decode", return_value=None):
        return decode(bodies, lines=lines, side=side, arrays=arrays)


def taken(bodies: list[str], *, lines: bool, side: Side) -> bool:
    texts = pl.Series("text", bodies)
    units = _lines(texts) if lines else _documents(texts)
    return _fast_decode(units, lines, side, "list") is not None


def same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def assert_equal(got: SideRecords, want: SideRecords) -> None:
    assert got.failed == want.failed
    assert got.event.tolist() == want.event.tolist()
    assert got.table.schema == want.table.schema
    assert got.table.num_rows == want.table.num_rows
    for name in want.table.column_names:
        assert same(got.table.column(name).to_pylist(), want.table.column(name).to_pylist()), name


# --- which batches take the fast path ------------------------------------------------------------------------

JSONL_REQUEST = '{"features":[28,2,133937,9]}\n{"features":[43,2,72338,12]}'
INSTANCES = '{"instances": [{"features": [0.5, 1.25]}, {"features": [2.0, 3.5]}]}'
PREDICTIONS = '{"predictions": [{"score": 0.0058679054491221905, "predicted_label": 0}]}'


@pytest.mark.parametrize(
    ("bodies", "lines", "side"),
    [
        ([JSONL_REQUEST, '{"features":[1,2,3,4]}\r\n\n'], True, "input"),
        ([INSTANCES, '{"instances": []}'], False, "input"),
        ([PREDICTIONS, '{\n  "predictions": [{"score": 1.5, "predicted_label": 1}]\n}'], False, "output"),
        (['{"a": {"b": 1, "c": "x"}, "d": null}', '{"a": {"b": 2}, "d": true}'], False, "input"),
    ],
)
def test_sagemaker_object_shapes_take_the_fast_path(bodies: list[str], lines: bool, side: Side) -> None:
    assert taken(bodies, lines=lines, side=side)
    assert_equal(decode(bodies, lines=lines, side=side), general(bodies, lines=lines, side=side))


@pytest.mark.parametrize(
    ("bodies", "lines"),
    [
        (['{"a": 1}', '{"a": true}'], True),  # polars' coercion would make the boolean 1
        (['{"a": 1}', '{"a": "x"}'], True),  # mixed: the number keeps its text
        (['{"a": [1]}', '{"a": 1}'], True),
        (['{"a": 1, "a": 2}'], True),  # the first of duplicate keys counts
        (['{"a": 12345678901234567890}'], True),  # beyond int64
        (['{"t": "2026-11-01T00:00:00Z"}'], True),  # pyarrow would read a timestamp
        (['{"a.b": 1, "a": {"b": 2}}'], True),  # one column from two paths
        (['{"a": [{"b": 1}]}'], True),
        (['{"a": 1}', "[1, 2]"], True),
        (['{"instances": [1, 2]}'], False),  # scalar records
        (['{"instances": [{"a": 1}], "inputs": [{"a": 2}]}'], False),  # the side's preference decides
        (['{"instances": [{"a": 1}]}', '{"a": 2}'], False),  # one document is a record itself
        (['{"instances": [{"a": 1}, null]}'], False),
    ],
)
def test_conflicts_go_the_general_way(bodies: list[str], lines: bool) -> None:
    assert not taken(bodies, lines=lines, side="input")
    assert_equal(decode(bodies, lines=lines, side="input"), general(bodies, lines=lines, side="input"))


def test_corrupt_bodies_fail_alone_and_the_rest_stays_fast() -> None:
    # pyarrow reads NaN and a raw tab in a string; serde_json, the validator, does not: those bodies fail.
    bodies = [INSTANCES, '{"instances": [{"features": [NaN]}]}', '{"instances": [{"fe', INSTANCES, '{"a": "\t"}']
    result = decode(bodies, lines=False, side="input")
    assert sorted(result.failed) == [1, 2, 4]
    assert {reason for reason, _ in result.failed.values()} == {"invalid_json"}
    assert result.event.tolist() == [0, 0, 3, 3]
    assert result.table.column("features").to_pylist() == [[0.5, 1.25], [2.0, 3.5]] * 2
    assert_equal(result, general(bodies, lines=False, side="input"))
    lines = [JSONL_REQUEST, '{"features":[1]}\n{"features":[2', JSONL_REQUEST]
    result = decode(lines, lines=True, side="input")
    assert list(result.failed) == [1]
    assert result.failed[1][1].startswith("line 2: ")
    assert result.event.tolist() == [0, 0, 2, 2]
    assert_equal(result, general(lines, lines=True, side="input"))


# --- the fast path equals the general one ----------------------------------------------------------------------

finite = st.floats(allow_nan=False, allow_infinity=False, width=64)
int64s = st.integers(-(2**63), 2**63 - 1)
scalars = st.one_of(st.none(), st.booleans(), int64s, st.integers(-(2**70), 2**70), finite, st.text(max_size=4))
values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(finite, max_size=3),
        st.lists(st.integers(-5, 5), max_size=3),
        st.lists(children, max_size=2),
        st.dictionaries(st.sampled_from(["a", "b", "x.y"]), children, max_size=2),
    ),
    max_leaves=6,
)
# Keys of few names and few types each, so batches both agree (fast path) and conflict (general path).
typed = st.one_of(finite, st.integers(0, 9), st.lists(finite, max_size=3), st.text(max_size=3), st.none())
objects = st.dictionaries(st.sampled_from(["a", "b", "c", "d.e"]), st.one_of(typed, values), max_size=3)
wrappers = st.sampled_from(["instances", "predictions", "inputs", None])


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    bodies=st.lists(st.lists(objects, max_size=3), min_size=1, max_size=5),
    wrapper=wrappers,
    side=st.sampled_from(["input", "output"]),
    arrays=st.sampled_from(["list", "expand"]),
    lines=st.booleans(),
    indent=st.booleans(),
)
def test_fast_path_equals_the_general_path(
    bodies: list[list[dict[str, Any]]], wrapper: str | None, side: Side, arrays: ArrayMode, lines: bool, indent: bool
) -> None:
    if lines:
        texts = ["\r\n".join(json.dumps(r) for r in body) for body in bodies]
    elif wrapper is None:
        texts = [json.dumps(body[0] if body else {}, indent=2 if indent else None) for body in bodies]
    else:
        texts = [json.dumps({wrapper: body, "id": i}, indent=2 if indent else None) for i, body in enumerate(bodies)]
    want = general(texts, lines=lines, side=side, arrays=arrays)
    assert_equal(decode(texts, lines=lines, side=side, arrays=arrays), want)
