"""The writer lock and the commit on S3 (SeaweedFS): a conditional create, taken over only when stale."""

from __future__ import annotations

import subprocess
import sys
from typing import TYPE_CHECKING

import orjson
import pytest

from engine import RealtimeOptions, run_realtime
from engine.errors import SinkError
from engine.sink import DestinationLock, committed_files
from engine.storage import open_location
from engine.synth import SynthOptions, synth

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
