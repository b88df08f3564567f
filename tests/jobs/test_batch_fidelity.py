"""Batch capture kept exact on real files and under corruption (issue "Exact on real files and under corruption")."""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hypothesis.strategies as st
import polars as pl
import pyarrow as pa
import pyarrow.dataset as ds
import pytest
from hypothesis import given, settings

from engine import MergeOptions, run_merge
from tests.conftest import QUOTED_CSV
from tests.jobs.test_batch import HOUR, ID, Tree

T_TEXT = "2022-08-30T00:49:15Z"


@pytest.fixture
def tree(tmp_path: Path) -> Tree:
    return Tree(tmp_path)


@pytest.mark.parametrize("name", ["m.json", "m.jsonl"])
def test_manifest_with_utf8_bom_is_read(tree: Tree, name: str) -> None:
    # Item 18: a manifest written by an editor or a Windows tool may start with a UTF-8 BOM.
    tree.file(tree.inputs, "a.csv", "1,2\n3,4\n")
    tree.file(tree.outputs, "a.csv.out", f"0,{ID},{T_TEXT}\n1,{ID},{T_TEXT}\n")
    bom = b"\xef\xbb\xbf"
    tree.file(
        tree.capture / "input" / HOUR, "in-" + name, bom + json.dumps([{"prefix": f"{tree.inputs}/"}, "a.csv"]).encode()
    )
    tree.file(
        tree.capture / "output" / HOUR, name, bom + json.dumps([{"prefix": f"{tree.outputs}/"}, "a.csv.out"]).encode()
    )
    report, rows, rejects = tree.run()
    assert rejects.height == 0, rejects.to_dicts()
    assert rows.select("line", "input_data", "output_data").rows() == [(1, "1,2", "0"), (2, "3,4", "1")]
    assert rows["manifest_file"].to_list() == [f"file://{tree.capture}/output/{HOUR}/{name}"] * 2
    assert report.records == 2 and report.events_written == 2


def _gt_line(key: str, data: str = "1", encoding: str = "CSV") -> str:
    return json.dumps({"groundTruthData": {"data": data, "encoding": encoding}, "eventMetadata": {"eventId": key}})


def test_sagemaker_format_keeps_custom_attributes(tmp_path: Path, run_cli: Callable[..., Any]) -> None:
    # Item 20: eventMetadata.customAttributes of the capture is kept in SageMaker's merged record (when set).
    with_attrs = json.loads(QUOTED_CSV)
    with_attrs["eventMetadata"]["customAttributes"] = 'trace=abc; segment="gold"'
    without = json.loads(QUOTED_CSV)
    without["eventMetadata"].update(eventId="11111111-1111-4111-8111-111111111111", inferenceId="60")
    capture = tmp_path / "capture" / "ep" / "AllTraffic" / "2021" / "05" / "18" / "00" / "28-04-146-x.jsonl"
    capture.parent.mkdir(parents=True)
    capture.write_text(json.dumps(with_attrs) + "\n" + json.dumps(without) + "\n")
    truth = tmp_path / "gt" / "2021" / "05" / "18" / "01" / "labels.jsonl"
    truth.parent.mkdir(parents=True)
    truth.write_text(_gt_line("59") + "\n" + _gt_line("60", "0") + "\n")
    dest = tmp_path / "out"
    proc = run_cli(
        "merge",
        "--captures",
        str(tmp_path / "capture"),
        "--ground-truth",
        str(tmp_path / "gt"),
        str(dest),
        "--format",
        "sagemaker",
        "-q",
    )
    assert proc.returncode == 0, proc.stderr
    (path,) = (dest / "_sagemaker" / "merge").rglob("*.jsonl")
    got = {r["eventMetadata"]["inferenceId"]: r for r in map(json.loads, path.read_text().splitlines())}
    assert got["59"]["eventMetadata"] == {
        "eventId": "09e668ab-172a-4ef1-9dc3-696d52879010",
        "inferenceId": "59",
        "inferenceTime": "2021-05-18T00:29:04Z",
        "customAttributes": 'trace=abc; segment="gold"',
    }
    assert "customAttributes" not in got["60"]["eventMetadata"]
    assert got["59"]["captureData"] == with_attrs["captureData"]


