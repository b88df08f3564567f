"""The commit under attack: kills at every phase, signals, concurrent writers, cut hours, the manifest, schemas."""

from __future__ import annotations

import itertools
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import orjson
import polars as pl
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from engine import RealtimeOptions, run_realtime
from engine.errors import OptionsError, RejectLimitError, SinkError
from engine.io.storage import open_location
from engine.sinks.lock import DestinationLock
from engine.sinks.manifest import committed_files, read_manifest
from tests.commit_checks import (
    PHASES,
    TERM_COMMITS_FROM,
    check_killed,
    manifest_rows,
    plain_rows,
    run_cli,
    success_run,
    write_tree,
)
from tests.conftest import ROOT, WriteCapture, record

# A seeded subset of the kill campaign (tests/campaigns/kill_campaign.py runs every phase many times).
KILL_PHASES = ["commit:plan", "commit:journal", "commit:move", "commit:delete"]


def _committed(tmp_path: Path) -> tuple[Path, Path, list[tuple[str, str, str]], list[tuple[str, str, str]]]:
    """DEST committed from input version 1, the capture now at version 2, and the rows of both."""
    capture, out = tmp_path / "capture", tmp_path / "out"
    write_tree(capture, 2)
    new_dir = tmp_path / "clean"
    run_realtime(str(capture), str(new_dir))
    new = plain_rows(new_dir)
    write_tree(capture, 1)
    for h in capture.glob("*/AllTraffic/2026/11/01/13"):
        for f in h.iterdir():
            f.unlink()
    run_realtime(str(capture), str(out))
    old = plain_rows(out)
    write_tree(capture, 2)
    assert old and new and old != new
    return capture, out, old, new


@pytest.mark.parametrize("phase", KILL_PHASES)
def test_sigkill_at_a_commit_phase_leaves_a_consistent_dataset(tmp_path: Path, phase: str) -> None:
    capture, out, old, new = _committed(tmp_path)
    proc = run_cli("realtime", str(capture), str(out), env={"CAPTURE_ENGINE_TEST_PHASE": f"{phase}:kill"})
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert check_killed(out, phase, old, new) == []
    # The next run completes (or discards) what the killed one left, and ends with the same rows as a clean run.
    run_realtime(str(capture), str(out))
    assert plain_rows(out) == manifest_rows(out) == new
    assert not (out / "_temporary").exists()


@pytest.mark.parametrize("phase", ["commit:start", "commit:plan", "commit:report"])
def test_sigterm_during_the_commit_says_what_was_committed(tmp_path: Path, phase: str) -> None:
    capture, out, old, new = _committed(tmp_path)
    proc = run_cli("realtime", str(capture), str(out), env={"CAPTURE_ENGINE_TEST_PHASE": f"{phase}:term"})
    assert proc.returncode == 130, proc.stderr
    assert "Traceback" not in proc.stderr and "Bad file descriptor" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    if PHASES.index(phase) >= TERM_COMMITS_FROM:
        # Past the point of no return the commit is completed, and the message says so.
        assert last.startswith("capture-engine: interrupted after the run committed"), last
        assert plain_rows(out) == manifest_rows(out) == new
        assert success_run(out) is not None
    else:
        assert last.startswith("capture-engine: interrupted; nothing was committed"), last
        assert plain_rows(out) == manifest_rows(out) == old
        assert success_run(out) is None
    assert not (out / "_temporary").exists()


