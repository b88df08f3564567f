"""The batch job on a real S3 endpoint (SeaweedFS on loopback), and SSE-KMS on what jobs write."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pyarrow.dataset as ds
import pytest

from engine import OptionsError, RealtimeOptions, run_realtime
from engine.jobs.batch import BatchOptions, run_batch
from engine.synth import BatchSynthOptions, SynthOptions, synth, synth_batch
from tests.conftest import ROOT

if TYPE_CHECKING:
    from tests.s3_server import S3Endpoint

pytest_plugins = ["tests.s3_server"]
pytestmark = pytest.mark.s3

BATCH = BatchSynthOptions(jobs=3, files_per_job=3, records_per_file=50)


def _rows(fs: Any, path: str) -> int:
    files = [f for f in fs.find(path) if f.endswith(".parquet") and "/_" not in f.removeprefix(path)]
    return int(ds.dataset(files, filesystem=fs, format="parquet").count_rows())


def test_batch_s3_to_s3_matches_local_and_reruns_idempotently(
    s3_server: S3Endpoint, s3_bucket: str, tmp_path: Any
) -> None:
    so = s3_server.storage_options()
    summary = synth_batch(f"s3://{s3_bucket}/t", BATCH, storage_options=so)
    local = synth_batch(str(tmp_path / "t"), BATCH)  # same seed: the same records on local disk
    fs = s3_server.filesystem()
    opts = BatchOptions(storage_options=so)
    for _ in range(2):  # the second run replaces the partitions of the first
        report = run_batch(summary.capture_root, f"s3://{s3_bucket}/out", options=opts)
        assert report.status == "committed" and report.balanced
        assert report.rows_written == summary.records
        assert report.counts.get("missing_outputs", 0) == summary.missing_outputs
        assert _rows(fs, f"{s3_bucket}/out") == summary.records
    assert json.loads(fs.cat_file(f"{s3_bucket}/out/_SUCCESS"))["status"] == "committed"
    # The manifests name s3:// objects; every row's provenance is a full s3:// URI.
    files = [f for f in fs.find(f"{s3_bucket}/out") if f.endswith(".parquet") and "/_rejects/" not in f]
    table = ds.dataset(files, filesystem=fs, format="parquet").to_table()
    assert all(u.startswith(f"s3://{s3_bucket}/t/transform-output/") for u in table.column("output_file").to_pylist())
    # The same rows as from local disk (ids, data, times), whatever the storage.
    local_report = run_batch(local.capture_root, str(tmp_path / "out"))
    local_table = ds.dataset(str(tmp_path / "out"), format="parquet", partitioning="hive", ignore_prefixes=["_"])
    cols = ["inference_id", "inference_time", "input_data", "output_data", "line"]
    assert local_report.rows_written == report.rows_written
    assert sorted(local_table.to_table(columns=cols).to_pylist(), key=str) == sorted(
        table.select(cols).to_pylist(), key=str
    )


def test_batch_cli_on_s3_with_prefix_map_from_a_mounted_copy(
    s3_server: S3Endpoint, s3_bucket: str, tmp_path: Any
) -> None:
    # Inside a processing container the objects are on local disk while the manifests still say s3://.
    so = s3_server.storage_options()
    summary = synth_batch(f"s3://{s3_bucket}/t", BATCH, storage_options=so)
    fs = s3_server.filesystem()
    mounted = tmp_path / "mnt"
    fs.get(f"{s3_bucket}/t/", str(mounted), recursive=True)
    dest = tmp_path / "out"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "engine",
            "batch",
            str(mounted / "batch-capture"),
            str(dest),
            "--prefix-map",
            f"s3://{s3_bucket}/t/={mounted}/",
            "-q",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    data = ds.dataset(str(dest), format="parquet", partitioning="hive", ignore_prefixes=["_"])
    assert data.count_rows() == summary.records


@pytest.fixture(scope="module")
def kms_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Endpoint]:
    """SeaweedFS with its built-in local KMS provider, so SSE-KMS requests are really served."""
    from tests.s3_server import WeedServer  # the plugin is loaded by now, so its asserts stay rewritten

    class KmsWeed(WeedServer):
        def _write_config(self) -> None:
            super()._write_config()
            path = self.workdir / "s3.json"
            config = json.loads(path.read_text())
            config["kms"] = {"default_provider": "local", "providers": {"local": {"type": "local"}}}
            path.write_text(json.dumps(config))

    server = KmsWeed(tmp_path_factory.mktemp("kms-weed"))
    server.start()
    try:
        yield server.endpoint
    finally:
        server.close()


# The key the local KMS provider creates at start (an alias, as users often pass to SageMaker's KmsKeyId).
KMS_KEY = "alias/seaweedfs-default"


def test_kms_key_id_encrypts_every_committed_object(kms_server: S3Endpoint) -> None:
    so = kms_server.storage_options()
    fs = kms_server.filesystem()
    fs.mkdir("kms-data")
    sample = synth(
        "s3://kms-data/cap", SynthOptions(records=2_000, hours=2, endpoints=1, variants=1), storage_options=so
    )
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "engine",
            "realtime",
            sample.capture_root,
            "s3://kms-data/enc",
            "--kms-key-id",
            KMS_KEY,
            "-q",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env={**{k: v for k, v in os.environ.items() if not k.startswith("AWS_")}, **kms_server.env()},
    )
    assert proc.returncode == 0, proc.stderr
    fs.invalidate_cache()
    written = [p for p in fs.find("kms-data/enc") if "/_temporary/" not in p]
    assert any(p.endswith(".parquet") for p in written) and "kms-data/enc/_SUCCESS" in written
    for path in written:
        bucket, key = path.split("/", 1)
        head = fs.call_s3("head_object", Bucket=bucket, Key=key)
        assert head.get("ServerSideEncryption") == "aws:kms", path
        assert head.get("SSEKMSKeyId"), path
    # What an unencrypted run writes carries no SSE-KMS: the header above came from --kms-key-id.
    plain = run_realtime(sample.capture_root, "s3://kms-data/plain", options=RealtimeOptions(storage_options=so))
    assert plain.status == "committed"
    head = fs.call_s3("head_object", Bucket="kms-data", Key="plain/_SUCCESS")
    assert head.get("ServerSideEncryption") != "aws:kms"
    assert KMS_KEY not in proc.stdout + proc.stderr


def test_kms_key_id_needs_an_s3_destination(tmp_path: Any) -> None:
    with pytest.raises(OptionsError, match="s3://"):
        run_realtime(str(tmp_path), str(tmp_path / "out"), options=RealtimeOptions(kms_key_id="k"))