# A batch transform of one JSON document (SplitType=None, JoinSource=Input) as in the Clarify batch JSON example
# (formats reference 3.3): one SageMakerInferenceId for all the instances, manifests pointing at s3:// buckets.
DOC_ID = "94bcc22a-4b5e-4bb5-8a6e-1f0f3c2a7d10"
DOC_TIME = "2024-01-19T19:25:34Z"
DOC_HOUR = "2024/01/19/19"
FEATURES = [[28, 2, 133937, 9], [43, 2, 72338, 12], [29, 2, 178610, 15], [42, 2, 222756, 9], [39, 4, 77516, 13]]
# Scores as SageMaker wrote them, among them one that polars' JSON path re-serializes one digit off.
SCORE_TEXT = ["0.9899773597717285", "0.504138827323913", "0.047645717859268", "0.90517783164978", "0.1"]
LABELS = [1, 1, 0, 1, 0]


def _doc_tree(root: Path, *, s3: bool = True) -> tuple[Path, Path, str]:
    """The capture (manifests saying s3://, else the local folders), the mounted transform folders, the .out text."""
    capture, mounted = root / "capture", root / "mounted"
    bucket = "s3://bucket" if s3 else str(mounted)
    doc_in = json.dumps({"instances": [{"features": f} for f in FEATURES]})
    predictions = ",".join(
        f'{{"predicted_label":{lab},"score":{s}}}' for lab, s in zip(LABELS, SCORE_TEXT, strict=True)
    )
    instances = ",".join('{"features":' + json.dumps(f).replace(" ", "") + "}" for f in FEATURES)
    doc_out = (
        f'{{"SageMakerInferenceId":"{DOC_ID}","SageMakerInferenceTime":"{DOC_TIME}",'
        f'"SageMakerOutput":{{"predictions":[{predictions}]}},"instances":[{instances}]}}'
    )
    for path, text in (
        (mounted / "transform-input" / "test-dataset.json", doc_in),
        (mounted / "transform-output" / "test-dataset.json.out", doc_out),
        (
            capture / "input" / DOC_HOUR / "1b6c0f6e-in.json",
            json.dumps([{"prefix": f"{bucket}/transform-input/"}, "test-dataset.json"]),
        ),
        (
            capture / "output" / DOC_HOUR / "5ef12a7a-2c09-4d6f-817b-84823cee935f.json",
            json.dumps([{"prefix": f"{bucket}/transform-output/"}, "test-dataset.json.out"]),
        ),
        (
            root / "gt" / DOC_HOUR / "labels.jsonl",
            _gt_line(DOC_ID, json.dumps({"instances": [{"label": v} for v in LABELS]}), "JSON"),
        ),
    ):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")
    return capture, mounted, doc_out


def _prefix_args(mounted: Path) -> list[str]:
    return [
        "--prefix-map",
        f"s3://bucket/transform-input/={mounted}/transform-input/",
        "--prefix-map",
        f"s3://bucket/transform-output/={mounted}/transform-output/",
    ]


def _merged(dest: Path) -> pl.DataFrame:
    data = ds.dataset(dest, partitioning="hive", format="parquet", ignore_prefixes=["_", ".", "merge"])
    return pl.from_arrow(data.to_table()).sort("record_index")  # type: ignore[return-value]


