"""Plan, then execute: a job's plan is plain data, and running it task by task writes what the local executor writes.

The executor seam (`engine.jobs.executor`) is what Spark plugs into; here a test executor does what a Spark
task does without a JVM: the plan packed into tasks, each task serialised to text and back, then its kernels
run on its inputs alone. If a plan lost anything a kernel needs (a time zone, a missing input, an endpoint),
or if running tasks apart changed a row, a reject or a count, the two datasets would differ.
"""

from __future__ import annotations

import gzip
import itertools
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import duckdb
import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from engine import BatchOptions, RealtimeOptions
from engine.io.listing import CaptureObject
from engine.io.storage import Location
from engine.jobs.batch import run_batch
from engine.jobs.executor import LocalExecutor
from engine.jobs.plan import (
    decode_objects,
    decode_transform_files,
    encode_objects,
    encode_transform_files,
    pack,
    pack_capture_objects,
    pack_transform_files,
)
from engine.jobs.realtime import run_realtime
from engine.jobs.run import JobRun
from engine.sinks.dataset import DatasetWriter
from engine.sources.manifests import TransformFile
from engine.synth import BatchSynthOptions, SynthOptions, synth, synth_batch

_COUNTS = ("records", "events_written", "rejected", "out_of_window", "blank_lines", "objects", "rejects_by_reason")

hours = st.one_of(
    st.none(),
    st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1)).map(
        lambda t: t.replace(minute=0, second=0, microsecond=0, tzinfo=timezone.utc)
    ),
)
names = st.one_of(st.none(), st.text(min_size=1, max_size=12))
objects = st.builds(
    CaptureObject,
    path=st.text(min_size=1, max_size=30),
    uri=st.text(min_size=1, max_size=40),
    size=st.integers(min_value=0, max_value=2**40),
    endpoint=names,
    variant=names,
    hour=hours,
)
transform_files = st.builds(
    TransformFile,
    manifest=st.text(min_size=1, max_size=30),
    hour=hours,
    input=st.one_of(st.none(), st.text(min_size=1, max_size=30)),
    output=st.one_of(st.none(), st.text(min_size=1, max_size=30)),
)


@settings(max_examples=60, deadline=None)
@given(st.lists(objects, max_size=20), st.lists(transform_files, max_size=20))
def test_a_plan_is_text_and_comes_back_exactly(objs: list[CaptureObject], files: list[TransformFile]) -> None:
    text = encode_objects(objs)
    assert isinstance(json.loads(text), list)  # plain JSON: no handle, no pickled object
    assert decode_objects(text) == objs
    assert decode_transform_files(encode_transform_files(files)) == files


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=1000)), st.integers(min_value=1, max_value=3000))
def test_pack_keeps_the_order_and_fills_each_task_up_to_its_size(sizes: list[int], task_bytes: int) -> None:
    groups = pack(list(enumerate(sizes)), lambda item: item[1], task_bytes)
    assert [item for g in groups for item in g] == list(enumerate(sizes))
    assert all(g for g in groups)
    for g, after in itertools.pairwise(groups):
        total = sum(s for _, s in g)
        assert len(g) == 1 or total <= task_bytes  # only a single large input stands alone over the size
        assert total + after[0][1] > task_bytes  # a task is closed only when the next input would not fit


class TaskByTask:
    """An executor that runs the plan as separate serialised tasks, one kernel pipeline each, as Spark would."""

    def __init__(self, task_bytes: int) -> None:
        self.task_bytes = task_bytes
        self.tasks: list[str] = []

    def run_capture(
        self, run: JobRun, data: DatasetWriter, src: Location, objs: list[CaptureObject], options: RealtimeOptions
    ) -> None:
        for _, text in pack_capture_objects(objs, self.task_bytes):
            self.tasks.append(text)
            LocalExecutor().run_capture(run, data, src, decode_objects(orjson.loads(orjson.dumps(text))), options)

    def run_transform(
        self, run: JobRun, data: DatasetWriter, src: Location, files: list[TransformFile], options: BatchOptions
    ) -> None:
        for _, text in pack_transform_files(src, files, 4, self.task_bytes):
            self.tasks.append(text)
            LocalExecutor().run_transform(run, data, src, decode_transform_files(text), options)


