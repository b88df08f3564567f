"""JSON / JSON Lines payload decoding: the quoted SageMaker payloads, the column rules, failures, properties."""

from __future__ import annotations

import json
import math
from typing import Any, Literal
from unittest import mock

import numpy as np
import orjson
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import engine.kernels.payload.json._columns as payload_json
import engine.kernels.payload.json._common as payload_json_common
import engine.kernels.payload.json._scan as payload_json_scan
from engine.kernels.payload.json import decode_json_bodies
from engine.kernels.payload.records import SideRecords
from engine.kernels.payload.spec import ArrayMode, SideSpec

# Payloads quoted in the formats reference (sagemaker-formats.md 1.1 and 1.4), verbatim.
JSONL_REQUEST = (
    '{"features":[28,2,133937,9,13,2,0,0,4,1,15024,0,55,37]}\n{"features":[43,2,72338,12,14,2,12,0,1,1,0,0,40,37]}'
)
JSONL_RESPONSE = '{"predicted_label":1,"score":0.989977359771728}\n{"predicted_label":1,"score":0.504138827323913}\n'
MIXED_RESPONSE = '{"predictions": [{"score": 0.012620825320482254, "predicted_label": 0}]}'
PRETTY_RESPONSE = '{\n    "predictions": [3.5, 4.0, 5.5\n    ]\n}'
FEATURES_1 = [28.0, 2.0, 133937.0, 9.0, 13.0, 2.0, 0.0, 0.0, 4.0, 1.0, 15024.0, 0.0, 55.0, 37.0]
FEATURES_2 = [43.0, 2.0, 72338.0, 12.0, 14.0, 2.0, 12.0, 0.0, 1.0, 1.0, 0.0, 0.0, 40.0, 37.0]


def decode(
    bodies: list[str],
    *,
    lines: bool,
    side: Literal["input", "output"] = "output",
    spec: SideSpec | None = None,
    arrays: ArrayMode = "list",
) -> SideRecords:
    return decode_json_bodies(
        pa.array(bodies, type=pa.string()), lines=lines, side=side, spec=spec or SideSpec(), arrays=arrays
    )


def rows(result: SideRecords) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = result.table.to_pylist()
    return out


def types(result: SideRecords) -> dict[str, pa.DataType]:
    return {f.name: f.type for f in result.table.schema}


# --- the quoted payloads ------------------------------------------------------------------------------------


def test_jsonlines_request_is_two_records_with_a_features_list() -> None:
    result = decode([JSONL_REQUEST], lines=True, side="input")
    assert result.event.tolist() == [0, 0]
    assert types(result) == {"features": pa.list_(pa.float64())}
    assert rows(result) == [{"features": FEATURES_1}, {"features": FEATURES_2}]
    assert result.failed == {}


def test_jsonlines_request_expanded() -> None:
    result = decode([JSONL_REQUEST], lines=True, side="input", arrays="expand")
    names = [f"features_{i}" for i in range(14)]
    assert result.table.column_names == names
    assert all(t == pa.float64() for t in types(result).values())
    assert rows(result) == [dict(zip(names, FEATURES_1, strict=True)), dict(zip(names, FEATURES_2, strict=True))]


def test_jsonlines_response_trailing_newline_is_not_a_record() -> None:
    result = decode([JSONL_RESPONSE], lines=True)
    assert result.event.tolist() == [0, 0]
    assert types(result) == {"predicted_label": pa.int64(), "score": pa.float64()}
    assert rows(result) == [
        {"predicted_label": 1, "score": 0.989977359771728},
        {"predicted_label": 1, "score": 0.504138827323913},
    ]


def test_mixed_encoding_response_is_one_record() -> None:
    result = decode([MIXED_RESPONSE], lines=False)
    assert result.event.tolist() == [0]
    assert rows(result) == [{"score": 0.012620825320482254, "predicted_label": 0}]
    assert types(result) == {"score": pa.float64(), "predicted_label": pa.int64()}


def test_pretty_printed_json_is_one_document_not_lines() -> None:
    result = decode([PRETTY_RESPONSE], lines=False)
    assert result.event.tolist() == [0, 0, 0]
    assert rows(result) == [{"prediction": 3.5}, {"prediction": 4.0}, {"prediction": 5.5}]
    assert types(result) == {"prediction": pa.float64()}


