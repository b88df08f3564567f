"""The plan: a job's listed inputs bin-packed into tasks, serialisable, one unit of distributed work each.

A task is plain data (URIs, sizes, what the key says, a file id): no filesystem, no open handle, so it
travels to any executor as one row of a DataFrame. Inputs are packed in listing order (endpoint, variant,
hour, key) until a task holds `task_bytes`, so a task mostly writes one hour partition (few files) and
a large object is a task of its own (objects are never split: the kernels stream a large object).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, TypeVar

import orjson

from engine.io.listing import CaptureObject
from engine.io.storage import Location
from engine.sources.manifests import TransformFile
from engine.sources.predictions import DatasetPart

__all__ = [
    "Task",
    "decode_dataset_parts",
    "decode_objects",
    "decode_transform_files",
    "encode_dataset_parts",
    "encode_objects",
    "encode_transform_files",
    "file_ids",
    "pack",
    "pack_capture_objects",
    "pack_dataset_parts",
    "pack_transform_files",
    "transform_file_sizes",
]

T = TypeVar("T")


@dataclass(frozen=True)
class Task:
    """One unit of distributed work: inputs of about `bytes` bytes, and the id its part files are named by."""

    index: int
    file_id: str  # shaped like a run id (time-hex8): part-<file_id>-00000.parquet is unique in the dataset
    bytes: int
    inputs: str  # JSON list of the inputs (capture objects or transform files)

    def row(self) -> dict[str, Any]:
        return {"task": self.index, "file_id": self.file_id, "bytes": self.bytes, "inputs": self.inputs}


def pack(items: Sequence[T], size: Callable[[T], int], task_bytes: int) -> list[list[T]]:
    """Consecutive `items` grouped into lists of about `task_bytes` (at least one item each), order kept."""
    groups: list[list[T]] = []
    current: list[T] = []
    total = 0
    for item in items:
        if current and total + size(item) > task_bytes:
            groups.append(current)
            current, total = [], 0
        current.append(item)
        total += size(item)
    if current:
        groups.append(current)
    return groups


def file_ids(run_id: str, n: int, taken: set[str]) -> list[str]:
    """`n` ids shaped like `run_id` (same second, other 8 hex digits), none in `taken` nor `run_id` itself.

    Part files are named ``part-<id>-<n>.parquet`` and committed under their own name, so the ids of one
    run's tasks must differ from each other, from the run's own files and from every file already in the
    dataset (a run in the same second would otherwise overwrite them). `taken` holds the committed names.
    """
    stamp, _, own = run_id.rpartition("-")
    used = {own} | {name.split("-")[2] for name in taken if name.startswith(f"part-{stamp}-") and name.count("-") >= 3}
    rng = random.Random()
    while True:
        base = rng.getrandbits(32)
        ids = [f"{(base + i) & 0xFFFFFFFF:08x}" for i in range(n)]
        if not used.intersection(ids):
            return [f"{stamp}-{h}" for h in ids]


def _hour_seconds(hour: datetime | None) -> int | None:
    return None if hour is None else int(hour.timestamp())


def encode_objects(objects: Sequence[CaptureObject]) -> str:
    return orjson.dumps(
        [[o.path, o.uri, o.size, o.endpoint, o.variant, _hour_seconds(o.hour)] for o in objects]
    ).decode()


def decode_objects(text: str) -> list[CaptureObject]:
    return [
        CaptureObject(
            path=path,
            uri=uri,
            size=size,
            endpoint=endpoint,
            variant=variant,
            hour=None if hour is None else datetime.fromtimestamp(hour, tz=timezone.utc),
        )
        for path, uri, size, endpoint, variant, hour in orjson.loads(text)
    ]


def encode_transform_files(files: Sequence[TransformFile]) -> str:
    return orjson.dumps([[f.manifest, _hour_seconds(f.hour), f.input, f.output] for f in files]).decode()


def decode_transform_files(text: str) -> list[TransformFile]:
    return [
        TransformFile(
            manifest=manifest,
            hour=None if hour is None else datetime.fromtimestamp(hour, tz=timezone.utc),
            input=inp,
            output=out,
        )
        for manifest, hour, inp, out in orjson.loads(text)
    ]


def pack_capture_objects(objects: Sequence[CaptureObject], task_bytes: int) -> list[tuple[int, str]]:
    """The capture objects as tasks' (bytes, inputs) of about `task_bytes` each, in listing order."""
    return [(sum(o.size for o in g), encode_objects(g)) for g in pack(objects, lambda o: o.size, task_bytes)]


def transform_file_sizes(loc: Location, files: Sequence[TransformFile], concurrency: int) -> list[int]:
    """Bytes of each file's output and input object (0 for a missing one: its task reports it), concurrently."""

    def size(uri: str | None) -> int:
        if uri is None:
            return 0
        try:
            return int(loc.fs.info(loc.fs._strip_protocol(uri)).get("size") or 0)
        except (OSError, ValueError):
            return 0

    uris = [u for f in files for u in (f.output, f.input)]
    with ThreadPoolExecutor(max_workers=max(1, min(concurrency, len(uris) or 1))) as pool:
        sizes = list(pool.map(size, uris))
    return [sizes[2 * i] + sizes[2 * i + 1] for i in range(len(files))]


def pack_transform_files(
    loc: Location, files: Sequence[TransformFile], concurrency: int, task_bytes: int
) -> list[tuple[int, str]]:
    """The transform files as tasks' (bytes, inputs), sized by their objects (a missing one counts 1 byte)."""
    sized = list(zip(files, transform_file_sizes(loc, files, concurrency), strict=True))
    groups = pack(sized, lambda fs: max(fs[1], 1), task_bytes)
    return [(sum(s for _, s in g), encode_transform_files([f for f, _ in g])) for g in groups]


def encode_dataset_parts(parts: Sequence[DatasetPart]) -> str:
    return orjson.dumps([[p.path, p.row_group, p.bytes, [list(kv) for kv in p.partition]] for p in parts]).decode()


def decode_dataset_parts(text: str) -> list[DatasetPart]:
    return [
        DatasetPart(path=path, row_group=rg, bytes=size, partition=tuple((k, v) for k, v in partition))
        for path, rg, size, partition in orjson.loads(text)
    ]


def pack_dataset_parts(parts: Sequence[DatasetPart], task_bytes: int) -> list[tuple[int, str]]:
    """A dataset's row groups as tasks' (bytes, inputs), in the plan's order (an empty group counts 1 byte)."""
    groups = pack(parts, lambda p: max(p.bytes, 1), task_bytes)
    return [(sum(p.bytes for p in g), encode_dataset_parts(g)) for g in groups]
