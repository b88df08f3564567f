"""The batch transform job on real trees of manifests, inputs and `.out` files (formats reference 3 and 4)."""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import duckdb
import hypothesis.strategies as st
import polars as pl
import pyarrow as pa
import pyarrow.dataset as ds
import pytest
from hypothesis import HealthCheck, given, settings

from engine.errors import SourceError
from engine.jobs.batch import BatchOptions, read_batch, run_batch
from engine.synth import BatchSynthOptions, synth_batch
from engine.tables import table_spec

HOUR = "2022/08/30/00"
ID = "1f1d57b1-2e6f-488c-8c30-db4e6d757861"
T = datetime(2022, 8, 30, 0, 49, 15, tzinfo=timezone.utc)
# Formats reference 3.3: the docs' CSV output line (note the space) and the real joined JSON Lines output.
DOCS_CSV = f"0, {ID},2022-08-30T00:49:15Z"
REAL_JSONL = (
    '{"SageMakerInferenceId":"89180035-821a-41d9-87b2-67a22490de94","SageMakerInferenceTime":"2023-01-21T01:29:04Z",'
    '"SageMakerOutput":{"predicted_label":0,"score":0.047645717859268},"features":[29,2,178610,15,10,0,7,4,4,0,0,0,21,37]}'
)
REAL_JSONL_INPUT = '{"features":[29,2,178610,15,10,0,7,4,4,0,0,0,21,37]}'
DOCS_JSON = f'{{"output": 0, "SageMakerInferenceId": "{ID}", "SageMakerInferenceTime": "2022-08-30T00:49:15Z"}}'