def test_instances_of_objects() -> None:
    body = '{"instances": [{"features": [1, 2.5, 3]}, {"features": [4, 5, 6]}]}'
    result = decode([body], lines=False, side="input")
    assert result.event.tolist() == [0, 0]
    assert rows(result) == [{"features": [1.0, 2.5, 3.0]}, {"features": [4.0, 5.0, 6.0]}]


# --- columns of records --------------------------------------------------------------------------------------


def test_nested_objects_are_flattened() -> None:
    result = decode(['{"a": {"b": 1, "c": {"d": "x"}}}'], lines=False, side="input")
    assert rows(result) == [{"a.b": 1, "a.c.d": "x"}]
    assert types(result) == {"a.b": pa.int64(), "a.c.d": pa.string()}


def test_array_records_give_positional_float_columns() -> None:
    result = decode(['{"instances": [[1,2,3],[4,5,6]]}', "[[7, 8]]"], lines=False, side="input")
    assert result.event.tolist() == [0, 0, 1]
    assert rows(result) == [
        {"f0": 1.0, "f1": 2.0, "f2": 3.0},
        {"f0": 4.0, "f1": 5.0, "f2": 6.0},
        {"f0": 7.0, "f1": 8.0, "f2": None},
    ]
    out = decode(['{"predictions": [[0.1, 0.9]]}'], lines=False, side="output")
    assert rows(out) == [{"prediction_0": 0.1, "prediction_1": 0.9}]


def test_scalar_lines_name_by_side() -> None:
    assert rows(decode(["0.93\n0.5"], lines=True, side="output")) == [{"prediction": 0.93}, {"prediction": 0.5}]
    assert rows(decode(["7"], lines=True, side="input")) == [{"f0": 7}]


def test_container_keys_by_side() -> None:
    body = '{"inputs": [1], "instances": [2, 3], "predictions": 5}'
    assert rows(decode([body], lines=False, side="input")) == [{"f0": 2}, {"f0": 3}]
    assert rows(decode([body], lines=False, side="output")) == [{"prediction": 2}, {"prediction": 3}]
    # "outputs" works for the output side, and a non-list container key is just a field.
    assert rows(decode(['{"outputs": [{"p": 1}]}'], lines=False)) == [{"p": 1}]
    assert rows(decode(['{"predictions": {"a": 1}}'], lines=False)) == [{"predictions.a": 1}]


def test_jsonlines_lines_are_never_unwrapped() -> None:
    result = decode(['{"instances": [1, 2]}'], lines=True, side="input")
    assert rows(result) == [{"instances": [1.0, 2.0]}]


def test_crlf_and_blank_lines() -> None:
    result = decode(['  {"a": 1}  \r\n \t\r\n{"a": 2}\r\n'], lines=True)
    assert result.event.tolist() == [0, 0]
    assert rows(result) == [{"a": 1}, {"a": 2}]


def test_type_rules_and_mixed_columns() -> None:
    bodies = [
        '{"i": 1, "f": 1, "b": true, "s": "x", "m": 1, "mb": 1, "n": null, "l": [1, null]}',
        '{"i": 2, "f": 2.5, "b": false, "s": "y", "m": "z", "mb": true, "o": {"k": [1, "x"]}}',
        '{"m": {"q": 1}, "l": []}',
    ]
    result = decode(bodies, lines=True)
    assert types(result) == {
        "i": pa.int64(),
        "f": pa.float64(),
        "b": pa.bool_(),
        "s": pa.string(),
        "m": pa.string(),
        "mb": pa.string(),
        "n": pa.null(),
        "l": pa.list_(pa.float64()),
        "o.k": pa.string(),
    }
    got = rows(result)
    assert [r["m"] for r in got] == ["1", "z", '{"q": 1}']
    assert [r["mb"] for r in got] == ["1", "true", None]
    assert [r["l"] for r in got] == [[1.0, None], None, []]
    assert got[1]["o.k"] == '[1, "x"]'