def _digest(dest: Path, pattern: str) -> tuple[int, int]:
    files = sorted(str(p) for p in dest.glob(pattern) if "_temporary" not in p.parts)
    assert files, f"no files {pattern} under {dest}"
    rel = f"read_parquet({files}, hive_partitioning=true, union_by_name=true)"
    con = duckdb.connect()
    cols = ", ".join(f'"{r[0]}"' for r in con.sql(f"describe select * from {rel}").fetchall())
    rows, total = con.sql(f"select count(*), sum(hash({cols})::hugeint) from {rel}").fetchall()[0]
    return int(rows), int(total)


def _counts(dest: Path) -> dict[str, Any]:
    report = json.loads((dest / "_SUCCESS").read_text())
    return {k: report[k] for k in _COUNTS} | {"counts": report.get("counts")}


def _damage(root: Path) -> None:
    """An invalid line in one object and a truncated gzip object: both tasks' rejects must match too."""
    objs = sorted(root.rglob("*.jsonl"))
    first, second = objs[0], objs[1]
    first.write_bytes(first.read_bytes() + b'{"captureData": oops\n')
    packed = gzip.compress(second.read_bytes())
    (second.parent / (second.name + ".gz")).write_bytes(packed[: len(packed) // 2])
    second.unlink()


def test_realtime_run_task_by_task_from_its_plan_writes_what_the_local_executor_writes(tmp_path: Path) -> None:
    synth(str(tmp_path / "s"), SynthOptions(records=600, hours=3, endpoints=2, variants=2, seed=5, records_per_file=40))
    source = tmp_path / "s" / "capture"
    _damage(source)
    options = RealtimeOptions(start=datetime(2026, 11, 1, 0, 30, tzinfo=timezone.utc), max_reject_ratio=1.0)
    local = run_realtime(str(source), str(tmp_path / "local"), options=options)
    executor = TaskByTask(task_bytes=20_000)
    tasks = run_realtime(str(source), str(tmp_path / "tasks"), options=options, executor=executor)
    assert len(executor.tasks) > 3  # several tasks, so a loss between tasks would show
    assert local.rejected >= 2 and local.out_of_window > 0
    for pattern in ("endpoint=*/**/*.parquet", "_rejects/**/*.parquet"):
        assert _digest(tmp_path / "local", pattern) == _digest(tmp_path / "tasks", pattern)
    assert _counts(tmp_path / "local") == _counts(tmp_path / "tasks")
    assert tasks.balanced and local.balanced


def test_batch_run_task_by_task_from_its_plan_writes_what_the_local_executor_writes(tmp_path: Path) -> None:
    summary = synth_batch(
        str(tmp_path / "s"), BatchSynthOptions(jobs=3, files_per_job=3, records_per_file=60, seed=2, features=5)
    )
    source = Path(summary.capture_root)
    outs = sorted(Path(summary.transform_output_root).rglob("*.out"))
    outs[0].unlink()  # an input without its output: reported by the task that holds it
    options = BatchOptions(max_reject_ratio=1.0)
    local = run_batch(str(source), str(tmp_path / "local"), options=options)
    executor = TaskByTask(task_bytes=4_000)
    tasks = run_batch(str(source), str(tmp_path / "tasks"), options=options, executor=executor)
    assert len(executor.tasks) > 2
    assert local.events_written > 0
    assert _digest(tmp_path / "local", "[!_]*/**/*.parquet") == _digest(tmp_path / "tasks", "[!_]*/**/*.parquet")
    assert _counts(tmp_path / "local") == _counts(tmp_path / "tasks")
    assert tasks.balanced