class Tree:
    """A batch data-capture destination plus transform input/output folders under one directory."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.capture = root / "capture"
        self.inputs = root / "transform-input"
        self.outputs = root / "transform-output"

    def file(self, folder: Path, name: str, text: str | bytes, *, gz: bool = False) -> None:
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        data = text.encode() if isinstance(text, str) else text
        path.write_bytes(gzip.compress(data) if gz else data)

    def manifest(self, side: str, doc: Any, *, hour: str = HOUR, name: str = "m.json") -> None:
        text = doc if isinstance(doc, str) else json.dumps(doc)
        self.file(self.capture / side / hour, name, text)

    def job(
        self,
        files: dict[str, tuple[str | None, str | None]],
        *,
        hour: str = HOUR,
        tag: str = "a",
        gz: frozenset[str] = frozenset(),
    ) -> None:
        """Input and output files (None: not written) and both manifests listing all of them."""
        for name, (inp, out) in files.items():
            if inp is not None:
                self.file(self.inputs, name, inp, gz=name in gz)
            if out is not None:
                self.file(self.outputs, name + ".out", out)
        self.manifest("input", [{"prefix": f"{self.inputs}/"}, *files], hour=hour, name=f"{tag}-in.json")
        self.manifest(
            "output", [{"prefix": f"{self.outputs}/"}, *(n + ".out" for n in files)], hour=hour, name=f"{tag}.json"
        )

    def run(self, **kw: Any) -> tuple[Any, pl.DataFrame, pl.DataFrame]:
        dest = self.root / "out"
        report = run_batch(str(self.capture), str(dest), options=BatchOptions(max_reject_ratio=1.0, **kw))
        assert report.balanced, report.to_dict()
        return report, _rows(dest), _rejects(dest)


def _rows(dest: Path) -> pl.DataFrame:
    if not list(dest.glob("year=*")):
        return pl.from_arrow(table_spec("batch").schema.empty_table())  # type: ignore[return-value]
    data = ds.dataset(dest, partitioning="hive", format="parquet", exclude_invalid_files=False, ignore_prefixes=["_"])
    return pl.from_arrow(data.to_table()).sort("output_file", "line", "record_index")  # type: ignore[return-value]


def _rejects(dest: Path) -> pl.DataFrame:
    if not list((dest / "_rejects").glob("**/*.parquet")):
        return pl.DataFrame(schema={"reason": pl.String, "source_line": pl.Int64, "source_file": pl.String})
    table = ds.dataset(dest / "_rejects", partitioning="hive", format="parquet").to_table()
    return pl.from_arrow(table).sort("source_file", "source_line")  # type: ignore[return-value]


@pytest.fixture
def tree(tmp_path: Path) -> Tree:
    return Tree(tmp_path)


def test_docs_csv_line_with_space_gives_trimmed_id_and_time(tree: Tree) -> None:
    tree.job({"a.csv": ("1,2,3\n4,5,6\n", f"{DOCS_CSV}\n1,{ID[:-1]}9,2022-08-30T00:49:15Z\n")})
    report, rows, rejects = tree.run()
    assert rejects.height == 0
    assert rows["inference_id"].to_list() == [ID, ID[:-1] + "9"]
    assert rows["inference_time"].to_list() == [T, T]
    assert rows["output_data"].to_list() == ["0", "1"]
    assert rows["input_data"].to_list() == ["1,2,3", "4,5,6"]
    assert rows["line"].to_list() == [1, 2]
    assert rows["output_encoding"].to_list() == ["CSV", "CSV"]
    assert rows["joined"].to_list() == [False, False]
    assert rows["input_file"][0] == f"file://{tree.inputs}/a.csv"
    assert rows["output_file"][0] == f"file://{tree.outputs}/a.csv.out"
    assert rows["manifest_file"][0] == f"file://{tree.capture}/output/{HOUR}/a.json"
    assert report.records == 2 and report.rows_written == 2
    assert report.partitions == {"year=2022/month=08/day=30/hour=00": 2}


def test_real_joined_jsonlines_ids_first_keys_removed_and_join_recognized(tree: Tree) -> None:
    tree.job({"d.jsonl": (REAL_JSONL_INPUT + "\n", REAL_JSONL + "\n")}, hour="2023/01/21/01")
    _, rows, rejects = tree.run()
    assert rejects.height == 0
    row = rows.row(0, named=True)
    assert row["inference_id"] == "89180035-821a-41d9-87b2-67a22490de94"
    assert row["inference_time"] == datetime(2023, 1, 21, 1, 29, 4, tzinfo=timezone.utc)
    # Exactly the `data` of the batch JSON Lines merged record (formats reference 2.5): the keys are gone.
    assert row["output_data"] == (
        '{"SageMakerOutput":{"predicted_label":0,"score":0.047645717859268},"features":[29,2,178610,15,10,0,7,4,4,0,0,0,21,37]}'
    )
    assert row["joined"] is True
    assert row["input_data"] == REAL_JSONL_INPUT


def test_docs_json_keys_appended_last_are_removed(tree: Tree) -> None:
    tree.job({"x.json": ('{"a": 1}\n', DOCS_JSON + "\n")})
    _, rows, _ = tree.run()
    assert rows["output_data"].to_list() == ['{"output": 0}']
    assert rows["inference_id"].to_list() == [ID]
    assert rows["inference_time"].to_list() == [T]


def test_decode_joined_outputs_do_not_duplicate_input_columns(tree: Tree) -> None:
    tree.job(
        {"j.csv": ("1,2,3\n4,5,6\n", f"1,2,3,0.9, {ID},2022-08-30T00:49:15Z\n4,5,6,0.1,{ID},2022-08-30T00:49:15Z\n")}
    )
    _, raw, _ = tree.run()
    assert raw["joined"].to_list() == [True, True]
    assert raw["output_data"].to_list() == ["1,2,3,0.9", "4,5,6,0.1"]  # SageMaker's merge keeps input + prediction
    _, rows, rejects = tree.run(decode=True)
    assert rejects.height == 0
    assert rows.select("f0", "f1", "f2", "prediction").rows() == [(1.0, 2.0, 3.0, 0.9), (4.0, 5.0, 6.0, 0.1)]
    assert "output_data" not in rows.columns and "f3" not in rows.columns


def test_one_json_document_with_one_id_for_many_instances(tree: Tree) -> None:
    # SplitType=None: the whole object is one request; the output document (pretty-printed here) carries one ID.
    doc_in = json.dumps({"instances": [{"features": [1, 2]}, {"features": [3, 4]}, {"features": [5, 6]}]}, indent=2)
    doc_out = json.dumps(
        {
            "SageMakerInferenceId": "94bcc22a-0000-4000-8000-000000000000",
            "SageMakerInferenceTime": "2024-01-19T19:25:34Z",
            "predictions": [{"score": 0.1}, {"score": 0.2}, {"score": 0.3}],
        },
        indent=2,
    )
    tree.job({"doc.json": (doc_in, doc_out)}, hour="2024/01/19/19")
    _, raw, rejects = tree.run()
    assert rejects.height == 0 and raw.height == 1
    assert json.loads(raw["output_data"][0]) == {"predictions": [{"score": 0.1}, {"score": 0.2}, {"score": 0.3}]}
    assert json.loads(raw["input_data"][0]) == json.loads(doc_in)
    _, rows, rejects = tree.run(decode=True)
    assert rejects.height == 0
    assert rows["record_index"].to_list() == [0, 1, 2]
    assert set(rows["inference_id"].to_list()) == {"94bcc22a-0000-4000-8000-000000000000"}
    assert rows["score"].to_list() == [0.1, 0.2, 0.3]
    assert rows["features"].to_list() == [[1, 2], [3, 4], [5, 6]]


def test_without_generate_inference_id_the_manifest_hour_is_the_time(tree: Tree) -> None:
    tree.job({"p.csv": ("1,2\n3,4\n", "0.5\n0.7\n")}, hour="2026/11/01/13")
    _, rows, rejects = tree.run()
    assert rejects.height == 0
    assert rows["inference_id"].to_list() == [None, None]
    assert rows["inference_time"].to_list() == [datetime(2026, 11, 1, 13, tzinfo=timezone.utc)] * 2
    assert rows["output_data"].to_list() == ["0.5", "0.7"]


def test_single_object_input_manifest_and_gzip_input(tree: Tree) -> None:
    tree.file(tree.inputs, "one.csv.gz", "1,2\n3,4\n", gz=True)
    tree.file(tree.outputs, "one.csv.gz.out", f"0,{ID},2022-08-30T00:49:15Z\n1,{ID},2022-08-30T00:49:15Z\n")
    tree.manifest("input", [{"prefix": f"{tree.inputs}/one.csv.gz"}, ""], name="in.json")
    tree.manifest("output", [{"prefix": f"{tree.outputs}/"}, "one.csv.gz.out"], name="out.jsonl")
    _, rows, rejects = tree.run()
    assert rejects.height == 0
    assert rows["input_data"].to_list() == ["1,2", "3,4"]
    assert rows["input_file"].to_list() == [f"file://{tree.inputs}/one.csv.gz"] * 2
    assert rows["output_data"].to_list() == ["0", "1"]


def test_output_manifest_only_and_crlf(tree: Tree) -> None:
    tree.file(tree.outputs, "o.csv.out", f"0,{ID},2022-08-30T00:49:15Z\r\n1,{ID},2022-08-30T00:49:15Z\r\n")
    tree.manifest("output", [{"prefix": f"{tree.outputs}/"}, "o.csv.out"])
    _, rows, _ = tree.run()
    assert rows["output_data"].to_list() == ["0", "1"]
    assert rows["inference_time"].to_list() == [T, T]
    assert rows["input_data"].to_list() == [None, None]


def test_prefix_map_reads_s3_manifests_from_local_disk(tree: Tree) -> None:
    tree.file(tree.inputs, "a.csv", "1,2\n")
    tree.file(tree.outputs, "a.csv.out", f"0,{ID},2022-08-30T00:49:15Z\n")
    tree.manifest("input", [{"prefix": "s3://bucket/in/"}, "a.csv"], name="i.json")
    tree.manifest("output", [{"prefix": "s3://bucket/out/"}, "a.csv.out"], name="o.json")
    _, _, rejects = tree.run()
    assert rejects["reason"].to_list() == ["unexpected_scheme", "unexpected_scheme"]
    mapping = {"s3://bucket/in/": f"{tree.inputs}/", "s3://bucket/out/": f"{tree.outputs}/"}
    _, rows, rejects = tree.run(prefix_map=mapping)
    assert rejects.height == 0
    assert rows.select("input_data", "output_data").rows() == [("1,2", "0")]


def test_missing_output_is_reported_per_file_and_missing_input_keeps_outputs(tree: Tree) -> None:
    out = f"0,{ID},2022-08-30T00:49:15Z\n"
    tree.job({"ok.csv": ("1\n", out), "failed.csv": ("2\n", None), "noinput.csv": (None, out)})
    report, rows, rejects = tree.run()
    assert rejects.height == 0
    assert report.counts["missing_outputs"] == 1 and report.counts["missing_inputs"] == 1
    assert report.notes["missing_outputs"] == [f"file://{tree.outputs}/failed.csv.out"]
    assert report.notes["missing_inputs"] == [f"file://{tree.inputs}/noinput.csv"]
    assert rows.select("input_data", "output_data").sort("input_data").rows() == [(None, "0"), ("1", "0")]


@pytest.mark.parametrize(
    ("manifest", "reason"),
    [
        ('{"prefix": "x"}', "invalid_manifest"),  # not an array
        ("[1, 2", "invalid_manifest"),  # not JSON
        (["a.csv.out"], "invalid_manifest"),  # no prefix object
    ],
)
def test_bad_manifest_is_rejected_and_the_rest_is_read(tree: Tree, manifest: Any, reason: str) -> None:
    tree.job({"a.csv": ("1\n", f"0,{ID},2022-08-30T00:49:15Z\n")})
    tree.manifest("output", manifest, name="bad.json")
    report, rows, rejects = tree.run()
    assert rows.height == 1
    assert rejects["reason"].to_list() == [reason]
    assert rejects["source_file"][0].endswith("/output/2022/08/30/00/bad.json")
    assert rejects["source_line"][0] is None
    assert report.records == 2 and report.rejected == 1


def test_key_escaping_its_prefix_on_local_disk_is_refused(tree: Tree) -> None:
    secret = tree.root / "secret.csv.out"
    secret.write_text(f"0,{ID},2022-08-30T00:49:15Z\n")
    tree.manifest("output", [{"prefix": f"{tree.outputs}/"}, "../secret.csv.out", "/etc/hostname"])
    report, rows, rejects = tree.run()
    assert rows.height == 0
    assert rejects["reason"].to_list() == ["key_escapes_prefix", "key_escapes_prefix"]
    assert rejects["source_line"].to_list() == [2, 3]  # the entries' positions in the array
    assert report.balanced


def test_line_counts_that_differ_reject_the_unpaired_lines(tree: Tree) -> None:
    out = "".join(f"{k},{ID},2022-08-30T00:49:15Z\n" for k in range(3))
    tree.job({"short-input.csv": ("a\nb\n", out), "long-input.csv": ("a\nb\nc\nd\n", out)})
    report, rows, rejects = tree.run()
    got = rejects.select(pl.col("source_file").str.split("/").list.last(), "source_line", "reason").rows()
    assert got == [
        ("long-input.csv", 4, "line_count_mismatch"),
        ("short-input.csv.out", 3, "line_count_mismatch"),
    ]
    assert rows.height == 5
    assert report.records == 7  # 3 + 3 outputs and the unpaired input line


def test_output_line_without_appended_id_and_bad_json_are_rejected(tree: Tree) -> None:
    csv_out = f"0,{ID},2022-08-30T00:49:15Z\n1\n\n2,{ID},not-a-time\n"
    json_out = (
        f'{{"p": 1, "SageMakerInferenceId": "{ID}", "SageMakerInferenceTime": "2022-08-30T00:49:15Z"}}\n'
        '{"p": 2}\n{bad\n'
    )
    tree.job({"c.csv": ("a\nb\nc\nd\n", csv_out), "j.json": ("{}\n{}\n{}\n", json_out)})
    report, rows, rejects = tree.run()
    got = rejects.select(pl.col("source_file").str.split("/").list.last(), "source_line", "reason").rows()
    assert got == [
        ("c.csv.out", 2, "missing_inference_id"),
        ("c.csv.out", 3, "empty_record"),
        ("c.csv.out", 4, "invalid_inference_time"),
        ("j.json.out", 2, "missing_inference_id"),
        ("j.json.out", 3, "invalid_json"),
    ]
    assert rows.select("output_data").to_series().to_list() == ["0", '{"p": 1}']
    assert report.records == 7 and report.events_written == 2 and report.rejected == 5


def test_missing_source_is_a_source_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="not found"):
        run_batch(str(tmp_path / "nope"), str(tmp_path / "out"))


def test_window_selects_manifest_hours(tree: Tree) -> None:
    out = f"0,{ID},2022-08-30T00:49:15Z\n"
    tree.job({"a.csv": ("1\n", out)}, hour="2022/08/30/00", tag="a")
    tree.job({"b.csv": ("1\n", "0.5\n")}, hour="2022/08/30/05", tag="b")
    _, rows, _ = tree.run(start="2022-08-30T05", end="2022-08-30T06")
    assert rows["output_file"].to_list() == [f"file://{tree.outputs}/b.csv.out"]


def test_synth_batch_tree_end_to_end(tmp_path: Path, run_cli: Callable[..., Any]) -> None:
    summary = synth_batch(str(tmp_path / "s"), BatchSynthOptions(jobs=3, files_per_job=3, records_per_file=40))
    dest = tmp_path / "out"
    proc = run_cli("batch", summary.capture_root, str(dest))
    assert proc.returncode == 0, proc.stderr
    assert "missing outputs" in proc.stdout
    rows = _rows(dest)
    assert rows.height == summary.records
    assert rows["inference_id"].null_count() == 0 and rows["inference_id"].n_unique() == summary.records
    report = json.loads((dest / "_SUCCESS").read_text())
    assert report["counts"].get("missing_outputs", 0) == summary.missing_outputs
    assert report["records"] == report["events_written"] == summary.records and report["balanced"]
    # Every row's ID and data are the .out line's, and the input line is the same line of the input.
    for out_file, group in rows.group_by("output_file"):
        lines = Path(str(out_file[0]).removeprefix("file://")).read_text().splitlines()
        sample = group.sample(5, seed=1) if group.height > 5 else group
        for r in sample.iter_rows(named=True):
            text = lines[r["line"] - 1]
            assert r["inference_id"] in text
            if r["output_encoding"] == "CSV":
                head, rid, _ = text.rsplit(",", 2)
                assert (r["output_data"], r["inference_id"]) == (head, rid.strip())
            else:
                obj = json.loads(text)
                assert r["inference_id"] == obj.pop("SageMakerInferenceId")
                obj.pop("SageMakerInferenceTime")
                assert json.loads(r["output_data"]) == obj
    # Readable as one dataset by DuckDB too.
    sql = f"select count(*) from read_parquet('{dest}/year=*/**/*.parquet', hive_partitioning=true)"
    assert duckdb.sql(sql).fetchall() == [(summary.records,)]
    decoded = tmp_path / "dec"
    proc = run_cli("batch", summary.capture_root, str(decoded), "--decode", "-q")
    assert proc.returncode == 0, proc.stderr
    assert _rows(decoded).height == summary.records


def test_read_batch_streams_record_batches(tree: Tree) -> None:
    tree.job({"a.csv": ("1\n2\n", f"0,{ID},2022-08-30T00:49:15Z\n1,{ID},2022-08-30T00:49:15Z\n")})
    seen: list[pa.RecordBatch] = []
    table = read_batch(str(tree.capture), on_rejects=seen.append).read_all()
    assert table.num_rows == 2 and not seen
    assert table.schema.field("inference_time").type == pa.timestamp("us", tz="UTC")


def test_cli_batch_errors_are_one_line(tmp_path: Path, run_cli: Callable[..., Any]) -> None:
    proc = run_cli("batch", str(tmp_path / "missing"), str(tmp_path / "out"))
    assert proc.returncode == 1
    assert proc.stderr.strip().count("\n") == 0 and "not found" in proc.stderr
    proc = run_cli("batch", str(tmp_path), str(tmp_path / "out"), "--prefix-map", "nothing")
    assert proc.returncode == 2 and "FROM=TO" in proc.stderr


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    kinds=st.lists(st.sampled_from(["ok", "space", "noid", "blank", "badtime", "ok-json", "json-noid"]), max_size=30)
)
def test_property_rows_plus_rejects_is_lines(tmp_path_factory: pytest.TempPathFactory, kinds: list[str]) -> None:
    root = tmp_path_factory.mktemp("prop")
    tree = Tree(root)
    csv_lines = {
        "ok": f"1.5,{ID},2022-08-30T00:49:15Z",
        "space": f"2, {ID} , 2022-08-30T00:49:15Z ",
        "noid": "3",
        "blank": "",
        "badtime": f"4,{ID},yesterday",
    }
    json_lines = {"ok-json": DOCS_JSON, "json-noid": '{"output": 1}'}
    csv = [csv_lines[k] for k in kinds if k in csv_lines]
    jsn = [json_lines[k] for k in kinds if k in json_lines]
    files = {}
    if csv:
        files["c.csv"] = ("x\n" * len(csv), "\n".join(csv) + "\n")
    if jsn:
        files["j.json"] = ("{}\n" * len(jsn), "\n".join(jsn) + "\n")
    if not files:
        return
    tree.job(files)
    report, rows, rejects = tree.run()
    assert rows.height + rejects.height == report.records
    assert report.balanced
    want_rows = want_records = 0
    for file_kinds, with_id in (
        ([k for k in kinds if k in csv_lines], {"ok", "space"}),
        ([k for k in kinds if k in json_lines], {"ok-json"}),
    ):
        if not file_kinds:
            continue
        nonblank = [k for k in file_kinds if k != "blank"]
        if len(nonblank) == 1:  # one record: read whole (SplitType=None), blank lines around it are not records
            want_rows, want_records = want_rows + 1, want_records + 1
        elif nonblank and nonblank[0] in with_id:  # IDs sniffed from the first record: lines without them fail
            want_rows, want_records = want_rows + sum(k in with_id for k in nonblank), want_records + len(file_kinds)
        else:  # no IDs: every non-blank line is a record of its own
            want_rows, want_records = want_rows + len(nonblank), want_records + len(file_kinds)
    assert (rows.height, report.records) == (want_rows, want_records)


def test_tiny_units_give_the_same_rows_as_whole_files(tmp_path: Path) -> None:
    # Blocks far smaller than a line exercise every boundary of the in-step reader (and gzip inputs).
    summary = synth_batch(str(tmp_path / "s"), BatchSynthOptions(jobs=2, files_per_job=2, records_per_file=30))
    whole = run_batch(summary.capture_root, str(tmp_path / "a"))
    tiny = run_batch(summary.capture_root, str(tmp_path / "b"), options=BatchOptions(unit_bytes=97))
    assert whole.rows_written == tiny.rows_written == summary.records and tiny.rejected == 0
    cols = ["output_file", "line", "inference_id", "input_data", "output_data"]
    assert _rows(tmp_path / "a").select(cols).equals(_rows(tmp_path / "b").select(cols))


def test_merge_batch_capture_with_its_labels(tmp_path: Path, run_cli: Callable[..., Any]) -> None:
    # `merge --batch` reads the batch capture itself; batch labels key on SageMakerInferenceId.
    summary = synth_batch(str(tmp_path / "s"), BatchSynthOptions(jobs=2, files_per_job=2, records_per_file=50))
    dest = tmp_path / "merged"
    proc = run_cli("merge", "--batch", summary.capture_root, "--ground-truth", summary.ground_truth_root, str(dest))
    assert proc.returncode == 0, proc.stderr
    report = json.loads((dest / "_SUCCESS").read_text())
    assert report["counts"]["matched"] == report["counts"]["labels"] == summary.labels
    assert report["counts"]["unmatched_predictions"] == summary.records - summary.labels
    rows = _rows(dest)
    assert rows.height == summary.labels and rows["label_data"].null_count() == 0
    assert set(rows["inference_id"].to_list()) <= _batch_ids(summary.transform_output_root)


def _batch_ids(output_root: str) -> set[str]:
    lines = [line for path in Path(output_root).glob("**/*.out") for line in path.read_text().splitlines()]
    return {
        json.loads(line)["SageMakerInferenceId"] if line.startswith("{") else line.rsplit(",", 2)[1].strip()
        for line in lines
    }
