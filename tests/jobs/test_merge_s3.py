"""The merge against a real S3 endpoint (SeaweedFS on loopback): s3:// capture, ground truth, prediction dataset
and destination, with SageMaker's merged layout committed next to the Parquet."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.dataset as ds
import pytest

from engine import MergeOptions, RealtimeOptions, run_merge, run_realtime
from engine.synth import SynthOptions, synth

if TYPE_CHECKING:
    # Types only: importing the module before pytest loads it as a plugin would skip its assertion rewriting.
    from tests.s3_server import S3Endpoint

pytest_plugins = ["tests.s3_server"]
pytestmark = pytest.mark.s3

SAMPLE = SynthOptions(records=1500, hours=2, endpoints=1, variants=2)


def _rows(table: pa.Table) -> list[tuple[object, ...]]:
    # Provenance differs by root only (file:// vs s3://), so compare the file name.
    files = table.column("label_file").cast(pa.string()).to_pylist()
    names = [None if u is None else u.rsplit("/", 1)[-1] for u in files]
    cols = [table.column(c).to_pylist() for c in ("event_id", "label_data", "label_line", "endpoint", "variant")]
    return sorted(zip(*cols, names, strict=True), key=str)


def test_s3_merge_matches_local_disk(tmp_path: Path, s3_server: S3Endpoint, s3_bucket: str) -> None:
    so = s3_server.storage_options()
    fs = s3_server.filesystem()
    remote = synth(f"s3://{s3_bucket}/sample", SAMPLE, storage_options=so)
    local = synth(str(tmp_path / "sample"), SAMPLE)  # the same options write byte-identical trees

    options = MergeOptions(storage_options=so, sagemaker_format=True, how="left")
    on_s3 = run_merge(
        captures=remote.capture_root,
        ground_truth=remote.ground_truth_root,
        dest=f"s3://{s3_bucket}/merged",
        options=options,
    )
    on_disk = run_merge(
        captures=local.capture_root,
        ground_truth=local.ground_truth_root,
        dest=str(tmp_path / "merged"),
        options=MergeOptions(sagemaker_format=True, how="left"),
    )
    assert on_s3.status == "committed" and on_s3.balanced
    assert on_s3.counts == on_disk.counts and on_s3.partitions == on_disk.partitions
    assert on_s3.counts["matched"] == remote.labels and on_s3.rows_written == remote.events

    s3_table = ds.dataset(
        f"{s3_bucket}/merged", filesystem=fs, format="parquet", partitioning="hive", ignore_prefixes=["_", "merge"]
    ).to_table()
    disk_table = ds.dataset(
        tmp_path / "merged", format="parquet", partitioning="hive", ignore_prefixes=["_", "merge"]
    ).to_table()
    assert _rows(s3_table) == _rows(disk_table)

    # SageMaker's layout: committed with the run, one JSON line per matched prediction.
    jsonl = sorted(k for k in fs.find(f"{s3_bucket}/merged/_sagemaker/merge") if k.endswith(".jsonl"))
    assert jsonl and all("/_temporary/" not in k for k in jsonl)
    lines = [json.loads(line) for k in jsonl for line in fs.cat_file(k).decode().splitlines()]
    assert len(lines) == remote.labels
    assert not fs.exists(f"{s3_bucket}/merged/_temporary") or not [
        k for k, info in fs.find(f"{s3_bucket}/merged/_temporary", detail=True).items() if info["type"] == "file"
    ]
    success = json.loads(fs.cat_file(f"{s3_bucket}/merged/_SUCCESS"))
    assert success["counts"] == on_s3.counts

    # A prediction dataset on S3 (footers and row groups read through the object store).
    run_realtime(remote.capture_root, f"s3://{s3_bucket}/rt", options=RealtimeOptions(storage_options=so))
    from_dataset = run_merge(
        predictions=f"s3://{s3_bucket}/rt",
        ground_truth=remote.ground_truth_root,
        dest=f"s3://{s3_bucket}/merged2",
        options=MergeOptions(storage_options=so),
    )
    assert from_dataset.counts["matched"] == remote.labels and from_dataset.rows_written == remote.labels
