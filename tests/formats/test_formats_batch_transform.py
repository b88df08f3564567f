"""The batch transform wire format (writing side) against the documented and real examples, and the filter subset."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone

import pyarrow as pa
import pytest

from engine.emulate.jsonpath import PathError, parse_path
from engine.formats.batch_transform import (
    append_ids,
    capture_manifest_key,
    inference_time_text,
    join_input,
    json_valid,
    manifest_document,
    new_inference_ids,
    output_name,
    parse_manifest_document,
)
from engine.jobs.batch import read_batch


def _one(records: pa.Array) -> str:
    value = records.to_pylist()[0]
    assert isinstance(value, str)
    return value


def test_real_joined_json_lines_record_byte_for_byte() -> None:
    # The real JSON Lines output with JoinSource=Input and GenerateInferenceId (formats reference 3.3).
    features = '{"features":[29,2,178610,15,10,0,7,4,4,0,0,0,21,37]}'
    output = '{"predicted_label":0,"score":0.047645717859268}'
    joined = join_input(pa.array([features]), pa.array([output]), json_records=True)
    ids = pa.array(["89180035-821a-41d9-87b2-67a22490de94"])
    got = _one(append_ids(joined, ids, "2023-01-21T01:29:04Z", json_records=True))
    assert got == (
        '{"SageMakerInferenceId":"89180035-821a-41d9-87b2-67a22490de94","SageMakerInferenceTime":"2023-01-21T01:29:04Z",'
        '"SageMakerOutput":{"predicted_label":0,"score":0.047645717859268},"features":[29,2,178610,15,10,0,7,4,4,0,0,0,21,37]}'
    )


def test_real_json_document_record_byte_for_byte() -> None:
    # SplitType=None JSON: one ID for the whole document, its instances kept (EX-bias-bt-json's shape).
    doc = '{"instances":[[1,2],[3,4]]}'
    out = '{"predictions":[{"score":0.1,"predicted_label":0},{"score":0.9,"predicted_label":1}]}'
    joined = join_input(pa.array([doc]), pa.array([out]), json_records=True)
    got = _one(
        append_ids(
            joined, pa.array(["94bcc22a-0000-4000-8000-000000000000"]), "2024-01-19T19:25:34Z", json_records=True
        )
    )
    assert got == (
        '{"SageMakerInferenceId":"94bcc22a-0000-4000-8000-000000000000","SageMakerInferenceTime":"2024-01-19T19:25:34Z",'
        '"SageMakerOutput":{"predictions":[{"score":0.1,"predicted_label":0},{"score":0.9,"predicted_label":1}]},'
        '"instances":[[1,2],[3,4]]}'
    )


def test_csv_ids_and_join_as_documented() -> None:
    # Docs: "0, 1f1d57b1-...,2022-08-30T00:49:15Z" (we write no space after the first comma; see the README).
    got = _one(
        append_ids(
            pa.array(["0"]),
            pa.array(["1f1d57b1-2e6f-488c-8c30-db4e6d757861"]),
            "2022-08-30T00:49:15Z",
            json_records=False,
        )
    )
    assert got == "0,1f1d57b1-2e6f-488c-8c30-db4e6d757861,2022-08-30T00:49:15Z"
    # Docs: [1,2,3] joined with [1] -> [1,2,3,1].
    assert _one(join_input(pa.array(["1,2,3"]), pa.array(["1"]), json_records=False)) == "1,2,3,1"


def test_json_join_and_ids_edge_cases() -> None:
    got = join_input(
        pa.array(["[1,2,3]", "{}", ' {  "a": 1}', '{"SageMakerOutput":5,"b":2}']),
        pa.array(["1", "2", "3", "4"]),
        json_records=True,
    )
    assert got.to_pylist() == [
        '{"SageMakerInput":[1,2,3],"SageMakerOutput":1}',
        '{"SageMakerOutput":2}',
        ' {  "SageMakerOutput":3,"a": 1}',
        '{"SageMakerOutput":4,"b":2}',  # the reserved key is replaced, not doubled
    ]
    ids = pa.array(["x", "y", "z"])
    got = append_ids(pa.array(['{"score": 0.5}', "[0.5]", "{}"]), ids, "T", json_records=True)
    assert got.to_pylist() == [
        '{"SageMakerInferenceId":"x","SageMakerInferenceTime":"T","score": 0.5}',
        '{"SageMakerInferenceId":"y","SageMakerInferenceTime":"T","SageMakerOutput":[0.5]}',
        '{"SageMakerInferenceId":"z","SageMakerInferenceTime":"T","SageMakerOutput":{}}',
    ]
    assert json_valid(got).all()
    assert json_valid(pa.array(["{", "ERROR"])).tolist() == [False, False]


def test_manifests_and_keys_as_real_ones() -> None:
    assert manifest_document("s3://bucket/transform-output/", ["test-dataset.json.out"]) == (
        b'[{"prefix": "s3://bucket/transform-output/"}, "test-dataset.json.out"]'
    )
    single = manifest_document("s3://bucket/in/test-dataset.jsonl", [""])
    assert single == b'[{"prefix": "s3://bucket/in/test-dataset.jsonl"}, ""]'
    assert parse_manifest_document(b"\xef\xbb\xbf" + single) == ("s3://bucket/in/test-dataset.jsonl", [""])
    start = datetime(2024, 1, 19, 19, 24, 7, tzinfo=timezone.utc)
    key = capture_manifest_key("output", start, "5ef12a7a-2c09-4d6f-817b-84823cee935f")
    assert key == "output/2024/01/19/19/5ef12a7a-2c09-4d6f-817b-84823cee935f.json"
    assert inference_time_text(datetime(2022, 8, 30, 0, 49, 15, 999000, tzinfo=timezone.utc)) == "2022-08-30T00:49:15Z"
    assert output_name("dir/input1.csv") == "dir/input1.csv.out"
    for bad, why in (
        (b"{}", "not a JSON array"),
        (b"[1]", "prefix"),
        (b'[{"prefix": "x"}, 3]', "entry 2"),
        (b"[", "not JSON"),
    ):
        with pytest.raises(ValueError, match=why):
            parse_manifest_document(bad)


def test_inference_ids_are_distinct_uuid4() -> None:
    ids = new_inference_ids(10_000).to_pylist()
    assert len(set(ids)) == 10_000
    assert {uuid.UUID(i).version for i in ids} == {4}
    assert all(str(uuid.UUID(i)) == i for i in ids[:100])


def test_written_records_read_back_exactly(tmp_path) -> None:
    """Writer -> files and manifests -> the engine's batch reader -> the records written."""
    (tmp_path / "in").mkdir()
    (tmp_path / "out").mkdir()
    inputs = ['{"features":[1,2]}', "[3, 4]", '{ "features": [5.0e0, 6] }']
    outputs = ['{"score": 0.5}', "0.25", "[0.75]"]
    joined = join_input(pa.array(inputs), pa.array(outputs), json_records=True)
    ids = new_inference_ids(3)
    lines = append_ids(joined, ids, "2026-11-01T13:05:00Z", json_records=True).to_pylist()
    (tmp_path / "in" / "a.jsonl").write_text("".join(i + "\n" for i in inputs))
    (tmp_path / "out" / "a.jsonl.out").write_text("".join(line + "\n" for line in lines))
    start = datetime(2026, 11, 1, 13, 5, tzinfo=timezone.utc)
    for side, doc in (
        ("input", manifest_document(f"file://{tmp_path}/in/", ["a.jsonl"])),
        ("output", manifest_document(f"file://{tmp_path}/out/", ["a.jsonl.out"])),
    ):
        path = tmp_path / "cap" / capture_manifest_key(side, start, str(uuid.uuid4()))
        path.parent.mkdir(parents=True)
        path.write_bytes(doc)
    table = read_batch(str(tmp_path / "cap")).read_all()
    assert table["input_data"].to_pylist() == inputs
    assert table["inference_id"].to_pylist() == ids.to_pylist()
    assert {t.isoformat() for t in table["inference_time"].to_pylist()} == {"2026-11-01T13:05:00+00:00"}
    assert table["output_data"].to_pylist() == [
        '{"SageMakerOutput":{"score": 0.5},"features":[1,2]}',
        '{"SageMakerInput":[3, 4],"SageMakerOutput":0.25}',
        '{ "SageMakerOutput":[0.75],"features": [5.0e0, 6] }',
    ]