def test_expand_pads_shorter_arrays_with_nulls() -> None:
    body = '{"instances": [{"v": [1, 2]}, {"v": [3]}, {"v": null}]}'
    result = decode([body], lines=False, side="input", arrays="expand")
    assert rows(result) == [{"v_0": 1.0, "v_1": 2.0}, {"v_0": 3.0, "v_1": None}, {"v_0": None, "v_1": None}]


def test_output_types_are_plain_arrow() -> None:
    result = decode(['{"s": "x", "l": [1.5]}'], lines=True)
    assert types(result) == {"s": pa.string(), "l": pa.list_(pa.float64())}


def test_escapes_and_unicode_keys() -> None:
    result = decode(['{"\\u00e9": "a\\"b", "k\\"q": "\\\\", "ü": [1]}'], lines=True)
    assert rows(result) == [{"é": 'a"b', 'k"q': "\\", "ü": [1.0]}]


def test_empty_objects_are_records_without_columns() -> None:
    result = decode(["{}\n{}"], lines=True)
    assert result.event.tolist() == [0, 0]
    assert result.table.num_rows == 2
    assert result.table.num_columns == 0


# --- explicit spec -------------------------------------------------------------------------------------------


def test_spec_keeps_casts_and_nulls_missing_fields() -> None:
    spec = SideSpec(columns=(("score", pa.float32()), ("label", pa.int32()), ("note", pa.string())))
    bodies = ['{"score": 1, "label": 1, "extra": 5}\n{"score": 0.25, "label": 2.0, "note": 7}']
    result = decode(bodies, lines=True, spec=spec)
    assert result.table.schema == pa.schema([("score", pa.float32()), ("label", pa.int32()), ("note", pa.string())])
    assert rows(result) == [{"score": 1.0, "label": 1, "note": None}, {"score": 0.25, "label": 2, "note": "7"}]
    assert result.failed == {}


def test_spec_invalid_value_fails_only_that_body() -> None:
    spec = SideSpec(columns=(("score", pa.float64()), ("label", pa.int64())))
    bodies = ['{"score": 0.5, "label": 1}', '{"score": "abc", "label": 1}', '{"score": 1, "label": 1.5}']
    result = decode(bodies, lines=True, spec=spec)
    assert result.event.tolist() == [0]
    assert rows(result) == [{"score": 0.5, "label": 1}]
    assert result.failed[1][0] == "invalid_value"
    assert "score" in result.failed[1][1] and "abc" in result.failed[1][1]
    assert result.failed[2][0] == "invalid_value"
    assert "label" in result.failed[2][1] and "1.5" in result.failed[2][1]


def test_spec_maps_scalar_and_array_records_by_position() -> None:
    spec = SideSpec(columns=(("label", pa.int64()), ("score", pa.float64())), prediction="score")
    assert rows(decode([PRETTY_RESPONSE], lines=False, spec=spec)) == [
        {"label": None, "score": 3.5},
        {"label": None, "score": 4.0},
        {"label": None, "score": 5.5},
    ]
    spec_in = SideSpec(columns=(("a", pa.float64()), ("b", pa.float64())))
    result = decode(['{"instances": [[1, 2, 3]]}'], lines=False, side="input", spec=spec_in)
    assert rows(result) == [{"a": 1.0, "b": 2.0}]


def test_spec_in_expand_mode_uses_expanded_names() -> None:
    spec = SideSpec(columns=(("features_13", pa.int64()), ("features_0", pa.float64())))
    result = decode([JSONL_REQUEST], lines=True, side="input", spec=spec, arrays="expand")
    assert rows(result) == [{"features_13": 37, "features_0": 28.0}, {"features_13": 37, "features_0": 43.0}]


# --- failures ------------------------------------------------------------------------------------------------


def test_invalid_json_fails_only_the_bad_bodies() -> None:
    bodies = [MIXED_RESPONSE, "nope", PRETTY_RESPONSE, '{"predictions": [1,', '{"a": 1}\n{"a": 2}', '{"a": NaN}']
    result = decode(bodies, lines=False)
    assert sorted(result.failed) == [1, 3, 4, 5]
    assert all(reason == "invalid_json" for reason, _ in result.failed.values())
    assert result.event.tolist() == [0, 2, 2, 2]
    assert rows(result)[0] == {"score": 0.012620825320482254, "predicted_label": 0, "prediction": None}


