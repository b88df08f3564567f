"""The fast paths give what the plain ones give: the dataset writer's pool writes the same files, in order, as
the caller's thread, and a failed pool write is a one-line sink error; the CSV decoder's byte scans agree with
Arrow's per-body kernels."""

from __future__ import annotations

import gc
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from engine.errors import SinkError
from engine.io.storage import open_location
from engine.sinks.dataset import TEMPORARY, DatasetWriter
from engine.tables import capture_schema, table_spec

HOUR_US = 3_600_000_000
BASE_HOUR = 495_000  # an hour in 2026


def _batches(n_batches: int, rows: int) -> list[pa.RecordBatch]:
    """Batches whose rows interleave 3 endpoints x 4 hours, with payloads long enough for many row groups."""
    rng = np.random.default_rng(7)
    schema = capture_schema()
    out = []
    for b in range(n_batches):
        i = np.arange(b * rows, (b + 1) * rows)
        endpoint = np.array(["ep-a", "ep-b", "ep-c"])[rng.integers(0, 3, rows)]
        hour = BASE_HOUR + rng.integers(0, 4, rows)
        cols = {
            "endpoint": pa.array(endpoint),
            "variant": pa.array(["AllTraffic"] * rows),
            "event_id": pa.array([f"id-{k}" for k in i]),
            "inference_id": pa.array([None if k % 3 else f"inf-{k}" for k in i], pa.string()),
            "inference_time": pa.array(hour * HOUR_US + i % HOUR_US, pa.timestamp("us", tz="UTC")),
            "event_version": pa.array(["0"] * rows),
            "input_content_type": pa.array(["text/csv"] * rows),
            "input_encoding": pa.array(["CSV"] * rows),
            "input_data": pa.array([f"{k}," * 40 for k in i]),
            "output_content_type": pa.array(["text/csv"] * rows),
            "output_encoding": pa.array(["CSV"] * rows),
            "output_data": pa.array([f"0.{k}" for k in i]),
            "custom_attributes": pa.array([None] * rows, pa.string()),
            "source_file": pa.array([f"file:///c/{b}.jsonl"] * rows),
            "source_line": pa.array(i - b * rows + 1, pa.int64()),
        }
        out.append(pa.RecordBatch.from_arrays([cols[f.name] for f in schema], schema=schema))
    return out


def _write(dest: Path, batches: list[pa.RecordBatch], threads: int) -> dict[str, tuple[int, list[str]]]:
    w = DatasetWriter(
        open_location(str(dest)),
        spec=table_spec("capture"),
        time_column="inference_time",
        run_id="r1",
        row_group_bytes=64 * 2**10,
        max_open=5,  # fewer than the 12 partitions: files are closed and reopened while the pool writes
        write_threads=threads,
    )
    for b in batches:
        w.write(b)
    return w.close()


def test_pool_writes_the_same_files_in_order_as_the_callers_thread(tmp_path: Path) -> None:
    batches = _batches(12, 3_000)
    pooled = _write(tmp_path / "pool", batches, threads=3)
    serial = _write(tmp_path / "serial", batches, threads=0)
    assert len(pooled) == 12 and sum(rows for rows, _ in pooled.values()) == 36_000

    def rel(root: Path, files: list[str]) -> list[str]:
        return [os.path.relpath(f, root) for f in files]

    groups = 0
    for part, (rows, files) in serial.items():
        assert pooled[part][0] == rows
        assert rel(tmp_path / "pool", pooled[part][1]) == rel(tmp_path / "serial", files)
        for a, b in zip(pooled[part][1], files, strict=True):
            got, want = pq.ParquetFile(a), pq.ParquetFile(b)
            # Same row groups, same rows in the same order: the pool kept each file's row groups in sequence.
            assert got.metadata.num_row_groups == want.metadata.num_row_groups
            assert got.read().equals(want.read())
            groups += got.metadata.num_row_groups
    assert groups > 24  # many row groups per file, so an out-of-order write would show


def test_failed_pool_write_is_a_sink_error_naming_the_file(tmp_path: Path) -> None:
    if not os.path.exists("/dev/full"):
        pytest.fail("the test needs /dev/full (a device that fails every write with ENOSPC)")
    batches = _batches(8, 3_000)
    dest = tmp_path / "out"
    # Every partition's first part file is /dev/full: each write of a row group fails with "no space left".
    hour_dirs = {
        f"endpoint={e}/variant=AllTraffic/year=2026/month={m}/day={d}/hour={h}"
        for e in ("ep-a", "ep-b", "ep-c")
        for m, d, h in _hours()
    }
    for rel in hour_dirs:
        folder = dest / TEMPORARY / "r1" / rel
        folder.mkdir(parents=True)
        (folder / "part-r1-00000.parquet").symlink_to("/dev/full")
    w = DatasetWriter(
        open_location(str(dest)),
        spec=table_spec("capture"),
        time_column="inference_time",
        run_id="r1",
        row_group_bytes=64 * 2**10,
        write_threads=2,
    )
    with pytest.raises(SinkError) as err:
        for b in batches:
            w.write(b)
        w.close()
    message = str(err.value)
    assert "\n" not in message and "cannot write" in message and "part-r1-00000.parquet" in message
    w.abort()  # after a failure: returns (waits for the pool), leaves nothing open
    assert not w.open
    del w, err
    # The failed writers' cycles go now, not in a collection during a later import (CPython 3.11.7
    # then trips its AST recursion check).
    gc.collect()


def _hours() -> list[tuple[str, str, str]]:
    import datetime as dt

    out = []
    for k in range(4):
        t = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc) + dt.timedelta(hours=BASE_HOUR + k)
        out.append((f"{t:%m}", f"{t:%d}", f"{t:%H}"))
    return out


def test_csv_byte_scans_agree_with_the_per_body_kernels() -> None:
    """The CSV decoder's one-pass byte scans (newline counts, blank-line and quote guards) give what Arrow's
    per-body kernels give, on sliced arrays and bodies whose newlines meet across a boundary."""
    from engine.kernels.payload import csv as decoder

    bodies = ["1,2", "3,4\n", "\n5,6", "", "7\n\n8", '"a",1', "9\r\n10", "x\ny\nz", "\n", "11,12"]
    whole = pa.array(["pad", *bodies, "pad"])
    for text in (pa.array(bodies), whole.slice(1, len(bodies)), pa.array(bodies, pa.large_string())):
        data, offsets = decoder._layout(text)
        counts = decoder._newline_counts(data, offsets)
        assert counts.tolist() == pc.count_substring(text, "\n").to_pylist()
        for lo in range(len(bodies)):
            for hi in range(lo, len(bodies) + 1):
                part = text.slice(lo, hi - lo)
                blank = pc.any(pc.match_substring_regex(part, r"(^|\n)[\n]|\n$|^\n")).as_py() or False
                if blank:  # the guard may say yes more often, never less
                    assert decoder._may_have_blank_lines(*decoder._layout(part))
                quoted = bool(pc.any(pc.match_substring(part, '"')).as_py())
                assert decoder._unbalanced_quotes(part).any() <= quoted
        assert decoder._normalized(text).to_pylist() == [
            "1,2",
            "3,4",
            "5,6",
            "",
            "7\n8",
            '"a",1',
            "9\n10",
            "x\ny\nz",
            "",
            "11,12",
        ]
    assert not decoder._may_have_blank_lines(*decoder._layout(pa.array(["1,2", "3\n4"])))
