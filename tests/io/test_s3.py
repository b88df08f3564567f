"""The engine against a real S3 endpoint (SeaweedFS on loopback): commit protocol, parity with local disk,
windowed listing, the CLI's settings and errors, an object store that dies in the middle of a run, and one that
throttles (through a fault-injecting proxy)."""

from __future__ import annotations

import errno
import gc
import json
import os
import re
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from engine import RealtimeOptions, SinkError, run_realtime
from engine.io.storage import open_location
from engine.synth import SynthOptions, SynthSummary, synth
from tests.conftest import ROOT

if TYPE_CHECKING:
    # Types only: importing the module before pytest loads it as a plugin would skip its assertion rewriting.
    import s3fs

    from tests.s3_server import FaultProxy, S3Endpoint, WeedServer

pytest_plugins = ["tests.s3_server"]
pytestmark = pytest.mark.s3

SAMPLE = SynthOptions(records=3000, hours=3)
START = SAMPLE.start
COLUMNS = [
    "endpoint",
    "variant",
    "event_id",
    "inference_id",
    "inference_time",
    "input_data",
    "output_data",
    "custom_attributes",
    "source_line",
]
ERROR_PREFIX = "capture-engine: error: "


def _fail_fast() -> dict[str, Any]:
    """s3fs `config_kwargs` without retries: a dead endpoint fails a request at once, not after botocore's
    backoff (seconds per call). A retry mode is given because botocore adds one in place otherwise, and a
    changed dict makes fsspec's instance cache hand the engine another client than the one hooked below."""
    return {"retries": {"mode": "standard", "total_max_attempts": 1}, "connect_timeout": 2}


# -- helpers ------------------------------------------------------------------------------------------------


def _files(fs: s3fs.S3FileSystem, path: str) -> list[str]:
    """Object keys under `path`, recursively. SeaweedFS keeps emptied folders as directory entries (S3 does
    not), so only entries of type file count as objects."""
    if not fs.exists(path):
        return []
    return sorted(name for name, info in fs.find(path, detail=True).items() if info["type"] == "file")


def _read(fs: s3fs.S3FileSystem, path: str) -> pa.Table:
    """The dataset as a reader sees it: hive partitions, `_`-prefixed entries (`_temporary`, `_SUCCESS`) ignored."""
    return ds.dataset(path, filesystem=fs, format="parquet", partitioning="hive").to_table()


def _rows(table: pa.Table, columns: list[str] = COLUMNS) -> pa.Table:
    # Partition columns come back as dictionary or int types depending on discovery; compare them as strings.
    cols = [table.column(c).cast(pa.string()) if c in ("endpoint", "variant") else table.column(c) for c in columns]
    return pa.table(cols, names=columns).sort_by([("event_id", "ascending"), ("source_line", "ascending")])


def _partition_counts(fs: s3fs.S3FileSystem, path: str) -> dict[str, int]:
    """Rows per partition directory, from the Parquet footers of the committed files."""
    counts: dict[str, int] = {}
    for f in _files(fs, path):
        rel = f[len(path) + 1 :]
        if rel.startswith("_") or not rel.endswith(".parquet"):
            continue
        with fs.open(f, "rb") as handle:
            rows = pq.read_metadata(handle).num_rows
        d = rel.rsplit("/", 1)[0]
        counts[d] = counts.get(d, 0) + rows
    return counts


def _success(fs: s3fs.S3FileSystem, path: str) -> dict[str, Any] | None:
    key = f"{path}/_SUCCESS"
    return json.loads(fs.cat_file(key)) if fs.exists(key) else None


def _engine_fs(url: str, storage_options: dict[str, Any]) -> s3fs.S3FileSystem:
    """The s3fs instance the engine will use for `url`: fsspec caches instances per options and thread."""
    fs = open_location(url, storage_options).fs
    fs.connect()  # creates the botocore client to hook; may edit nested options in place (see _fail_fast)
    assert open_location(url, storage_options).fs is fs  # hooks must sit on the engine's own client
    return fs


