"""The Parquet dataset: hive layout, read back identically by pyarrow, polars and DuckDB, idempotent, crash-safe."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import timezone
from pathlib import Path

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from engine import RealtimeOptions, run_realtime
from tests.conftest import ROOT, WriteCapture, record

COLUMNS = ["event_id", "inference_id", "inference_time", "input_data", "output_data", "source_file", "source_line"]


def _tree(write_capture: WriteCapture) -> None:
    for ep in ("ep-a", "ep-b"):
        for h in (22, 23):
            lines = [
                record(f"{ep}-{h}-{i}", f"2026-11-01T{h}:{i % 60:02d}:00Z", inference_id=str(i) if i % 2 else None)
                for i in range(30)
            ]
            # One record crosses into the next day: it belongs to the partition of its own hour.
            lines.append(record(f"{ep}-{h}-late", "2026-11-02T00:00:01Z"))
            write_capture(f"2026/11/01/{h}", lines, endpoint=ep, name=f"00-00-000-{h}.jsonl")


def test_layout_is_hive_zero_padded_and_utc(tmp_path: Path, write_capture: WriteCapture) -> None:
    _tree(write_capture)
    report = run_realtime(str(tmp_path / "capture"), str(tmp_path / "out"))
    out = tmp_path / "out"
    dirs = sorted(str(p.parent.relative_to(out)) for p in out.glob("endpoint=*/**/*.parquet"))
    assert dirs == [
        "endpoint=ep-a/variant=AllTraffic/year=2026/month=11/day=01/hour=22",
        "endpoint=ep-a/variant=AllTraffic/year=2026/month=11/day=01/hour=23",
        "endpoint=ep-a/variant=AllTraffic/year=2026/month=11/day=02/hour=00",
        "endpoint=ep-b/variant=AllTraffic/year=2026/month=11/day=01/hour=22",
        "endpoint=ep-b/variant=AllTraffic/year=2026/month=11/day=01/hour=23",
        "endpoint=ep-b/variant=AllTraffic/year=2026/month=11/day=02/hour=00",
    ]
    assert report.partitions["endpoint=ep-a/variant=AllTraffic/year=2026/month=11/day=02/hour=00"] == 2
    assert (out / "_SUCCESS").exists() and not (out / "_temporary").exists()
    # Partition columns live in directory names, not in the files.
    f = next(out.glob("endpoint=*/**/*.parquet"))
    assert "endpoint" not in pq.read_schema(f).names
    assert pq.read_schema(f).field("inference_time").type == pa.timestamp("us", tz="UTC")


def test_pyarrow_polars_duckdb_read_the_same_rows(tmp_path: Path, write_capture: WriteCapture) -> None:
    _tree(write_capture)
    run_realtime(str(tmp_path / "capture"), str(tmp_path / "out"))
    out = tmp_path / "out"
    cols = [*COLUMNS, "endpoint", "variant", "year", "month", "day", "hour"]

    def rows(table: pa.Table) -> list[tuple[object, ...]]:
        table = table.select(cols)
        out_rows = []
        for r in table.to_pylist():
            t = r["inference_time"]
            r["inference_time"] = t.astimezone(timezone.utc).isoformat()
            r.update({k: int(r[k]) for k in ("year", "month", "day", "hour")})
            out_rows.append(tuple(r[c] for c in cols))
        return sorted(out_rows)

    a = ds.dataset(out, partitioning="hive").to_table()
    b = pl.scan_parquet(f"{out}/endpoint=*/**/*.parquet", hive_partitioning=True).collect().to_arrow()
    c = duckdb.sql(f"select * from read_parquet('{out}/endpoint=*/**/*.parquet', hive_partitioning=true)").arrow()
    if not isinstance(c, pa.Table):  # newer DuckDB returns a RecordBatchReader
        c = c.read_all()
    ra, rb, rc = rows(a), rows(b), rows(c)
    assert len(ra) == 124
    assert ra == rb == rc
    assert {r[-1] for r in ra} == {22, 23, 0}


def test_rerun_replaces_partitions_no_duplicates(tmp_path: Path, write_capture: WriteCapture) -> None:
    _tree(write_capture)
    src, out = str(tmp_path / "capture"), str(tmp_path / "out")
    first = run_realtime(src, out)
    rows1 = ds.dataset(out, partitioning="hive").to_table().sort_by("event_id")
    second = run_realtime(src, out)
    rows2 = ds.dataset(out, partitioning="hive").to_table().sort_by("event_id")
    assert first.run_id != second.run_id
    assert rows1.num_rows == rows2.num_rows == 124
    assert rows1.select(COLUMNS).equals(rows2.select(COLUMNS))
    files = list(Path(out).glob("endpoint=*/**/*.parquet"))
    assert all(second.run_id in f.name for f in files)


def test_rerun_clears_rejects_of_fixed_input(tmp_path: Path, write_capture: WriteCapture) -> None:
    path = write_capture("2026/11/01/10", [record("a", "2026-11-01T10:00:00Z"), "oops"])
    out = tmp_path / "out"
    run_realtime(str(tmp_path / "capture"), str(out), options=RealtimeOptions(max_reject_ratio=1.0))
    assert ds.dataset(out / "_rejects", partitioning="hive").count_rows() == 1
    path.write_text(record("a", "2026-11-01T10:00:00Z") + "\n")
    run_realtime(str(tmp_path / "capture"), str(out))
    assert not list((out / "_rejects").glob("**/*.parquet"))


def test_many_batches_make_bounded_row_groups(tmp_path: Path, write_capture: WriteCapture) -> None:
    lines = [record(f"e{i}", f"2026-11-01T10:{i % 60:02d}:00Z", data="1.5," * 50) for i in range(3000)]
    write_capture("2026/11/01/10", lines)
    out = tmp_path / "out"
    run_realtime(
        str(tmp_path / "capture"),
        str(out),
        options=RealtimeOptions(unit_bytes=64 * 1024, row_group_bytes=256 * 1024),
    )
    (f,) = list(out.glob("endpoint=*/**/*.parquet"))
    meta = pq.read_metadata(f)
    assert meta.num_rows == 3000
    assert meta.num_row_groups > 1
    got = pq.read_table(f).column("source_line").to_pylist()
    assert got == list(range(1, 3001))  # order and provenance survive batching


def test_killed_run_leaves_nothing_readable_and_rerun_completes(tmp_path: Path, write_capture: WriteCapture) -> None:
    body = [record(f"k{i}", f"2026-11-01T10:{i % 60:02d}:00Z", data="7.25," * 60) for i in range(4000)]
    for n in range(40):
        write_capture("2026/11/01/10", body, name=f"{n:02d}-00-000-k.jsonl")
    src, out = str(tmp_path / "capture"), tmp_path / "out"
    run_realtime(src, str(out))  # a first, committed run
    assert (out / "_SUCCESS").exists()
    proc = subprocess.Popen(
        [sys.executable, "-m", "engine", "realtime", src, str(out), "--workers", "1", "--unit-size", "256KB"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not list(out.glob("_temporary/*/**/*.parquet")):
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "_SUCCESS").exists()  # removed before the run wrote anything
    # Readers see the previous committed files only; the half-written ones hide under _temporary.
    assert ds.dataset(out, partitioning="hive").count_rows() == 160_000
    run_realtime(src, str(out))
    assert (out / "_SUCCESS").exists()
    assert ds.dataset(out, partitioning="hive").count_rows() == 160_000


def test_sigterm_is_a_clean_interrupt(tmp_path: Path, write_capture: WriteCapture) -> None:
    body = [record(f"t{i}", f"2026-11-01T10:{i % 60:02d}:00Z", data="7.25," * 60) for i in range(4000)]
    for n in range(40):
        write_capture("2026/11/01/10", body, name=f"{n:02d}-00-000-t.jsonl")
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "engine",
            "realtime",
            str(tmp_path / "capture"),
            str(out),
            "--workers",
            "1",
            "--unit-size",
            "256KB",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not list(out.glob("_temporary/*/**/*.parquet")):
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1].startswith("capture-engine: interrupted; nothing was committed")
    assert "Traceback" not in err
    assert not (out / "_SUCCESS").exists()
    assert not list(out.glob("endpoint=*"))
    assert not list(out.glob("_temporary/*"))