def test_merge_batch_reaches_prefix_map_decode_and_columns(tmp_path: Path, run_cli: Callable[..., Any]) -> None:
    # Item 16: real batch capture (manifests saying s3://, objects mounted locally) merged directly, raw and decoded.
    capture, mounted, doc_out = _doc_tree(tmp_path)
    base = ["merge", "--batch", str(capture), "--ground-truth", str(tmp_path / "gt")]
    proc = run_cli(*base, str(tmp_path / "raw"), *_prefix_args(mounted), "-q")
    assert proc.returncode == 0, proc.stderr
    raw = _merged(tmp_path / "raw")
    assert raw.height == 1
    row = raw.row(0, named=True)
    assert row["inference_id"] == DOC_ID
    assert row["output_file"] == f"file://{mounted}/transform-output/test-dataset.json.out"
    assert row["input_file"] == f"file://{mounted}/transform-input/test-dataset.json"
    assert row["manifest_file"].endswith(f"/output/{DOC_HOUR}/5ef12a7a-2c09-4d6f-817b-84823cee935f.json")
    # The output record byte for byte, without the two appended keys.
    cut = f'"SageMakerInferenceId":"{DOC_ID}","SageMakerInferenceTime":"{DOC_TIME}",'
    assert row["output_data"] == doc_out.replace(cut, "")
    report = json.loads((tmp_path / "raw" / "_SUCCESS").read_text())
    assert report["counts"]["matched"] == 1 and report["balanced"]

    proc = run_cli(*base, str(tmp_path / "dec"), *_prefix_args(mounted), "--decode", "-q")
    assert proc.returncode == 0, proc.stderr
    dec = _merged(tmp_path / "dec")
    assert dec["record_index"].to_list() == [0, 1, 2, 3, 4]
    assert dec["inference_id"].to_list() == [DOC_ID] * 5
    assert dec["label"].to_list() == [str(v) for v in LABELS]  # each instance its own label
    assert dec["predicted_label"].to_list() == LABELS
    assert dec["features"].to_list() == FEATURES
    report = json.loads((tmp_path / "dec" / "_SUCCESS").read_text())
    assert report["counts"]["matched"] == 5 and report["counts"]["predictions"] == 5 and report["balanced"]

    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"output": {"columns": [{"name": "score", "type": "float64"}]}}))
    proc = run_cli(*base, str(tmp_path / "spec"), *_prefix_args(mounted), "--columns", str(spec), "-q")
    assert proc.returncode == 0, proc.stderr
    cols = _merged(tmp_path / "spec")
    assert cols.height == 5 and "predicted_label" not in cols.columns
    assert cols.schema["score"] == pl.Float64

    # Without the mapping the s3:// entries are refused by name, not read as local paths.
    proc = run_cli(*base, str(tmp_path / "nomap"), "-q")
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    proc = run_cli(
        "merge",
        "--predictions",
        str(tmp_path / "raw"),
        "--ground-truth",
        str(tmp_path / "gt"),
        str(tmp_path / "x"),
        *_prefix_args(mounted),
    )
    assert proc.returncode == 2 and "--batch" in proc.stderr and "Traceback" not in proc.stderr


def test_undecoded_batch_document_of_many_instances_gets_a_null_label(tmp_path: Path) -> None:
    # Item 7: one raw row stands for five instances; a label of five values names no single one of them.
    capture, _, _ = _doc_tree(tmp_path, s3=False)
    report = run_merge(batch=str(capture), ground_truth=str(tmp_path / "gt"), dest=str(tmp_path / "out"))
    rows = _merged(tmp_path / "out")
    assert rows.height == 1 and report.counts["matched"] == 1
    row = rows.row(0, named=True)
    assert row["label"] is None and row["label_value"] is None
    assert json.loads(row["label_data"]) == {"instances": [{"label": v} for v in LABELS]}
    assert row["label_file"] == f"file://{tmp_path}/gt/{DOC_HOUR}/labels.jsonl" and row["label_line"] == 1


def test_merge_batch_counts_every_record_rows_rejects_and_outside_the_window(tree: Tree) -> None:
    # Architecture review: records = rows + rejects + outside must hold for the batch source of a merge.
    ids = [f"00000000-0000-4000-8000-00000000000{k}" for k in range(5)]
    out = (
        f"0.1,{ids[0]},2022-08-30T00:10:00Z\n"
        f"0.2,{ids[1]},2022-08-30T00:50:00Z\n"  # after the window
        "0.3\n"  # no appended ID: a reject
        f"0.4,{ids[3]},2022-08-30T00:29:59Z\n"
        f"0.5,{ids[4]},2022-08-30T00:45:00Z\n"  # after the window
    )
    tree.job({"a.csv": ("a\nb\nc\nd\ne\n", out)})
    gt = tree.root / "gt" / HOUR / "l.jsonl"
    gt.parent.mkdir(parents=True)
    gt.write_text("".join(_gt_line(i) + "\n" for i in ids))
    dest = tree.root / "merged"
    options = MergeOptions(start="2022-08-30T00:00", end="2022-08-30T00:30", how="left", max_reject_ratio=1.0)
    report = run_merge(batch=str(tree.capture), ground_truth=str(tree.root / "gt"), dest=str(dest), options=options)
    rows = _merged(dest).sort("line")
    rejects = pl.from_arrow(ds.dataset(dest / "_rejects", partitioning="hive", format="parquet").to_table())
    assert isinstance(rejects, pl.DataFrame)
    assert rows.select("line", "inference_id", "output_data", "input_data", "label").rows() == [
        (1, ids[0], "0.1", "a", "1"),
        (4, ids[3], "0.4", "d", "1"),
    ]
    assert rejects.select("source_file", "source_line", "reason").rows() == [
        (f"file://{tree.outputs}/a.csv.out", 3, "missing_inference_id")
    ]
    batch_records = 5
    assert report.out_of_window == 2
    # From the files themselves: every .out line is a row, a reject or outside the window; the labels are counted
    # as records of the merge too.
    assert rows.height + rejects.height + report.out_of_window == batch_records
    assert report.records == batch_records + len(ids)
    assert report.records == report.events_written + report.rejected + report.out_of_window
    assert report.balanced