def test_sigterm_at_random_times_never_duplicates(tmp_path: Path) -> None:
    capture, out, old, new = _committed(tmp_path)
    rng = random.Random(12)
    for _ in range(2):
        proc = subprocess.Popen(
            [sys.executable, "-m", "engine", "realtime", str(capture), str(out)],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        time.sleep(rng.uniform(0.3, 2.5))
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        assert "Traceback" not in err
        m = manifest_rows(out)
        if proc.returncode == -signal.SIGTERM:
            # Only while the interpreter starts, before the engine's first import, does SIGTERM still kill:
            # nothing can have changed then.
            assert err == "" and m == old == plain_rows(out)
            continue
        assert proc.returncode in (0, 130), err
        assert m in (old, new)
        if proc.returncode == 0 or "after the run committed" in err:
            assert m == new == plain_rows(out)
        elif "nothing was committed" in err:
            assert m == plain_rows(out)
        old = m


def test_a_concurrent_writer_fails_with_one_line(tmp_path: Path) -> None:
    capture, out = tmp_path / "capture", tmp_path / "out"
    write_tree(capture, 1)
    lock = DestinationLock(open_location(str(out)), "20260101T000000-deadbeef")
    lock.acquire()
    try:
        proc = run_cli("realtime", str(capture), str(out))
        assert proc.returncode == 1
        assert proc.stderr.count("\n") == 1, proc.stderr
        assert "another run is writing this destination (run 20260101T000000-deadbeef" in proc.stderr
        with pytest.raises(SinkError, match="another run"):
            run_realtime(str(capture), str(out))
    finally:
        lock.release()
    run_realtime(str(capture), str(out))  # released: the next run goes ahead


def test_two_runs_at_once_one_commits_no_duplicates(tmp_path: Path) -> None:
    capture, out = tmp_path / "capture", tmp_path / "out"
    write_tree(capture, 1, records=2000)
    cmd = [sys.executable, "-m", "engine", "realtime", str(capture), str(out)]
    procs = [subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)]
    procs.append(subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
    results = [(p.returncode, p.communicate(timeout=120)[1]) for p in procs]
    results = [(p.returncode, err) for p, (_, err) in zip(procs, results, strict=True)]
    codes = sorted(code for code, _ in results)
    assert codes[0] == 0 and codes[1] in (0, 1), results
    for code, err in results:
        if code == 1:
            assert "another run is writing this destination" in err
    rows = plain_rows(out)
    assert len(rows) == len(set(rows)) == 2 * 3 * 2000
    assert manifest_rows(out) == rows


def test_stale_temporary_of_a_dead_run_is_removed(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    capture, out = tmp_path / "capture", tmp_path / "out"
    write_tree(capture, 1)
    proc = run_cli("realtime", str(capture), str(out), env={"CAPTURE_ENGINE_TEST_PHASE": "commit:start:kill"})
    assert proc.returncode == -signal.SIGKILL
    (dead,) = (out / "_temporary").iterdir()
    assert list(dead.glob("**/*.parquet"))
    with caplog.at_level("WARNING", logger="engine"):
        run_realtime(str(capture), str(out))
    assert not (out / "_temporary").exists()
    assert f"removed the temporary files of run {dead.name}" in caplog.text


def _minute_tree(write_capture: WriteCapture) -> None:
    for h in (0, 1, 2):
        lines = [record(f"e{h}-{m}", f"2026-11-01T{h:02d}:{m:02d}:30Z") for m in range(60)]
        write_capture(f"2026/11/01/{h:02d}", lines)


WINDOWS = [
    ("2026-11-01T00", "2026-11-01T01"),
    ("2026-11-01T01", "2026-11-01T02"),
    ("2026-11-01T01:30", "2026-11-01T02"),
    ("2026-11-01T00:15", "2026-11-01T02:45"),
    ("2026-11-01T00:40", "2026-11-01T01:20"),
    ("2026-11-01T02", "2026-11-01T03"),
]


def test_windows_that_cut_hours_in_any_order_equal_one_run_over_the_union(
    tmp_path: Path, write_capture: WriteCapture
) -> None:
    _minute_tree(write_capture)
    src = str(tmp_path / "capture")
    union = tmp_path / "union"
    run_realtime(src, str(union), options=RealtimeOptions(start="2026-11-01T00", end="2026-11-01T03"))
    expected = plain_rows(union)
    assert len(expected) == 180
    orders = list(itertools.permutations(WINDOWS))
    for n, order in enumerate(random.Random(7).sample(orders, 4)):
        out = tmp_path / f"out{n}"
        for start, end in order:
            run_realtime(src, str(out), options=RealtimeOptions(start=start, end=end))
        assert plain_rows(out) == manifest_rows(out) == expected, order
        # Re-running one window changes nothing and duplicates nothing.
        run_realtime(src, str(out), options=RealtimeOptions(start="2026-11-01T01:30", end="2026-11-01T02"))
        assert plain_rows(out) == expected


def test_a_run_never_removes_rows_outside_its_window(tmp_path: Path, write_capture: WriteCapture) -> None:
    _minute_tree(write_capture)
    src, out = str(tmp_path / "capture"), tmp_path / "out"
    run_realtime(src, str(out), options=RealtimeOptions(start="2026-11-01T00", end="2026-11-01T02"))
    report = run_realtime(src, str(out), options=RealtimeOptions(start="2026-11-01T01:30", end="2026-11-01T02"))
    assert report.counts["rows_kept_from_cut_hours"] == 30
    rows = plain_rows(out)
    assert len(rows) == len(set(rows)) == 120


def test_a_rerun_replaces_an_hour_whose_lines_all_became_invalid(tmp_path: Path, write_capture: WriteCapture) -> None:
    write_capture("2026/11/01/10", [record("a", "2026-11-01T10:00:00Z"), record("b", "2026-11-01T10:01:00Z")])
    path = write_capture("2026/11/01/11", [record("c", "2026-11-01T11:00:00Z")], name="00-00-000-b.jsonl")
    src, out = str(tmp_path / "capture"), tmp_path / "out"
    run_realtime(src, str(out))
    assert len(plain_rows(out)) == 3
    write_capture("2026/11/01/10", ["oops", "{"])
    report = run_realtime(src, str(out), options=RealtimeOptions(max_reject_ratio=1.0))
    assert report.rows_written == 1 and report.rejected == 2
    assert [r[1] for r in plain_rows(out)] == ["c"]  # hour 10 replaced by nothing, hour 11 as before
    assert path.exists()


def test_only_files_the_engine_wrote_are_deleted(tmp_path: Path, write_capture: WriteCapture) -> None:
    write_capture("2026/11/01/10", [record("a", "2026-11-01T10:00:00Z")])
    src, out = str(tmp_path / "capture"), tmp_path / "out"
    run_realtime(src, str(out))
    (part,) = out.glob("endpoint=*/**/hour=10")
    foreign = part / "part-mine.parquet"
    pq.write_table(pq.read_table(next(part.glob("*.parquet"))), foreign)
    run_realtime(src, str(out))
    assert foreign.exists()


def test_the_manifest_records_every_committed_run(tmp_path: Path, write_capture: WriteCapture) -> None:
    _minute_tree(write_capture)
    src, out = str(tmp_path / "capture"), tmp_path / "out"
    a = run_realtime(src, str(out), options=RealtimeOptions(start="2026-11-01T00", end="2026-11-01T01"))
    b = run_realtime(src, str(out), options=RealtimeOptions(start="2026-11-01T01", end="2026-11-01T03"))
    manifest = read_manifest(open_location(str(out)))
    assert manifest is not None
    assert [r["run_id"] for r in manifest["runs"]] == [a.run_id, b.run_id]
    assert manifest["runs"][0]["window"] == {"start": "2026-11-01T00:00:00Z", "end": "2026-11-01T01:00:00Z"}
    assert sum(manifest["runs"][1]["partitions"].values()) == 120
    on_disk = sorted(str(p.relative_to(out)) for p in out.glob("endpoint=*/**/*.parquet"))
    assert sorted(f for f in manifest["files"] if not f.startswith("_")) == on_disk
    assert sum(e["rows"] for f, e in manifest["files"].items() if not f.startswith("_")) == 180
    files = committed_files(str(out))
    assert ds.dataset(files, format="parquet", partitioning="hive", partition_base_dir=str(out)).count_rows() == 180


def test_a_failed_run_writes_its_report_and_names_the_reasons(
    tmp_path: Path, write_capture: WriteCapture, run_cli: object
) -> None:
    write_capture("2026/11/01/10", [record("a", "2026-11-01T10:00:00Z"), "oops", "{}", "[1]"])
    out = tmp_path / "out"
    proc = run_cli("realtime", str(tmp_path / "capture"), str(out))  # type: ignore[operator]
    assert proc.returncode == 3
    assert proc.stderr.count("\n") == 1
    assert "invalid_json 1" in proc.stderr and "missing_event_id 1" in proc.stderr and "_FAILED" in proc.stderr
    failed = orjson.loads((out / "_FAILED").read_bytes())
    assert failed["status"] == "failed" and failed["rejected"] == 3
    assert failed["rejects_by_reason"]["invalid_json"] == 1
    assert not (out / "_SUCCESS").exists()
    write_capture("2026/11/01/10", [record("a", "2026-11-01T10:00:00Z")])
    run_realtime(str(tmp_path / "capture"), str(out))
    assert not (out / "_FAILED").exists() and (out / "_SUCCESS").exists()
    with pytest.raises(RejectLimitError):
        write_capture("2026/11/01/10", ["oops"])
        run_realtime(str(tmp_path / "capture"), str(out))


def test_a_destination_inside_the_source_is_refused(tmp_path: Path, write_capture: WriteCapture) -> None:
    write_capture("2026/11/01/10", [record("a", "2026-11-01T10:00:00Z")])
    src = tmp_path / "capture"
    proc = run_cli("realtime", str(src), str(src / "out"))
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and "inside the source" in proc.stderr
    for dest in (str(src), str(src / "ep" / "x"), f"file://{src}/y", f"{src}/../capture/z"):
        with pytest.raises(OptionsError, match="inside the source"):
            run_realtime(str(src), dest)
    assert not (src / "out").exists()


def _json_event(event_id: str, time_: str, body: str) -> str:
    return (
        '{"captureData":{"endpointInput":{"observedContentType":"application/json","mode":"INPUT","data":'
        + orjson.dumps(body).decode()
        + ',"encoding":"JSON"},"endpointOutput":{"observedContentType":"application/json","mode":"OUTPUT",'
        '"data":"{\\"score\\": 0.5}","encoding":"JSON"}},"eventMetadata":{"eventId":"'
        + event_id
        + '","inferenceTime":"'
        + time_
        + '"},"eventVersion":"0"}'
    )


def test_every_table_has_one_schema_in_all_its_files(tmp_path: Path, write_capture: WriteCapture) -> None:
    # Hour 10 has field a only; hour 11 adds field b; a later run over hour 12 adds c (int in 12, so a's
    # type widens int -> float when hour 12 has a float).
    write_capture("2026/11/01/10", [_json_event(f"x{i}", "2026-11-01T10:00:00Z", '{"a": 1}') for i in range(5)])
    write_capture(
        "2026/11/01/11", [_json_event(f"y{i}", "2026-11-01T11:00:00Z", '{"a": 2, "b": "s"}') for i in range(5)]
    )
    src, out = str(tmp_path / "capture"), tmp_path / "out"
    run_realtime(src, str(out), options=RealtimeOptions(decode=True))
    write_capture(
        "2026/11/01/12", [_json_event(f"z{i}", "2026-11-01T12:00:00Z", '{"a": 2.5, "c": 3}') for i in range(5)]
    )
    report = run_realtime(
        src, str(out), options=RealtimeOptions(decode=True, start="2026-11-01T12", end="2026-11-01T13")
    )
    assert report.counts.get("schema_rewrites", 0) >= 2
    files = sorted(out.glob("endpoint=*/**/*.parquet"))
    schemas = {pq.read_schema(f).remove_metadata() for f in files}
    assert len(schemas) == 1, schemas
    (schema,) = schemas
    assert {"a", "b", "c"} <= set(schema.names)
    # Every reader reads every column with no options.
    table = ds.dataset(out, partitioning="hive").to_table()
    assert table.num_rows == 15 and table.column("b").null_count == 10
    df = pl.scan_parquet(f"{out}/endpoint=*/**/*.parquet", hive_partitioning=True).collect()
    assert df.height == 15 and df["c"].null_count() == 10
    n = duckdb.connect().execute(f"select count(c) from read_parquet('{out}/endpoint=*/**/*.parquet')").fetchone()
    assert n == (5,)
    assert sorted(committed_files(str(out))) == sorted(str(f) for f in files)


def test_an_endpoint_name_too_long_for_a_folder_is_kept(tmp_path: Path, write_capture: WriteCapture) -> None:
    long_name = "é" * 100  # 200 bytes of UTF-8, 900 once hive-escaped
    write_capture("2026/11/01/10", [record("a", "2026-11-01T10:00:00Z")], endpoint=long_name)
    write_capture("2026/11/01/10", [record("b", "2026-11-01T10:00:00Z")], endpoint=long_name + "x")
    out = tmp_path / "out"
    report = run_realtime(str(tmp_path / "capture"), str(out))
    assert report.rows_written == 2
    folders = {p.name for p in out.glob("endpoint=*")}
    assert len(folders) == 2 and all(len(f.encode()) <= 255 for f in folders)
    table = ds.dataset(out, partitioning="hive").to_table()
    assert table.num_rows == 2
    assert all(long_name in f for f in table.column("source_file").to_pylist())  # the full name is kept there


def test_an_endpoint_named_like_the_hive_null_is_not_read_as_null(tmp_path: Path, write_capture: WriteCapture) -> None:
    write_capture("2026/11/01/10", [record("a", "2026-11-01T10:00:00Z")], endpoint="__HIVE_DEFAULT_PARTITION__")
    out = tmp_path / "out"
    run_realtime(str(tmp_path / "capture"), str(out))
    (endpoint,) = ds.dataset(out, partitioning="hive").to_table().column("endpoint").to_pylist()
    assert endpoint is not None and endpoint.startswith("__HIVE_DEFAULT_PARTITION__~")
    df = pl.scan_parquet(f"{out}/endpoint=*/**/*.parquet", hive_partitioning=True).collect()
    assert df["endpoint"].null_count() == 0


def test_a_misspelt_storage_option_is_an_options_error(tmp_path: Path) -> None:
    proc = run_cli(
        "realtime",
        "s3://bucket/capture",
        str(tmp_path / "out"),
        "--storage-option",
        "bogus_option=1",
        "--storage-option",
        "client_kwargs.endpoint_url=http://127.0.0.1:9",
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and "invalid --storage-option" in proc.stderr


def test_sigterm_while_the_program_starts_ends_with_a_message(tmp_path: Path) -> None:
    capture, out = tmp_path / "capture", tmp_path / "out"
    write_tree(capture, 1, records=20)
    proc = subprocess.Popen(
        [sys.executable, "-m", "engine", "realtime", str(capture), str(out)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    maps = Path(f"/proc/{proc.pid}/maps")
    deadline = time.monotonic() + 30
    # Arrow's library is mapped while the engine package imports its modules, long before the CLI's main().
    while time.monotonic() < deadline and "libarrow" not in maps.read_text():
        time.sleep(0.002)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1].startswith("capture-engine: interrupted; nothing was committed")
    assert not (out / "_SUCCESS").exists()


def test_a_dataset_written_before_manifests_is_taken_over(tmp_path: Path, write_capture: WriteCapture) -> None:
    _minute_tree(write_capture)
    src, out = str(tmp_path / "capture"), tmp_path / "out"
    run_realtime(src, str(out))
    (out / "_manifest.json").unlink()  # as an older engine left it
    run_realtime(src, str(out), options=RealtimeOptions(start="2026-11-01T01:30", end="2026-11-01T02"))
    rows = plain_rows(out)
    assert len(rows) == len(set(rows)) == 180
    assert manifest_rows(out) == rows
