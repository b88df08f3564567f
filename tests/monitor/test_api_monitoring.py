"""The Python API as a monitoring job uses it: decoded readers, an in-memory merge, one prediction column, specs."""

from __future__ import annotations

import json
import re
from pathlib import Path

import polars as pl
import pyarrow as pa
import pytest

import engine
from engine import MergeOptions, OptionsError, RealtimeOptions, RunReport
from engine.synth import SynthOptions, synth
from tests.conftest import ROOT, WriteCapture, record


def _event(event_id: str, output: str | None, content_type: str = "application/json") -> str:
    capture: dict[str, object] = {
        "endpointInput": {"observedContentType": "text/csv", "mode": "INPUT", "data": "1,2", "encoding": "CSV"}
    }
    if output is not None:
        capture["endpointOutput"] = {
            "observedContentType": content_type,
            "mode": "OUTPUT",
            "data": output,
            "encoding": "CSV" if "csv" in content_type else "JSON",
        }
    meta = {"eventId": event_id, "inferenceTime": "2026-11-01T10:00:00Z"}
    return json.dumps({"captureData": capture, "eventMetadata": meta, "eventVersion": "0"})


def _decoded(write_capture: WriteCapture, lines: list[str], spec: engine.ColumnSpec | None = None) -> pa.Table:
    path = write_capture("2026/11/01/10", lines)
    batch = engine.read_capture(str(path)).read_all().combine_chunks().to_batches()[0]
    records, rejected = engine.decode_payloads(batch, spec)
    assert not rejected
    return pa.Table.from_batches(records)


def test_iter_capture_is_public_and_streams_decoded_records(write_capture: WriteCapture, tmp_path: Path) -> None:
    assert "iter_capture" in engine.__all__
    write_capture("2026/11/01/10", [_event("a", '{"score": 0.25}'), _event("b", '{"score": 0.75}')])
    report = RunReport(command="read", source="", dest=None, options={})
    batches = list(engine.iter_capture(str(tmp_path / "capture"), options=RealtimeOptions(decode=True), report=report))
    table = pa.Table.from_batches(batches)
    assert table.num_rows == 2 and report.records == 2
    assert table.column("prediction").to_pylist() == [0.25, 0.75]
    with pytest.raises(OptionsError, match="iter_capture"):
        engine.read_capture(str(tmp_path / "capture"), options=RealtimeOptions(decode=True))


def test_decode_payloads_without_a_spec_uses_the_default(write_capture: WriteCapture) -> None:
    table = _decoded(write_capture, [record("a", "2026-11-01T10:00:00Z", data="1,2,3")], None)
    assert table.column("f2").to_pylist() == [3.0] and table.column("prediction").to_pylist() == [0.5]


@pytest.mark.parametrize(
    ("output", "content_type", "expected", "kept"),
    [
        ("0.5", "text/csv", [0.5], "prediction"),  # CSV: its own column is the prediction
        ('{"score": 0.9}', "application/json", [0.9], "score"),  # the single output scalar
        ('{"predictions": [{"score": 0.1, "predicted_label": 0}]}', "application/json", [0], "score"),
        ('{"probabilities": [0.2, 0.8], "confidence": 0.8}', "application/json", [0.8], "confidence"),
        (None, "application/json", [None], "event_id"),  # no output captured: a null prediction
    ],
)
def test_one_prediction_column_next_to_the_original_columns(
    write_capture: WriteCapture, output: str | None, content_type: str, expected: list[object], kept: str
) -> None:
    table = _decoded(write_capture, [_event("a", output, content_type)])
    assert table.column_names.count("prediction") == 1
    assert table.column("prediction").to_pylist() == expected
    assert kept in table.column_names  # the original column stays