# -- item 5: gzip inputs corrupt or truncated ------------------------------------------------------------------


def _uuid(k: int) -> str:
    return f"00000000-0000-4000-8000-{k:012d}"


def _damage(data: bytes, how: str) -> bytes:
    if how == "flip":  # one bit at 3/4 of the compressed stream, as in the issue
        at = len(data) * 3 // 4
        return data[:at] + bytes([data[at] ^ 0x10]) + data[at + 1 :]
    return data[: len(data) * 3 // 5]  # truncated (an interrupted upload)


@pytest.mark.parametrize("how", ["flip", "truncate"])
def test_gzip_input_damaged_half_way_rejects_every_output_line_by_its_own_number(tree: Tree, how: str) -> None:
    n = 100_000
    inp = "".join(f"{k},{k * 7 % 1000}\n" for k in range(n))
    out_lines = [f"{k % 2},{_uuid(k)},{T_TEXT}" for k in range(n)]
    good_in = "".join(f"g{k},1\n" for k in range(300))
    good_out = [f"0.{k},{_uuid(10**6 + k)},{T_TEXT}" for k in range(300)]
    tree.job(
        {"bad.csv.gz": (inp, "\n".join(out_lines) + "\n"), "good.csv.gz": (good_in, "\n".join(good_out) + "\n")},
        gz=frozenset({"bad.csv.gz", "good.csv.gz"}),
    )
    bad = tree.inputs / "bad.csv.gz"
    bad.write_bytes(_damage(bad.read_bytes(), how))
    report, rows, rejects = tree.run(unit_bytes=64 * 1024)
    bad_out = f"file://{tree.outputs}/bad.csv.gz.out"
    # No row from the damaged file: none may carry an input_data that is not its input line.
    assert rows.filter(pl.col("output_file") == bad_out).height == 0
    # Every one of its output lines is a reject, named by its own line, with its own bytes.
    assert rejects.height == n
    assert set(rejects["reason"].to_list()) == {"corrupt_gzip"}
    assert set(rejects["source_file"].to_list()) == {bad_out}
    assert rejects["source_line"].to_list() == list(range(1, n + 1))
    assert [r.decode() for r in rejects["raw"].to_list()] == out_lines
    assert f"file://{tree.inputs}/bad.csv.gz" in rejects["detail"][0]
    # The intact file next to it: every row exactly its lines.
    assert rows.select("line", "input_data", "output_data", "inference_id").rows() == [
        (k + 1, f"g{k},1", f"0.{k}", _uuid(10**6 + k)) for k in range(300)
    ]
    assert report.records == rows.height + rejects.height == n + 300
    assert report.counts["corrupts"] == 1 and report.notes["corrupts"] == [f"file://{tree.inputs}/bad.csv.gz"]


def test_truncated_gzip_input_without_output_manifest_is_reported_and_its_cut_line_is_no_row(tree: Tree) -> None:
    lines = [f"record-{k},{k * 3},{'x' * (k % 17)}" for k in range(5000)]
    tree.file(tree.inputs, "cut.csv.gz", "\n".join(lines) + "\n", gz=True)
    tree.file(tree.inputs, "whole.csv.gz", "a,1\nb,2\n", gz=True)
    cut = tree.inputs / "cut.csv.gz"
    cut.write_bytes(_damage(cut.read_bytes(), "truncate"))
    tree.manifest("input", [{"prefix": f"{tree.inputs}/"}, "cut.csv.gz", "whole.csv.gz"])
    report, rows, rejects = tree.run()
    assert rows.select("input_file", "line", "input_data").rows() == [
        (f"file://{tree.inputs}/whole.csv.gz", 1, "a,1"),
        (f"file://{tree.inputs}/whole.csv.gz", 2, "b,2"),
    ]
    m = rejects.height
    assert 0 < m < len(lines)
    assert set(rejects["reason"].to_list()) == {"corrupt_gzip"}
    assert set(rejects["source_file"].to_list()) == {f"file://{tree.inputs}/cut.csv.gz"}
    assert rejects["source_line"].to_list() == list(range(1, m + 1))
    raw = [r.decode() for r in rejects["raw"].to_list()]
    assert raw[:-1] == lines[: m - 1]
    assert lines[m - 1].startswith(raw[-1])  # the cut last line: a reject, never a row
    assert report.records == m + 2 and report.counts["corrupts"] == 1


def test_oversized_one_record_input_is_line_too_long_not_corrupt_gzip(tree: Tree) -> None:
    doc_out = f'{{"SageMakerInferenceId":"{ID}","SageMakerInferenceTime":"{T_TEXT}","predictions":[0.5]}}'
    doc_in = json.dumps({"instances": [{"features": list(range(2000))}]})
    tree.job({"big.json": (doc_in, doc_out)})
    report, rows, rejects = tree.run(max_line_bytes=4096)
    assert rows.height == 0
    assert rejects.select("source_file", "source_line", "reason").rows() == [
        (f"file://{tree.outputs}/big.json.out", 1, "line_too_long")
    ]
    assert rejects["raw"][0].decode() == doc_out and report.records == 1


def test_a_large_gzip_input_is_verified_by_a_first_read_then_streamed(tree: Tree) -> None:
    """Verifying holds nothing: a large gzip input far beyond the block is read twice, used when sound."""
    inp = "".join(f"{k},{k}\n" for k in range(5000))
    out = [f"{k},{_uuid(k)},{T_TEXT}" for k in range(5000)]
    tree.job({"huge.csv.gz": (inp, "\n".join(out) + "\n")}, gz=frozenset({"huge.csv.gz"}))
    report, rows, rejects = tree.run(unit_bytes=4096)
    assert rejects.height == 0 and report.records == 5000
    assert rows.select("line", "input_data").rows() == [(k + 1, f"{k},{k}") for k in range(5000)]


def test_a_large_gzip_input_with_bytes_after_its_trailer_rejects_its_file(tree: Tree) -> None:
    inp = "".join(f"{k},{k}\n" for k in range(3000))
    out = [f"{k},{_uuid(k)},{T_TEXT}" for k in range(3000)]
    tree.job({"tail.csv": (None, "\n".join(out) + "\n")})
    tree.file(tree.inputs, "tail.csv", gzip.compress(inp.encode()) + b"3000,3000\n")
    report, rows, rejects = tree.run(unit_bytes=4096)
    assert rows.height == 0 and report.records == 3000
    assert set(rejects["reason"].to_list()) == {"corrupt_gzip"}
    assert rejects["source_line"].to_list() == list(range(1, 3001))


def test_sound_gzip_inputs_concatenated_members_and_tiny_blocks_pair_every_line(tree: Tree) -> None:
    first = "".join(f"a{k}\n" for k in range(700))
    second = "".join(f"b{k}\n" for k in range(500))
    out = [f"{k},{_uuid(k)},{T_TEXT}" for k in range(1200)]
    tree.job({"m.csv.gz": (None, "\n".join(out) + "\n")})
    tree.file(tree.inputs, "m.csv.gz", gzip.compress(first.encode()) + gzip.compress(second.encode()))
    _, rows, rejects = tree.run(unit_bytes=97)
    assert rejects.height == 0
    want = [(k + 1, (first + second).splitlines()[k], str(k), _uuid(k)) for k in range(1200)]
    assert rows.select("line", "input_data", "output_data", "inference_id").rows() == want


# -- items 6 and 21: joined JSON outputs decoded from their own text -----------------------------------------


def _joined_jsonl(k: int, score: str) -> tuple[str, str]:
    """An input line and its joined .out line, in the real layout (IDs first, then SageMakerOutput, then input)."""
    features = [29 + k % 7, 2, 178610 + k, 15, 10, 0, 7, 4, 4, 0, 0, 0, 21, 37]
    inp = '{"features":' + json.dumps(features).replace(" ", "") + "}"
    out = (
        f'{{"SageMakerInferenceId":"{_uuid(k)}","SageMakerInferenceTime":"2023-01-21T01:29:04Z",'
        f'"SageMakerOutput":{{"predicted_label":{k % 2},"score":{score}}},' + inp[1:]
    )
    return inp, out


def _scores(n: int) -> list[str]:
    import random

    rng = random.Random(11)
    texts = [repr(rng.random()) for _ in range(n)]
    return ["0.9899773597717285", "0.047645717859268", "0.989977359771728", *texts[3:]]


def test_decode_keeps_joined_json_numbers_exactly_as_the_out_file_says(
    tmp_path: Path, run_cli: Callable[..., Any]
) -> None:
    # Item 6: 334 scores of a real job's shape; a JSON path re-serialized some of them one digit off.
    tree = Tree(tmp_path)
    scores = _scores(334)
    pairs = [_joined_jsonl(k, s) for k, s in enumerate(scores)]
    tree.job(
        {"d.jsonl": ("".join(i + "\n" for i, _ in pairs), "".join(o + "\n" for _, o in pairs))}, hour="2023/01/21/01"
    )
    raw, dec = tmp_path / "raw", tmp_path / "dec"
    for dest, extra in ((raw, []), (dec, ["--decode"])):
        proc = run_cli("batch", str(tree.capture), str(dest), "-q", *extra)
        assert proc.returncode == 0, proc.stderr
    raw_rows = pl.read_parquet(f"{raw}/**/*.parquet", hive_partitioning=True).sort("line")
    cut = len(
        '"SageMakerInferenceId":"00000000-0000-4000-8000-000000000000","SageMakerInferenceTime":"2023-01-21T01:29:04Z",'
    )
    assert raw_rows["output_data"].to_list() == ["{" + o[1 + cut :] for _, o in pairs]  # byte for byte
    rows = pl.read_parquet(f"{dec}/**/*.parquet", hive_partitioning=True).sort("line")
    assert rows.height == 334
    assert rows["score"].to_list() == [float(s) for s in scores]  # the float the .out text says, exactly
    assert rows["line"].to_list() == list(range(1, 335))
    assert rows["inference_id"].to_list() == [_uuid(k) for k in range(334)]
    assert rows["predicted_label"].to_list() == [k % 2 for k in range(334)]
    assert rows["features"].to_list() == [json.loads(i)["features"] for i, _ in pairs]
    # DuckDB reads the same exact doubles.
    import duckdb

    got = duckdb.sql(f"select score from read_parquet('{dec}/**/*.parquet') order by line").fetchall()
    assert [g[0] for g in got] == [float(s) for s in scores]


def test_decode_document_of_many_instances_keeps_every_score_exact(tree: Tree) -> None:
    capture, _, _ = _doc_tree(tree.root, s3=False)
    dest = tree.root / "out"
    from engine.jobs.batch import BatchOptions, run_batch

    report = run_batch(str(capture), str(dest), options=BatchOptions(decode=True))
    rows = pl.read_parquet(f"{dest}/**/*.parquet", hive_partitioning=True).sort("record_index")
    assert rows["score"].to_list() == [float(s) for s in SCORE_TEXT]
    assert rows["features"].to_list() == FEATURES and report.balanced


def test_output_manifest_only_joined_json_decodes_features_from_the_output(tree: Tree) -> None:
    # Item 21: JoinSource=Input and only the output captured: the features are in each .out line.
    scores = _scores(40)
    pairs = [_joined_jsonl(k, s) for k, s in enumerate(scores)]
    tree.file(tree.outputs, "d.jsonl.out", "".join(o + "\n" for _, o in pairs))
    tree.file(
        tree.outputs,
        "w.json.out",
        f'{{"SageMakerInferenceId":"{ID}","SageMakerInferenceTime":"{T_TEXT}",'
        '"SageMakerInput":{"features":[1,2,3]},"SageMakerOutput":{"predicted_label":1,"score":0.25}}\n'
        f'{{"SageMakerInferenceId":"{ID[:-1]}0","SageMakerInferenceTime":"{T_TEXT}",'
        '"SageMakerInput":{"features":[4,5,6]},"SageMakerOutput":{"predicted_label":0,"score":0.75}}\n',
    )
    tree.manifest("output", [{"prefix": f"{tree.outputs}/"}, "d.jsonl.out", "w.json.out"])
    _, raw, rejects = tree.run()
    assert rejects.height == 0 and raw["input_data"].null_count() == raw.height  # nothing invented in the raw table
    _, rows, rejects = tree.run(decode=True)
    assert rejects.height == 0
    d = rows.filter(pl.col("output_file").str.ends_with("/d.jsonl.out")).sort("line")
    assert d["features"].to_list() == [json.loads(i)["features"] for i, _ in pairs]
    assert d["score"].to_list() == [float(s) for s in scores]
    assert d["line"].to_list() == list(range(1, 41))
    w = rows.filter(pl.col("output_file").str.ends_with("/w.json.out")).sort("line")
    assert w.select("line", "features", "score", "inference_id").rows() == [
        (1, [1, 2, 3], 0.25, ID),
        (2, [4, 5, 6], 0.75, ID[:-1] + "0"),
    ]
    assert "SageMakerOutput.score" not in rows.columns and "SageMakerInput.features" not in rows.columns


_json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**60), 2**60)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(alphabet='a"\\}{][,: é\n', max_size=6),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(alphabet='ab"\\:,{', max_size=4), inner, max_size=3)
    ),
    max_leaves=8,
)