def test_invalid_jsonlines_line_fails_its_body_with_the_line_number() -> None:
    result = decode([JSONL_RESPONSE, '{"a": 1}\n{"a": \n', "[1, 2]\n\n", '"\\ud800"'], lines=True)
    assert sorted(result.failed) == [1, 3]
    assert result.failed[1][0] == "invalid_json"
    assert result.failed[1][1].startswith("line 2:")
    assert result.event.tolist() == [0, 0, 2]


def test_empty_payloads() -> None:
    result = decode(["", "  \n ", "[]", '{"predictions": []}', "0.5"], lines=False)
    assert {i: reason for i, (reason, _) in result.failed.items()} == {
        0: "empty_payload",
        1: "empty_payload",
        2: "empty_payload",
        3: "empty_payload",
    }
    assert result.event.tolist() == [4]
    lines = decode(["", "\n\r\n", "1"], lines=True)
    assert sorted(lines.failed) == [0, 1]
    assert lines.event.tolist() == [2]


def test_no_bodies() -> None:
    result = decode([], lines=True)
    assert len(result.event) == 0
    assert result.table.num_rows == 0
    assert result.failed == {}


def test_json_the_reader_cannot_represent_fails_alone() -> None:
    # Valid JSON (the validator accepts big integers) that polars' reader rejects: found by bisection.
    huge = "1" + "0" * 40
    bodies = ['{"a": [1]}', f'{{"a": [{huge}]}}', '{"a": [2]}']
    result = decode(bodies, lines=True)
    assert list(result.failed) == [1]
    assert result.failed[1][0] == "invalid_json"
    assert rows(result) == [{"a": [1.0]}, {"a": [2.0]}]


# --- properties ----------------------------------------------------------------------------------------------

KEYS = ("a", "b", "c")
finite = st.floats(allow_nan=False, allow_infinity=False, width=64)
int64s = st.integers(min_value=-(2**63), max_value=2**63 - 1)
kinds = st.sampled_from(["int", "float", "str"])


def values_of(kind: str) -> st.SearchStrategy[Any]:
    return {"int": int64s, "float": finite, "str": st.text(max_size=8)}[kind]


@st.composite
def batches(draw: st.DrawFn) -> tuple[str, dict[str, str], list[list[Any]]]:
    """A batch of bodies: each a list of records, all dicts of fixed-typed keys or all scalars of one type."""
    if draw(st.booleans()):
        key_kinds = {key: draw(kinds) for key in KEYS}
        record = st.fixed_dictionaries({}, optional={k: values_of(t) for k, t in key_kinds.items()})
        shape = "dict"
    else:
        key_kinds = {"": draw(kinds)}
        record = values_of(key_kinds[""])
        shape = "scalar"
    bodies = draw(st.lists(st.lists(record, max_size=4), min_size=1, max_size=6))
    return shape, key_kinds, bodies


def same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    return bool(a == b)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batch=batches(), as_lines=st.booleans())
def test_records_round_trip(batch: tuple[str, dict[str, str], list[list[Any]]], as_lines: bool) -> None:
    shape, key_kinds, bodies = batch
    if as_lines:
        texts = ["\n".join(orjson.dumps(r).decode() for r in body) for body in bodies]
    else:
        texts = [orjson.dumps({"instances": body}).decode() for body in bodies]
    result = decode(texts, lines=as_lines, side="input")

    # event: one entry per record, by body; bodies without records fail as empty payloads.
    expected_events = [i for i, body in enumerate(bodies) for _ in body]
    assert result.event.tolist() == expected_events
    assert result.failed == {i: result.failed[i] for i, body in enumerate(bodies) if not body}
    assert all(reason == "empty_payload" for reason, _ in result.failed.values())

    records = [r for body in bodies for r in body]
    got = rows(result)
    assert len(got) == len(records)
    if shape == "scalar":
        if records:
            assert [g["f0"] for g in got] == records
        return
    for key, kind in key_kinds.items():
        want = [r.get(key) for r in records]
        if all(v is None for v in want):
            assert key not in result.table.column_names
            continue
        expected_type = {"int": pa.int64(), "float": pa.float64(), "str": pa.string()}[kind]
        assert result.table.schema.field(key).type == expected_type
        assert all(same(g, w) for g, w in zip([g[key] for g in got], want, strict=True))