def _on_request(fs: s3fs.S3FileSystem, operation: str, handler: Callable[[dict[str, Any]], None]) -> None:
    """Call `handler(params)` before each `operation` request the client sends (botocore event hook)."""

    def hook(params: dict[str, Any], **_: Any) -> None:
        handler(params)

    fs.s3.meta.events.register(f"before-parameter-build.s3.{operation}", hook)


@pytest.fixture(scope="module")
def sample(s3_server: S3Endpoint) -> SynthSummary:
    """A read-only capture tree on S3 shared by the module: 3,000 events, 2 endpoints x 2 variants x 3 hours."""
    s3_server.filesystem().mkdir("sample-capture")
    return synth("s3://sample-capture/sample", SAMPLE, storage_options=s3_server.storage_options())


def _cli(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """`python -m engine ARGS` with exactly the AWS settings given (the test process has none)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    return subprocess.run(
        [sys.executable, "-m", "engine", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**base, **env},
        cwd=ROOT,
    )


# -- the commit protocol on S3 ------------------------------------------------------------------------------


def test_s3_run_commits_readable_partitions_and_rerun_replaces_them(
    s3_server: S3Endpoint, s3_bucket: str, sample: SynthSummary
) -> None:
    so = s3_server.storage_options()
    out = f"{s3_bucket}/out"
    first = run_realtime(sample.capture_root, f"s3://{out}", options=RealtimeOptions(storage_options=so))
    fs = s3_server.filesystem()

    assert first.status == "committed" and first.balanced
    assert first.records == first.rows_written == sample.events and first.rejected == 0
    assert first.objects == sample.files
    table = _read(fs, out)
    assert table.num_rows == first.rows_written
    # One partition per endpoint, variant and hour; the footers agree with the report.
    assert len(first.partitions) == 2 * 2 * SAMPLE.hours
    assert _partition_counts(fs, out) == first.partitions
    per_hour = table.group_by("hour").aggregate([("event_id", "count")]).to_pydict()
    assert sorted(zip(per_hour["hour"], per_hour["event_id_count"], strict=True)) == [
        (int(h[-2:]), n) for h, n in sorted(sample.events_per_hour.items())
    ]
    success = _success(fs, out)
    assert success is not None and success["run_id"] == first.run_id and success["rows_written"] == sample.events
    assert _files(fs, f"{out}/_temporary") == []

    second = run_realtime(sample.capture_root, f"s3://{out}", options=RealtimeOptions(storage_options=so))
    again = _read(fs, out)
    assert second.run_id != first.run_id
    assert again.num_rows == table.num_rows == sample.events  # replaced, not appended
    assert _rows(again).equals(_rows(table))
    parts = [f for f in _files(fs, out) if f.endswith(".parquet") and "/_" not in f]
    assert parts and all(second.run_id in f for f in parts)
    assert _success(fs, out)["run_id"] == second.run_id  # type: ignore[index]
    assert _files(fs, f"{out}/_temporary") == []


def test_s3_and_local_disk_give_the_same_rows(
    tmp_path: Path, s3_server: S3Endpoint, s3_bucket: str, sample: SynthSummary
) -> None:
    local = synth(str(tmp_path / "sample"), SAMPLE)  # the same options write byte-identical capture
    assert (local.events, local.files, local.capture_bytes) == (sample.events, sample.files, sample.capture_bytes)
    on_disk = run_realtime(local.capture_root, str(tmp_path / "out"))
    on_s3 = run_realtime(
        sample.capture_root,
        f"s3://{s3_bucket}/out",
        options=RealtimeOptions(storage_options=s3_server.storage_options()),
    )
    assert on_disk.partitions == on_s3.partitions
    a = ds.dataset(tmp_path / "out", format="parquet", partitioning="hive").to_table()
    b = _read(s3_server.filesystem(), f"{s3_bucket}/out")
    assert a.num_rows == b.num_rows == sample.events
    assert _rows(a).equals(_rows(b))
    # Only the provenance differs, and only by the root: file:///.../capture/... vs s3://bucket/.../capture/...
    assert _provenance(a, f"file://{local.capture_root}/") == _provenance(b, f"{sample.capture_root}/")


def _provenance(table: pa.Table, root: str) -> list[tuple[str, int]]:
    """(file relative to the capture root, line) of every row; fails if a file is not under `root`."""
    files, lines = table.column("source_file").to_pylist(), table.column("source_line").to_pylist()
    assert all(f.startswith(root) for f in files), (root, files[0])
    return sorted((f[len(root) :], line) for f, line in zip(files, lines, strict=True))


# -- listing only what a window needs -----------------------------------------------------------------------


_HOUR_KEY = re.compile(r"/(\d{4})/(\d{2})/(\d{2})/(\d{2})(?:/|$)")


def _hour_of(key: str) -> datetime | None:
    m = _HOUR_KEY.search(key)
    if m is None:
        return None
    year, month, day, hour = (int(g) for g in m.groups())
    return datetime(year, month, day, hour, tzinfo=timezone.utc)


def test_windowed_run_lists_and_reads_only_the_hours_of_the_window(s3_server: S3Endpoint, s3_bucket: str) -> None:
    tree = synth(
        f"s3://{s3_bucket}/sample",
        SynthOptions(records=1600, hours=8, records_per_file=100),
        storage_options=s3_server.storage_options(),
    )
    start, end = START + timedelta(hours=3), START + timedelta(hours=5)
    # Options of this test's own: the engine gets an s3fs client of its own, which we can watch.
    so = s3_server.storage_options(config_kwargs={"user_agent_extra": "windowed-listing-test"})
    fs = _engine_fs(tree.capture_root, so)
    listed: list[tuple[str, bool]] = []  # (prefix, recursive)
    fetched: list[str] = []
    _on_request(fs, "ListObjectsV2", lambda p: listed.append((p.get("Prefix", ""), not p.get("Delimiter"))))
    _on_request(fs, "GetObject", lambda p: fetched.append(p["Key"]))

    report = run_realtime(
        tree.capture_root, f"s3://{s3_bucket}/out", options=RealtimeOptions(storage_options=so, start=start, end=end)
    )

    # Of the capture tree the engine lists the endpoint and variant folders, then each hour of the window plus
    # one hour of slack on either side, recursively; no other hour, day, month or year is listed.
    capture = "sample/capture/"
    listed = [(p, r) for p, r in listed if p.startswith(capture)]  # (the same client also writes the output)
    wanted = {start - timedelta(hours=1) + timedelta(hours=i) for i in range(4)}
    assert {_hour_of(p) for p, r in listed if r} == wanted
    assert all(_hour_of(p) in wanted for p, r in listed if r)
    assert all(p.count("/") <= capture.count("/") + 2 for p, r in listed if not r)  # endpoint/variant/ at most
    assert sum(r for _, r in listed) == 2 * 2 * len(wanted)
    checker = s3_server.filesystem()
    in_window = [k for k in _files(checker, tree.capture_root[len("s3://") :]) if _hour_of(k) in wanted]
    everything = _files(checker, tree.capture_root[len("s3://") :])
    assert report.objects == len(in_window) < len(everything)
    assert sorted(f"{s3_bucket}/{k}" for k in fetched if k.startswith(capture)) == sorted(in_window)

    key = [f"{start + timedelta(hours=i):%Y-%m-%dT%H}" for i in range(2)]
    expected = sum(tree.events_per_hour[k] for k in key)
    assert report.rows_written == expected
    assert report.out_of_window == sum(tree.events_per_hour[f"{h:%Y-%m-%dT%H}"] for h in wanted) - expected
    table = _read(checker, f"{s3_bucket}/out")
    assert table.num_rows == expected
    times = table.column("inference_time").to_pylist()
    assert min(times) >= start and max(times) < end


# -- the CLI: settings from the environment or from flags, and its errors --------------------------------------


def _assert_secret_kept(secret: str, *texts: str) -> None:
    for text in texts:
        assert secret not in text


@pytest.mark.parametrize("settings", ["environment", "flags"])
def test_cli_on_s3(settings: str, s3_server: S3Endpoint, s3_bucket: str, sample: SynthSummary) -> None:
    dest = f"s3://{s3_bucket}/out"
    if settings == "environment":
        # AWS_ENDPOINT_URL_S3 & co. only: botocore resolves the endpoint, s3fs gets no storage options.
        proc = _cli("realtime", sample.capture_root, dest, env=s3_server.env())
    else:
        isolated = {k: v for k, v in s3_server.env().items() if k.endswith(("_FILE", "_DISABLED"))}
        flags = [
            f"key={s3_server.key}",
            f"secret={s3_server.secret}",
            f"client_kwargs.endpoint_url={s3_server.endpoint_url}",
            f"client_kwargs.region_name={s3_server.region}",
        ]
        proc = _cli(
            "realtime", sample.capture_root, dest, *(a for f in flags for a in ("--storage-option", f)), env=isolated
        )
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    fs = s3_server.filesystem()
    out = f"{s3_bucket}/out"
    assert _read(fs, out).num_rows == sample.events
    success = fs.cat_file(f"{out}/_SUCCESS").decode()
    assert json.loads(success)["status"] == "committed"
    _assert_secret_kept(s3_server.secret, proc.stdout, proc.stderr, success)
    assert _files(fs, f"{out}/_temporary") == []


def _unused_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # closed again: connecting to it is refused


def _wrong_secret(ep: S3Endpoint) -> dict[str, str]:
    return {**ep.env(), "AWS_SECRET_ACCESS_KEY": "wrong-" + ep.secret[::-1]}


def _unreachable(ep: S3Endpoint) -> dict[str, str]:
    # One attempt: botocore would otherwise back off and retry a refused connection for several seconds.
    return {**ep.env(), "AWS_ENDPOINT_URL_S3": f"http://127.0.0.1:{_unused_port()}", "AWS_MAX_ATTEMPTS": "1"}


@dataclass(frozen=True)
class Failure:
    source: str  # "{bucket}" and "{sample}" are filled in
    dest: str
    names: str  # the URI the message must name
    why: str  # what the message must say about it
    env: Callable[[S3Endpoint], dict[str, str]] = lambda ep: ep.env()


FAILURES = {
    "missing-bucket": Failure(
        "s3://no-such-bucket-ce/capture", "s3://{bucket}/out", "s3://no-such-bucket-ce/capture", "not found"
    ),
    "missing-prefix": Failure(
        "s3://{bucket}/no/such/prefix", "s3://{bucket}/out", "s3://{bucket}/no/such/prefix", "not found"
    ),
    "wrong-secret": Failure("{sample}", "s3://{bucket}/out", "{sample}", "access denied", _wrong_secret),
    "unreachable-endpoint": Failure(
        "{sample}", "s3://{bucket}/out", "{sample}", "cannot connect to the object store", _unreachable
    ),
    "missing-dest-bucket": Failure(
        "{sample}", "s3://no-such-bucket-ce/out", "s3://no-such-bucket-ce/out/", "not found"
    ),
}


@pytest.mark.parametrize("case", list(FAILURES))
def test_cli_s3_errors_are_one_line_naming_the_uri(
    case: str, s3_server: S3Endpoint, s3_bucket: str, sample: SynthSummary
) -> None:
    failure = FAILURES[case]

    def fill(text: str) -> str:
        return text.format(bucket=s3_bucket, sample=sample.capture_root)

    env = failure.env(s3_server)
    proc = _cli("realtime", fill(failure.source), fill(failure.dest), env=env)
    assert proc.returncode != 0
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(ERROR_PREFIX), lines[0]
    assert fill(failure.names) in lines[0] and failure.why in lines[0], lines[0]
    _assert_secret_kept(s3_server.secret, proc.stdout, proc.stderr)
    _assert_secret_kept(env["AWS_SECRET_ACCESS_KEY"], proc.stdout, proc.stderr)
    assert _files(s3_server.filesystem(), f"{s3_bucket}/out") == []  # nothing written, not even _SUCCESS


def test_cli_destination_that_refuses_writes(
    s3_server: S3Endpoint, s3_reader: S3Endpoint, s3_bucket: str, sample: SynthSummary
) -> None:
    # Read-only credentials: the capture is readable, the destination refuses the first upload.
    proc = _cli("realtime", sample.capture_root, f"s3://{s3_bucket}/out", env=s3_reader.env())
    assert proc.returncode != 0
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(ERROR_PREFIX + "cannot write (access denied): "), lines[0]
    assert f"s3://{s3_bucket}/out/" in lines[0]
    _assert_secret_kept(s3_reader.secret, proc.stdout, proc.stderr)
    assert _files(s3_server.filesystem(), f"{s3_bucket}/out") == []


# -- the object store dies in the middle of a run ----------------------------------------------------------


def _kill_on(fs: s3fs.S3FileSystem, server: WeedServer, operation: str, nth: int, key_part: str) -> list[str]:
    """Kill the server just before the `nth` `operation` request whose key contains `key_part` is sent."""
    seen: list[str] = []

    def maybe_kill(params: dict[str, Any]) -> None:
        key = str(params.get("Key", ""))
        if key_part in key:
            seen.append(key)
            if len(seen) == nth:
                server.kill()

    _on_request(fs, operation, maybe_kill)
    return seen


def _one_run_per_partition(fs: s3fs.S3FileSystem, out: str) -> dict[str, set[str]]:
    """Run ids of the committed files of every partition; each file must be a complete, readable Parquet file."""
    runs: dict[str, set[str]] = {}
    for f in _files(fs, out):
        rel = f[len(out) + 1 :]
        if rel.startswith("_") or not rel.endswith(".parquet"):
            continue
        with fs.open(f, "rb") as handle:
            pq.read_metadata(handle)  # raises on a truncated file (no footer)
        run = re.fullmatch(r"part-(.+)-\d{5}\.parquet", rel.rsplit("/", 1)[1])
        assert run is not None, rel
        runs.setdefault(rel.rsplit("/", 1)[0], set()).add(run.group(1))
    return runs


@pytest.mark.parametrize(
    ("phase", "operation", "nth", "key_part"),
    [
        ("write", "PutObject", 1, "/_temporary/"),  # the first upload of a new part file
        ("commit", "CopyObject", 3, ""),  # the third move of a part file into its partition
    ],
)
def test_store_dies_mid_run_nothing_half_committed_and_rerun_recovers(
    phase: str, operation: str, nth: int, key_part: str, weed_server: WeedServer
) -> None:
    ep = weed_server.endpoint
    fs = ep.filesystem()
    fs.mkdir("crash")
    tree = synth("s3://crash/sample", SAMPLE, storage_options=ep.storage_options())
    out = "crash/out"
    first = run_realtime(
        tree.capture_root, f"s3://{out}", options=RealtimeOptions(storage_options=ep.storage_options())
    )
    assert _one_run_per_partition(fs, out) == {p: {first.run_id} for p in first.partitions}

    doomed = ep.storage_options(config_kwargs=_fail_fast())
    seen = _kill_on(_engine_fs(tree.capture_root, doomed), weed_server, operation, nth, key_part)
    with pytest.raises(SinkError):
        run_realtime(tree.capture_root, f"s3://{out}", options=RealtimeOptions(storage_options=doomed))
    assert len(seen) == nth  # it did die where intended
    # A part file the failed run left open would try to upload when collected; make that happen in this test
    # (pytest turns the unraisable exception into an error) rather than in whichever test runs next.
    gc.collect()

    weed_server.start()  # same directory, same ports
    assert fs.exists(f"{out}/_SUCCESS") is False
    runs = _one_run_per_partition(fs, out)  # every file whole (never truncated)
    assert set(runs) <= set(first.partitions)
    if phase == "write":
        assert runs == {p: {first.run_id} for p in first.partitions}  # nothing of the failed run is visible
        assert _read(fs, out).num_rows == first.rows_written
    else:
        # Mid-commit the new files are moved in beside the old ones (a plain listing sees both in a few
        # partitions) while the dataset manifest, the atomic view, still names exactly the first run's files.
        assert any(r != {first.run_id} for r in runs.values())  # it was mid-commit
        manifest = orjson.loads(fs.cat_file(f"{out}/_manifest.json"))
        assert {e["run"] for f, e in manifest["files"].items() if not f.startswith("_")} == {first.run_id}
        assert sum(e["rows"] for f, e in manifest["files"].items() if not f.startswith("_")) == first.rows_written

    again = run_realtime(
        tree.capture_root, f"s3://{out}", options=RealtimeOptions(storage_options=ep.storage_options())
    )
    assert again.status == "committed"
    assert _one_run_per_partition(fs, out) == {p: {again.run_id} for p in again.partitions}
    assert _read(fs, out).num_rows == tree.events
    assert _success(fs, out)["run_id"] == again.run_id  # type: ignore[index]


def test_store_dies_mid_write_is_a_sink_error(weed_server: WeedServer) -> None:
    ep = weed_server.endpoint
    ep.filesystem().mkdir("crash")
    tree = synth("s3://crash/sample", SAMPLE, storage_options=ep.storage_options())
    doomed = ep.storage_options(config_kwargs=_fail_fast())
    seen = _kill_on(_engine_fs(tree.capture_root, doomed), weed_server, "PutObject", 1, "/_temporary/")
    try:
        run_realtime(tree.capture_root, "s3://crash/out", options=RealtimeOptions(storage_options=doomed))
    except Exception as exc:  # the type is what this test checks
        error: Exception | None = exc
    else:
        error = None
    gc.collect()
    if error is None:
        pytest.fail("the run did not fail")  # not an AssertionError: would not count as the expected failure
    if len(seen) != 1:
        pytest.fail(f"the server was not killed where intended: {seen}")
    assert isinstance(error, SinkError), repr(error)
    assert "s3://crash/out/" in str(error)


# -- an object store that throttles: retried with backoff, and a one-line error when it does not stop ----------------

# Retry settings of the persistent-throttling tests: botocore's standard mode, 2 attempts per call (one retry with
# backoff), so that the CLI gives up within seconds.
MAX_ATTEMPTS = 2
THROTTLING_DEADLINE = 30.0  # seconds; the runs below take about 1-3 s (a share throttled) and 2-8 s (all of it)


def _capture_prefix(sample: SynthSummary) -> tuple[str, str]:
    """(bucket, key prefix) of the sample's capture objects."""
    bucket, _, prefix = sample.capture_root[len("s3://") :].partition("/")
    return bucket, prefix + "/"


def test_throttled_gets_are_retried_and_the_run_completes(
    s3_server: S3Endpoint, s3_proxy: FaultProxy, s3_bucket: str, sample: SynthSummary
) -> None:
    from tests.s3_server import ThrottleObjectGets  # here, not at the top: see the TYPE_CHECKING import

    bucket, prefix = _capture_prefix(sample)
    s3_proxy.policy = ThrottleObjectGets(prefix, bucket=bucket)  # each capture object's first GET: 503 SlowDown
    # The client's default retry settings, as a user has them; source and destination both go through the proxy.
    options = RealtimeOptions(storage_options=s3_proxy.endpoint(s3_server).storage_options())
    t0 = time.monotonic()
    report = run_realtime(sample.capture_root, f"s3://{s3_bucket}/out", options=options)
    elapsed = time.monotonic() - t0

    assert report.status == "committed"
    assert (report.records, report.rows_written, report.rejected) == (sample.events, sample.events, 0)
    assert _read(s3_server.filesystem(), f"{s3_bucket}/out").num_rows == sample.events  # read past the proxy
    # Every capture object was refused once, then served to the retry: throttled responses were really served,
    # each one was retried, and no object was skipped or read twice.
    gets: dict[str, list[int]] = {}
    for e in s3_proxy.log:
        if e.request.is_object_get and e.request.bucket == bucket and e.request.key.startswith(prefix):
            gets.setdefault(e.request.key, []).append(e.status)
    assert len(gets) == sample.files
    assert all(statuses == [503, 200] for statuses in gets.values()), gets
    assert sum(e.throttled for e in s3_proxy.log) == sample.files
    assert s3_proxy.errors == []
    assert elapsed < THROTTLING_DEADLINE  # one backoff of a second at most, the objects fetched in parallel


@pytest.mark.parametrize("throttled", ["every-request", "every-object-get"])
def test_cli_persistent_throttling_is_one_line_after_bounded_retries(
    throttled: str, s3_server: S3Endpoint, s3_proxy: FaultProxy, s3_bucket: str, sample: SynthSummary
) -> None:
    from tests.s3_server import ThrottleObjectGets, throttle_everything  # see the TYPE_CHECKING import

    bucket, prefix = _capture_prefix(sample)
    # every-request: the first request (the HEAD probing the source) is refused. every-object-get: the listing
    # passes, each object's GETs are refused, which s3fs retries on top of botocore (it recognises SlowDown).
    everything = throttled == "every-request"
    s3_proxy.policy = (
        throttle_everything if everything else ThrottleObjectGets(prefix, bucket=bucket, times=sys.maxsize)
    )
    env = {**s3_proxy.endpoint(s3_server).env(), "AWS_RETRY_MODE": "standard", "AWS_MAX_ATTEMPTS": str(MAX_ATTEMPTS)}
    t0 = time.monotonic()
    proc = _cli("realtime", sample.capture_root, f"s3://{s3_bucket}/out", env=env)
    elapsed = time.monotonic() - t0

    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr  # no traceback, no retry chatter
    line = lines[0]
    why = "HTTP 503" if everything else "SlowDown"  # a HEAD answer has no body, so no error code but its status
    assert line.startswith(f"{ERROR_PREFIX}cannot read (throttled by the object store: {why} even after retries): ")
    uri = line.rsplit("): ", 1)[1]
    if everything:
        assert uri == sample.capture_root, line  # the source itself: its probe was the first request
    else:
        assert uri.startswith(sample.capture_root + "/") and uri.endswith(".jsonl"), line  # the object refused
    _assert_secret_kept(s3_server.secret, proc.stdout, proc.stderr)

    # Retried, but boundedly: at most botocore's attempts times s3fs's own tries for any one request.
    import s3fs

    log = s3_proxy.log
    tries = Counter((e.request.method, e.request.bucket, e.request.key) for e in log if e.throttled)
    assert tries and MAX_ATTEMPTS <= max(tries.values()) <= MAX_ATTEMPTS * s3fs.S3FileSystem.retries, tries
    assert all(e.throttled for e in log if everything or e.request.is_object_get)  # nothing got through
    assert s3_proxy.errors == []
    assert elapsed < THROTTLING_DEADLINE
    assert _files(s3_server.filesystem(), f"{s3_bucket}/out") == []  # nothing written, not even _SUCCESS


@pytest.mark.parametrize(
    ("code", "status", "text"),
    [
        ("SlowDown", 503, "throttled by the object store: SlowDown even after retries"),
        ("503", 503, "throttled by the object store: HTTP 503 even after retries"),  # a HEAD: no body, no code
        ("Throttling", 400, "throttled by the object store: Throttling even after retries"),
        ("TooManyRequests", 429, "throttled by the object store: TooManyRequests even after retries"),
        # s3fs maps a 409 conflict to EBUSY too, which is not throttling: the store's own message is shown.
        ("OperationAborted", 409, f"[Errno {errno.EBUSY}] A conflicting conditional operation is in progress."),
    ],
)
def test_store_error_codes_to_one_line(code: str, status: int, text: str) -> None:
    from botocore.exceptions import ClientError
    from s3fs.errors import translate_boto_error

    from engine.errors import SourceError
    from engine.io.storage import translate_errors

    message = "A conflicting conditional operation is in progress." if status == 409 else "Please slow down."
    response: Any = {"Error": {"Code": code, "Message": message}, "ResponseMetadata": {"HTTPStatusCode": status}}
    # As s3fs raises it: the ClientError turned into an OSError by its code, the ClientError as the cause.
    with pytest.raises(SourceError) as raised, translate_errors("s3://b/k.jsonl"):
        raise translate_boto_error(ClientError(response, "GetObject"))
    assert str(raised.value) == f"cannot read ({text}): s3://b/k.jsonl"