@settings(max_examples=200, deadline=None)
@given(
    before=st.dictionaries(st.sampled_from(["a", 'x"y', "SageMakerOutpu", "b\\"]), _json_values, max_size=3),
    value=_json_values,
    after=st.dictionaries(st.sampled_from(["c", "SageMakerOutputs", "d}"]), _json_values, max_size=3),
    present=st.booleans(),
    spaced=st.booleans(),
)
def test_member_spans_agree_with_a_json_parser(
    before: dict[str, Any], value: Any, after: dict[str, Any], present: bool, spaced: bool
) -> None:
    from engine.kernels.joined import _member_spans, _rebuild

    obj = {**before, **({"SageMakerOutput": value} if present else {}), **after}
    text = json.dumps(obj, ensure_ascii=False) if spaced else json.dumps(obj, separators=(",", ":"), ensure_ascii=False)
    texts = pa.array(["{}", text, '{"SageMakerOutput":1}'])
    vs, ve, cs, ce = _member_spans(texts, "SageMakerOutput")
    got = _rebuild(texts, True, vs, ve).to_pylist()
    cut = _rebuild(texts, False, cs, ce).to_pylist()
    assert got[0] is None and got[2] == "1" and cut[2] == "{}" and cut[0] == "{}"
    if present:
        assert got[1] is not None and text.encode().find(got[1].encode()) >= 0  # a slice of the text itself
        assert json.loads(got[1]) == value
        assert json.loads(cut[1]) == {k: v for k, v in obj.items() if k != "SageMakerOutput"}
    else:
        assert got[1] is None and cut[1] == text