def test_the_spec_marked_prediction_wins(write_capture: WriteCapture) -> None:
    spec = engine.parse_column_spec(
        {
            "output": {
                "columns": [{"name": "score", "type": "float64"}, {"name": "predicted_label", "type": "int64"}],
                "prediction": "score",
            }
        }
    )
    table = _decoded(write_capture, [_event("a", '{"score": 0.3, "predicted_label": 1}')], spec)
    assert table.column("prediction").to_pylist() == [0.3] and table.column("predicted_label").to_pylist() == [1]


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        ({"ouput": {"columns": []}}, "unknown key 'ouput'"),
        ({"input": {"colums": [{"name": "a"}]}}, "input: unknown key 'colums'"),
        ({"input": {"columns": [{"name": "a", "typ": "int64"}]}}, "input.columns[0]: unknown key 'typ'"),
        ({"input": {"columns": [{"name": "a", "type": "flaot64"}]}}, "columns[0].type: 'flaot64' is not an Arrow type"),
        ({"input": {"columns": [{"type": "int64"}]}}, "input.columns[0]: missing key 'name'"),
        ({"input": {"header": "yes"}}, "input.header: expected a boolean"),
        ({"arrays": "explode"}, "arrays: 'explode' is not one of list, expand"),
    ],
)
def test_column_spec_is_validated_against_its_schema(tmp_path: Path, spec: dict[str, object], needle: str) -> None:
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spec))
    with pytest.raises(OptionsError) as info:
        engine.load_column_spec(str(path))
    message = str(info.value)
    assert needle in message and str(path) in message and "tables.json" not in message


def test_timestamp_types_pass_the_schema() -> None:
    spec = engine.parse_column_spec({"input": {"columns": [{"name": "t", "type": "timestamp[us, tz=UTC]"}]}})
    assert str(spec.input.columns[0][1]) == "timestamp[us, tz=UTC]"


def test_a_valid_spec_still_parses() -> None:
    spec = json.loads(re.search(r"```json\n(.*?)```", (ROOT / "README.md").read_text(), re.S).group(1))  # type: ignore[union-attr]
    parsed = engine.parse_column_spec(spec)
    assert parsed.output.prediction == "churn_probability" and parsed.input.names == ["account_length", "state"]


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("merge-sample")
    synth(str(root), SynthOptions(records=3_000, hours=2, endpoints=1, variants=2))
    return root


def _sorted(df: pl.DataFrame) -> pl.DataFrame:
    return df.sort("event_id", "label_file", "label_line")


@pytest.mark.parametrize("join_memory", [256 * 2**20, 20_000])  # in memory, and in spilled hash buckets
def test_read_merge_gives_the_rows_run_merge_writes(sample: Path, tmp_path: Path, join_memory: int) -> None:
    options = MergeOptions(join_memory=join_memory, how="left")
    common = {"captures": str(sample / "capture"), "ground_truth": str(sample / "ground-truth"), "options": options}
    written = engine.run_merge(dest=str(tmp_path / "m"), **common)  # type: ignore[arg-type]
    report = RunReport(command="merge", source="", dest=None, options={})
    got = engine.read_merge(report=report, **common)  # type: ignore[arg-type]
    assert got.height == written.rows_written
    for name in ("predictions", "labels", "matched", "unmatched_predictions", "unmatched_labels"):
        assert report.counts[name] == written.counts[name], name
    on_disk = pl.scan_parquet(str(tmp_path / "m" / "endpoint=*/**/*.parquet"), hive_partitioning=True).collect()
    cols = ["event_id", "inference_time", "output_data", "label", "label_file", "label_line"]
    assert _sorted(got.select(cols)).equals(_sorted(on_disk.select(cols)))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]  # read_merge wrote nothing


def test_iter_merge_streams_batches_and_writes_nothing(sample: Path, tmp_path: Path) -> None:
    batches = engine.iter_merge(captures=str(sample / "capture"), ground_truth=str(sample / "ground-truth"))
    first = next(batches)
    assert isinstance(first, pa.RecordBatch) and {"label", "label_value", "label_file"} <= set(first.schema.names)
    rest = sum(b.num_rows for b in batches)
    assert first.num_rows + rest > 0
    with pytest.raises(OptionsError, match="run_merge"):
        next(
            engine.iter_merge(
                captures=str(sample / "capture"), ground_truth=str(sample), options=MergeOptions(sagemaker_format=True)
            )
        )


def test_docstrings_say_what_they_mean() -> None:
    cited = [
        f"{p.relative_to(ROOT)}:{n}"
        for p in sorted((ROOT / "engine").rglob("*.py"))
        for n, line in enumerate(p.read_text().splitlines(), 1)
        if re.search(r"\bdesign \d", line)
    ]
    assert cited == []  # sections of a document that is not in the repository


def test_the_package_docstring_is_a_short_map() -> None:
    doc = engine.__doc__ or ""
    assert len(doc.splitlines()) <= 15
    functions = [n for n in engine.__all__ if callable(getattr(engine, n)) and n[0].islower()]
    assert all(name in doc for name in functions), [n for n in functions if n not in doc]