json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), finite, st.text(max_size=5))
json_values = st.recursive(
    json_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=3),
        st.lists(finite, max_size=3),
        st.dictionaries(st.sampled_from(["a", "b", "x.y", "é"]), children, max_size=3),
    ),
    max_leaves=8,
)
json_records = st.one_of(
    st.dictionaries(st.sampled_from(["a", "b", "c"]), json_values, max_size=3),
    json_values,
)


def columns(result: SideRecords) -> dict[str, tuple[pa.DataType, list[Any]]]:
    return {f.name: (f.type, result.table.column(f.name).to_pylist()) for f in result.table.schema}


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(records=st.lists(json_records, min_size=1, max_size=8), arrays=st.sampled_from(["list", "expand"]))
def test_key_by_key_decode_matches_the_fast_path(records: list[Any], arrays: ArrayMode) -> None:
    # The scanner-based decode (used on type conflicts) must give what one polars read gives when that
    # read succeeds: force it at every object level by making the read fail.
    texts = [json.dumps(r, ensure_ascii=False) for r in records]
    fast = decode(["\n".join(texts)], lines=True, arrays=arrays)
    with mock.patch.object(payload_json, "_read_ndjson", side_effect=pl_error):
        slow = decode(["\n".join(texts)], lines=True, arrays=arrays)
    assert slow.failed == fast.failed
    assert slow.event.tolist() == fast.event.tolist()
    fast_cols, slow_cols = columns(fast), columns(slow)
    assert fast_cols.keys() == slow_cols.keys()
    for name, (fast_type, fast_values) in fast_cols.items():
        slow_type, slow_values = slow_cols[name]
        assert slow_type == fast_type, name
        assert all(same(a, b) for a, b in zip(fast_values, slow_values, strict=True)), name


def pl_error(*_: object) -> None:
    import polars as pl

    raise pl.exceptions.ComputeError("forced")


@settings(max_examples=80, deadline=None)
@given(
    containers=st.lists(
        st.one_of(st.lists(json_values, max_size=4), st.dictionaries(st.text(max_size=4), json_values, max_size=4)),
        min_size=1,
        max_size=5,
    ),
    indent=st.booleans(),
)
def test_scanner_splits_members_like_a_parser(containers: list[Any], indent: bool) -> None:
    import polars as pl

    # Pretty-printed documents reach the scanner with their newlines turned into spaces.
    texts = pl.Series([json.dumps(c, indent=2 if indent else None).replace("\n", " ") for c in containers])
    members = payload_json_scan._members(texts)
    for row, container in enumerate(containers):
        mine = members.filter(pl.col("row") == row)
        parsed = [json.loads(t) for t in mine["text"].to_list()]
        kinds_ = mine["kind"].to_list()
        if isinstance(container, list):
            assert kinds_ == [payload_json_common._ITEM] * len(container)
            assert parsed == container
        else:
            assert kinds_ == [payload_json_common._KEY, payload_json_common._VALUE] * len(container)
            assert dict(zip(parsed[0::2], parsed[1::2], strict=True)) == container


def test_many_bodies_keep_event_order() -> None:
    rng = np.random.default_rng(0)
    counts = rng.integers(1, 4, size=500)
    bodies = ["\n".join(f'{{"i": {i}, "j": {j}}}' for j in range(c)) for i, c in enumerate(counts)]
    result = decode(bodies, lines=True)
    assert result.event.tolist() == np.repeat(np.arange(500), counts).tolist()
    got = result.table.to_pydict()
    assert got["i"] == result.event.tolist()
    assert got["j"] == [j for c in counts for j in range(c)]


@pytest.mark.parametrize("lines", [True, False])
def test_large_string_input(lines: bool) -> None:
    body = JSONL_RESPONSE if lines else MIXED_RESPONSE
    result = decode_json_bodies(
        pa.array([body], type=pa.large_string()), lines=lines, side="output", spec=SideSpec(), arrays="list"
    )
    assert result.table.num_rows == (2 if lines else 1)