@pytest.mark.parametrize("seed", range(5))
def test_random_gzip_damage_never_gives_a_wrong_row(tmp_path: Path, seed: int) -> None:
    # Seeded: flips, truncations, cut-and-spliced bytes on gzip inputs among intact files. Every .out line is a row
    # or a reject; a damaged file gives either only corrupt_gzip rejects (one per line) or, when the damage did not
    # touch the data (a header byte such as the mtime), exactly its rows. An intact file's rows are always exact.
    import random

    rng = random.Random(seed)
    tree = Tree(tmp_path)
    files: dict[str, tuple[str | None, str | None]] = {}
    want: dict[str, list[tuple[int, str, str, str]]] = {}
    for f in range(4):
        n = rng.randint(1, 1500)
        inp = [f"f{f}-{k},{rng.random()!r}" for k in range(n)]
        out = [f"{k % 3},{_uuid(f * 10**5 + k)},{T_TEXT}" for k in range(n)]
        files[f"f{f}.csv.gz"] = ("\n".join(inp) + "\n", "\n".join(out) + "\n")
        want[f"f{f}.csv.gz"] = [(k + 1, inp[k], str(k % 3), _uuid(f * 10**5 + k)) for k in range(n)]
    tree.job(files, gz=frozenset(files))
    damaged = set(rng.sample(sorted(files), 2))
    for name in damaged:
        path = tree.inputs / name
        data = bytearray(path.read_bytes())
        kind = rng.choice(["flip", "truncate", "splice"])
        at = rng.randrange(len(data))
        if kind == "flip":
            data[at] ^= 1 << rng.randrange(8)
        elif kind == "truncate":
            del data[at:]
        else:
            data[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 40)))
        path.write_bytes(bytes(data))
    report, rows, rejects = tree.run(unit_bytes=rng.choice([256, 4096, 1 << 20]))
    total = sum(len(v) for v in want.values())
    assert rows.height + rejects.height == report.records == total
    for name, lines in want.items():
        out_uri = f"file://{tree.outputs}/{name}.out"
        got = rows.filter(pl.col("output_file") == out_uri).sort("line")
        got_rows = got.select("line", "input_data", "output_data", "inference_id").rows()
        rej = rejects.filter(pl.col("source_file") == out_uri)
        if name not in damaged or not rej.height:
            assert got_rows == lines and rej.height == 0, name
        else:
            assert got.height == 0, name
            assert rej["source_line"].to_list() == list(range(1, len(lines) + 1))
            assert set(rej["reason"].to_list()) == {"corrupt_gzip"}


