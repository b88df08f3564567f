"""The writer lock and the commit on S3 (SeaweedFS): a conditional create, taken over only when stale."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import TYPE_CHECKING

import orjson
import pyarrow.parquet as pq
import pytest

from engine import RealtimeOptions, run_realtime
from engine.errors import SinkError
from engine.io.storage import open_location
from engine.sinks.lock import DestinationLock
from engine.sinks.manifest import committed_files
from engine.synth import SynthOptions, synth
from tests.conftest import ROOT

if TYPE_CHECKING:
    from tests.s3_server import S3Endpoint

pytest_plugins = ["tests.s3_server"]
pytestmark = pytest.mark.s3


def test_a_second_writer_on_s3_fails_and_a_dead_owners_lock_is_taken_over(
    s3_server: S3Endpoint, s3_bucket: str
) -> None:
    so = s3_server.storage_options()
    tree = synth(f"s3://{s3_bucket}/sample", SynthOptions(records=300, hours=1), storage_options=so)
    dest = f"s3://{s3_bucket}/out"
    loc = open_location(dest, so)
    lock = DestinationLock(loc, "20260101T000000-0000beef")
    lock.acquire()
    try:
        with pytest.raises(SinkError, match="another run is writing this destination"):
            DestinationLock(open_location(dest, so), "20260101T000000-0000cafe").acquire()
        with pytest.raises(SinkError, match="another run is writing this destination"):
            run_realtime(tree.capture_root, dest, options=RealtimeOptions(storage_options=so))
    finally:
        lock.release()
    # A lock left by a process that is gone (SIGKILL: no heartbeat, no release) is stale at once on its host.
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    info = orjson.loads(DestinationLock(loc, "20260101T000000-00000dead")._info())
    info["pid"] = int(dead.stdout)
    s3_server.filesystem().pipe_file(f"{s3_bucket}/out/_lock", orjson.dumps(info))
    report = run_realtime(tree.capture_root, dest, options=RealtimeOptions(storage_options=so))
    assert report.status == "committed"
    assert len(committed_files(dest, so)) == len(report.partitions)
    assert not s3_server.filesystem().exists(f"{s3_bucket}/out/_lock")  # released


@pytest.mark.parametrize("phase", ["commit:plan", "commit:move", "commit:delete"])
def test_sigkill_during_a_commit_on_s3_and_the_rerun_completes(
    s3_server: S3Endpoint, s3_bucket: str, phase: str
) -> None:
    so = s3_server.storage_options()
    fs = s3_server.filesystem()
    tree = synth(f"s3://{s3_bucket}/sample", SynthOptions(records=400, hours=2), storage_options=so)
    dest = f"s3://{s3_bucket}/out"
    first = run_realtime(tree.capture_root, dest, options=RealtimeOptions(storage_options=so))
    env = {**s3_server.env(), "CAPTURE_ENGINE_TEST_PHASE": f"{phase}:kill"}
    base = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "CAPTURE_ENGINE_"))}
    proc = subprocess.run(
        [sys.executable, "-m", "engine", "realtime", tree.capture_root, dest],
        capture_output=True,
        text=True,
        timeout=120,
        env={**base, **env},
        cwd=ROOT,
    )
    assert proc.returncode == -9, proc.stderr
    manifest = orjson.loads(fs.cat_file(f"{s3_bucket}/out/_manifest.json"))
    runs = {e["run"] for f, e in manifest["files"].items() if not f.startswith("_")}
    assert runs == {first.run_id} if phase != "commit:delete" else runs != {first.run_id}
    again = run_realtime(tree.capture_root, dest, options=RealtimeOptions(storage_options=so))
    files = [p for p in fs.find(f"{s3_bucket}/out") if p.endswith(".parquet") and "/_" not in p]
    assert sorted(files) == sorted(p for p in committed_files(dest, so))
    assert sum(pq.read_metadata(fs.open(p)).num_rows for p in files) == again.rows_written == tree.events
    # (SeaweedFS may keep an empty folder entry; no object of any run is left in it.)
    assert [p for p in fs.find(f"{s3_bucket}/out/_temporary") if "." in p.rsplit("/", 1)[-1]] == []


def test_a_manifest_cannot_steer_the_run_to_another_bucket(s3_server: S3Endpoint, s3_bucket: str) -> None:
    from engine import BatchOptions, run_batch

    fs = s3_server.filesystem()
    other = f"{s3_bucket[:50]}-other"
    fs.mkdir(other)
    fs.pipe_file(f"{other}/out/a.csv.out", b"0.5,1f1d57b1-2e6f-488c-8c30-db4e6d757861,2022-08-30T00:49:15Z\n")
    fs.pipe_file(f"{s3_bucket}/out/a.csv.out", b"0.5,1f1d57b1-2e6f-488c-8c30-db4e6d757861,2022-08-30T00:49:15Z\n")
    manifest = [{"prefix": f"s3://{other}/out/"}, "a.csv.out"]
    fs.pipe_file(f"{s3_bucket}/capture/output/2022/08/30/00/m.json", orjson.dumps(manifest))
    so = s3_server.storage_options()
    options = BatchOptions(storage_options=so, max_reject_ratio=1.0)
    report = run_batch(f"s3://{s3_bucket}/capture", f"s3://{s3_bucket}/dest", options=options)
    assert report.rows_written == 0 and report.rejects_by_reason == {"outside_allowed_root": 1}
    # The same object in the source's own bucket is read.
    fs.pipe_file(
        f"{s3_bucket}/capture/output/2022/08/30/00/m.json",
        orjson.dumps([{"prefix": f"s3://{s3_bucket}/out/"}, "a.csv.out"]),
    )
    report = run_batch(f"s3://{s3_bucket}/capture", f"s3://{s3_bucket}/dest", options=options)
    assert report.rows_written == 1 and report.rejected == 0