def test_filter_subset_as_documented() -> None:
    row = pa.array(["a,b,c,d,e,f,g"])
    assert _one(parse_path("$[1:4]").apply_csv(row)) == "b,c,d,e"  # "the second through fifth columns"
    assert _one(parse_path("$[:5]").apply_csv(row)) == "a,b,c,d,e,f"  # "first ... through the sixth column"
    assert _one(parse_path("$[1:4]", slice_end="exclusive").apply_csv(row)) == "b,c,d"
    assert _one(parse_path("$[0,5:]").apply_csv(row)) == "a,f,g"
    assert _one(parse_path("$[1:]").apply_csv(row)) == "b,c,d,e,f,g"
    assert _one(parse_path("$[-1]").apply_csv(row)) == "g"
    assert _one(parse_path("$[-2:]").apply_csv(pa.array(['x,"y,1",z']))) == '"y,1",z'  # RFC 4180 quoting kept
    assert parse_path("$[0,2]").apply_csv(pa.array(["1,2,3", "4,5,6,7"])).to_pylist() == ["1,3", "4,6"]
    record = pa.array(['{"id":7,"features":[1,2],"SageMakerOutput":{"score":0.5}}'])
    assert _one(parse_path("$.features").apply_json(record)) == "[1,2]"
    assert (
        _one(parse_path("$['id','SageMakerOutput']").apply_json(record)) == '{"id":7,"SageMakerOutput":{"score":0.5}}'
    )
    assert _one(parse_path("$.SageMakerOutput.score").apply_json(record)) == "0.5"
    assert _one(parse_path("$.*").apply_json(pa.array(['{"a":1,"b":[2]}']))) == "[1,[2]]"
    assert parse_path("$").identity
    for bad in ("$.field1.['child1','child2.grandchild']", "features", "$[a]", "$['a'", "$.a[0][", "$" + ".a" * 32):
        with pytest.raises(PathError):
            parse_path(bad)
    with pytest.raises(PathError, match="out of range"):
        parse_path("$[9]").apply_csv(row)
    with pytest.raises(PathError, match="no member"):
        parse_path("$.nope").apply_json(record)
