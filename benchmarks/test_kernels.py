"""pytest-benchmark suites of the engine's hot kernels on a few MB of synth capture.

    python -m pytest benchmarks/test_kernels.py --benchmark-json=benchmarks/results/kernels.json -q

Rounds are few (3, one iteration each) so the whole file runs in seconds; ``extra_info["bytes"]`` is the capture
input size, so MB/s can be derived from the JSON. Each benchmark also asserts what it produced, so a kernel that
got faster by doing less fails instead of looking good.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from benchmarks.conftest import KernelData
from engine.io.storage import open_location
from engine.jobs.realtime import run_realtime
from engine.kernels.envelope import decode_unit
from engine.kernels.partition import split_by_hour
from engine.options import RealtimeOptions
from engine.sinks.dataset import DatasetWriter
from engine.tables import table_spec

ROUNDS = 3
_counter = itertools.count()


def _fresh_dir(tmp_path: Path, name: str) -> str:
    # Every round writes somewhere new: rewriting a folder would also time deleting the previous round's files.
    return str(tmp_path / f"{name}-{next(_counter)}")


def test_envelope_decode(benchmark: Any, kernel_data: KernelData) -> None:
    """decode_unit over every unit: JSON parse, field extraction, time parsing, provenance."""
    max_line = kernel_data.options.max_line_bytes
    benchmark.extra_info["bytes"] = kernel_data.capture_bytes
    benchmark.extra_info["units"] = len(kernel_data.units)

    def decode() -> int:
        return sum(decode_unit(u, max_line_bytes=max_line).rows.num_rows for u in kernel_data.units)

    rows = benchmark.pedantic(decode, rounds=ROUNDS, iterations=1)
    assert rows == kernel_data.rows.num_rows


@pytest.mark.parametrize("order", ["read-order", "shuffled"])
def test_partition_split(benchmark: Any, kernel_data: KernelData, order: str) -> None:
    """split_by_hour on all rows: read order takes the zero-copy path, shuffled rows the sort-and-take path."""
    batch = kernel_data.rows
    if order == "shuffled":
        batch = batch.take(pa.array(np.random.default_rng(0).permutation(batch.num_rows)))
    benchmark.extra_info["bytes"] = kernel_data.capture_bytes
    benchmark.extra_info["rows"] = batch.num_rows

    def split() -> tuple[int, int]:
        parts = list(split_by_hour(batch, "inference_time"))
        return len(parts), sum(p.num_rows for _, p in parts)

    partitions, rows = benchmark.pedantic(split, rounds=ROUNDS, iterations=1)
    assert (partitions, rows) == (36, batch.num_rows)  # 3 endpoints x 2 variants x 6 hours


def test_parquet_write(benchmark: Any, kernel_data: KernelData, tmp_path: Path) -> None:
    """DatasetWriter as run_realtime builds it: split, buffer and write zstd Parquet per partition, then close."""
    batches = kernel_data.batches
    options = kernel_data.options
    benchmark.extra_info["bytes"] = kernel_data.capture_bytes

    def setup() -> tuple[tuple[DatasetWriter], dict[str, Any]]:
        writer = DatasetWriter(
            open_location(_fresh_dir(tmp_path, "write")),
            spec=table_spec("capture"),
            time_column="inference_time",
            run_id="bench",
            compression=options.compression,
            row_group_bytes=options.row_group_bytes,
        )
        return (writer,), {}

    def write(writer: DatasetWriter) -> int:
        for b in batches:
            writer.write(b)
        written = writer.close()
        return sum(rows for rows, _ in written.values())

    rows = benchmark.pedantic(write, setup=setup, rounds=ROUNDS, iterations=1)
    assert rows == kernel_data.rows.num_rows


def test_run_realtime(benchmark: Any, kernel_data: KernelData, tmp_path: Path) -> None:
    """The whole job in-process: list, fetch, decode, partition, write, commit."""
    benchmark.extra_info["bytes"] = kernel_data.capture_bytes

    def setup() -> tuple[tuple[str], dict[str, Any]]:
        return (_fresh_dir(tmp_path, "run"),), {}

    def run(dest: str) -> int:
        return run_realtime(str(kernel_data.capture_root), dest, options=RealtimeOptions()).rows_written

    rows = benchmark.pedantic(run, setup=setup, rounds=ROUNDS, iterations=1)
    assert rows == kernel_data.rows.num_rows