def test_output_manifest_only_joined_csv_with_a_column_spec_decodes_features(tree: Tree, tmp_path: Path) -> None:
    # Item 21, CSV (the Clarify batch CSV example captures the output only: input columns, prediction, ID, time).
    from engine.kernels.payload import load_column_spec

    spec_path = tmp_path / "spec.json"
    spec_path.write_text(
        json.dumps(
            {
                "input": {
                    "columns": [
                        {"name": "account_length", "type": "int64"},
                        {"name": "rate", "type": "float64"},
                        {"name": "state", "type": "string"},
                    ]
                },
                "output": {"columns": [{"name": "score", "type": "float64"}]},
            }
        )
    )
    spec = load_column_spec(str(spec_path), {})
    lines = [
        ("186", "0.1", "NY", "0.01584203727543354"),
        ("137", "2.5", '"Austin, TX"', "0.9899773597717285"),
        ("55", "0.55", "CA", "0.5"),
    ]
    out = "".join(f"{a},{r},{st_},{sc},{_uuid(k)},2023-01-19T05:40:55Z\n" for k, (a, r, st_, sc) in enumerate(lines))
    tree.file(tree.outputs, "test-dataset-input-cols.csv.out", out)
    tree.manifest("output", [{"prefix": f"{tree.outputs}/"}, "test-dataset-input-cols.csv.out"], hour="2023/01/19/05")
    _, raw, _ = tree.run()
    assert raw["output_data"].to_list() == [",".join(x) for x in lines]  # the raw table keeps the whole record
    _, rows, rejects = tree.run(columns=spec)
    assert rejects.height == 0, rejects.to_dicts()
    assert rows.select("line", "account_length", "rate", "state", "score", "inference_id").rows() == [
        (1, 186, 0.1, "NY", 0.01584203727543354, _uuid(0)),
        (2, 137, 2.5, "Austin, TX", 0.9899773597717285, _uuid(1)),
        (3, 55, 0.55, "CA", 0.5, _uuid(2)),
    ]


def test_unpaired_input_lines_of_invalid_utf8_are_rejects_not_a_failed_run(tree: Tree) -> None:
    # Found by the corruption campaign: the unpaired lines of a longer input were decoded as strict UTF-8.
    out = [f"{k},{_uuid(k)},{T_TEXT}" for k in range(2)]
    tree.job({"u.csv": (None, "\n".join(out) + "\n")})
    tree.file(tree.inputs, "u.csv", b"1,1\n2,2\n\xff\xfe,3\n")
    report, rows, rejects = tree.run()
    assert rows.select("line", "input_data").rows() == [(1, "1,1"), (2, "2,2")]
    assert rejects.select("reason", "source_line").rows() == [("line_count_mismatch", 3)]
    assert report.records == 3
