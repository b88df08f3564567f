"""The README's reading snippets, extracted from README.md and run as they are on every kind of dataset.

A snippet is a ```python block that mentions ``DEST``; ``DEST`` is replaced by the dataset's path and the block
is run; the value of the last name it assigns is what the reader read. Blocks with an ``endpoint=*`` glob are
for real-time datasets (raw, decoded, merged), those with ``year=*`` for batch datasets, the others for all.
Each reader must give every row the run wrote, every column of every part file and integer hour columns.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from engine import BatchOptions, MergeOptions, RealtimeOptions, run_batch, run_merge, run_realtime
from engine.synth import BatchSynthOptions, SynthOptions, synth, synth_batch
from tests.conftest import ROOT, record

_BLOCK = re.compile(r"```python\n(.*?)```", re.S)
SNIPPETS = [b for b in _BLOCK.findall((ROOT / "README.md").read_text()) if "DEST" in b]
KINDS = ("raw", "decoded", "merged", "batch")


def _snippet_id(block: str) -> str:
    first = next(line for line in block.splitlines() if line.startswith("import "))
    glob = "endpoint" if "endpoint=*" in block else "year" if "year=*" in block else "any"
    return f"{first.split()[1].split('.')[0]}-{glob}"


def _applies(block: str, kind: str) -> bool:
    if "endpoint=*" in block:
        return kind != "batch"
    if "year=*" in block:
        return kind == "batch"
    return True


def _json_event(event_id: str, time: str, output: str) -> str:
    return json.dumps(
        {
            "captureData": {
                "endpointInput": {"observedContentType": "text/csv", "mode": "INPUT", "data": "1,2", "encoding": "CSV"},
                "endpointOutput": {
                    "observedContentType": "application/json",
                    "mode": "OUTPUT",
                    "data": output,
                    "encoding": "JSON",
                },
            },
            "eventMetadata": {"eventId": event_id, "inferenceTime": time},
            "eventVersion": "0",
        }
    )


@pytest.fixture(scope="module")
def datasets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("readme")
    sample = root / "sample"
    synth(str(sample), SynthOptions(records=2_000, hours=2, endpoints=1, variants=2))
    # One bad line, so that the raw dataset has _rejects beside its partitions.
    bad = sample / "capture" / "zz-bad" / "AllTraffic" / "2026" / "11" / "01" / "00" / "bad.jsonl"
    bad.parent.mkdir(parents=True)
    bad.write_text(record("ok", "2026-11-01T00:10:00Z") + "\nnot json\n")
    out = {kind: root / kind for kind in KINDS}
    lenient = RealtimeOptions(max_reject_ratio=0.5)
    run_realtime(str(sample / "capture"), str(out["raw"]), options=lenient)
    assert (out["raw"] / "_rejects").is_dir()

    # Decoded, where a later event brings a new JSON field (its rows go to a part file of a wider schema).
    capture = root / "json-capture" / "ep-json" / "AllTraffic" / "2026" / "11" / "01" / "00"
    capture.mkdir(parents=True)
    first = [_json_event(f"a{i}", "2026-11-01T00:05:00Z", '{"score": 0.5}') for i in range(3)]
    later = [_json_event(f"b{i}", "2026-11-01T00:06:00Z", '{"score": 0.1, "explanation": "x"}') for i in range(3)]
    (capture / "a.jsonl").write_text("\n".join(first) + "\n")
    (capture / "b.jsonl").write_text("\n".join(later) + "\n")
    run_realtime(str(root / "json-capture"), str(out["decoded"]), options=RealtimeOptions(decode=True, unit_bytes=1024))

    run_merge(
        captures=str(sample / "capture"),
        ground_truth=str(sample / "ground-truth"),
        dest=str(out["merged"]),
        options=MergeOptions(max_reject_ratio=0.5),
    )
    tree = synth_batch(str(root / "batch-sample"), BatchSynthOptions(jobs=2, files_per_job=2, records_per_file=20))
    run_batch(tree.capture_root, str(out["batch"]), options=BatchOptions(max_reject_ratio=0.5))
    return out


def _data_files(dest: Path) -> list[Path]:
    return [p for p in dest.rglob("*.parquet") if not any(part.startswith(("_", ".")) for part in p.parts[-8:])]


def _as_table(value: Any) -> pa.Table:
    if isinstance(value, pa.Table):
        return value
    if hasattr(value, "to_arrow"):  # polars
        table: pa.Table = value.to_arrow()
        return table
    if hasattr(value, "to_arrow_table"):  # a DuckDB relation (DuckDB >= 1.4)
        got: pa.Table = value.to_arrow_table()
        return got
    if hasattr(value, "arrow"):  # a DuckDB relation of older versions
        got = value.arrow()
        return got.read_all() if isinstance(got, pa.RecordBatchReader) else got
    return pa.Table.from_pandas(value, preserve_index=False)


def _run(block: str, dest: Path) -> pa.Table:
    code = block.replace("DEST", str(dest))
    names = [t.id for node in ast.parse(code).body if isinstance(node, ast.Assign) for t in node.targets]
    scope: dict[str, Any] = {}
    exec(compile(code, "README.md", "exec"), scope)
    return _as_table(scope[names[-1]])


CASES = [
    pytest.param(block, kind, id=f"{_snippet_id(block)}-{kind}")
    for block in SNIPPETS
    for kind in KINDS
    if _applies(block, kind)
]


def test_the_readme_has_the_readers() -> None:
    ids = {_snippet_id(b) for b in SNIPPETS}
    assert {"pyarrow-any", "polars-endpoint", "duckdb-endpoint", "pandas-any", "polars-year", "duckdb-year"} <= ids


@pytest.mark.parametrize(("block", "kind"), CASES)
def test_readme_snippet_reads_every_row_and_column(datasets: dict[str, Path], block: str, kind: str) -> None:
    dest = datasets[kind]
    report = json.loads((dest / "_SUCCESS").read_text())
    files = _data_files(dest)
    assert files
    columns = {name for f in files for name in pq.read_schema(f).names}
    if kind == "decoded":
        # Rows brought new fields part-way; the commit gave every file of the table the one widened schema.
        assert len({tuple(pq.read_schema(f).names) for f in files}) == 1
    table = _run(block, dest)
    assert table.num_rows == report["rows_written"]
    partitions = {"year", "month", "day", "hour"} | (set() if kind == "batch" else {"endpoint", "variant"})
    assert columns | partitions <= set(table.column_names)
    for name in ("year", "month", "day", "hour"):
        assert pa.types.is_integer(table.schema.field(name).type), (name, table.schema.field(name).type)
    for name in ("endpoint", "variant") if kind != "batch" else ():
        assert pa.types.is_string(table.schema.field(name).type) or pa.types.is_large_string(
            table.schema.field(name).type
        )
    if kind == "decoded":
        assert table.column("explanation").null_count == 3  # the new field kept, null where it was absent
