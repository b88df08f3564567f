"""One pass over a monitoring source: the profile (or model-quality state) of the whole and of each group.

Profiles and quality states are mergeable, so a large source of many files is split into contiguous runs of
files, the first read in this process and each other by a worker process, and the states are merged in file
order (the first k values of a small feature stay in insertion order). Worker processes are spawned, not
forked: the parent may hold pyarrow's thread pools. Below `PARALLEL_BYTES`, or for raw capture (decoded by
the engine's own readers), the pass runs in this process.
"""

from __future__ import annotations

import copy
import logging
import multiprocessing
import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

import pyarrow as pa

from engine.monitor.profile import Profile
from engine.monitor.quality import QualityOptions, QualityState
from engine.monitor.sources import GroupBy, SourceFormat, read_groups, select_groups, source_files

__all__ = [
    "BATCH_ROWS",
    "PARALLEL_BYTES",
    "Groups",
    "PassSpec",
    "default_workers",
    "profile_pass",
    "quality_pass",
    "table_pass",
]

logger = logging.getLogger(__name__)

PARALLEL_BYTES = 64 * 2**20  # below this, starting worker processes costs more than it saves
BATCH_ROWS = 65_536  # rows profiled at a time
Key = tuple[str, ...]
S = TypeVar("S", Profile, QualityState)


def default_workers() -> int:
    """One worker per core this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True, kw_only=True)
class PassSpec:
    """What to read: a source and how (the reading half of `MonitorOptions`)."""

    source: str
    fmt: SourceFormat = "auto"
    header: bool = False
    features: tuple[str, ...] | None = None
    start: datetime | None = None
    end: datetime | None = None
    storage_options: dict[str, Any] = field(default_factory=dict)
    ground_truth: str | None = None
    by: tuple[GroupBy, ...] = ()
    workers: int = 1


@dataclass
class Groups:
    """The state of the whole source and of each group (``{}`` without a breakdown)."""

    whole: Any
    groups: dict[Key, Any]


def _read(spec: PassSpec, source: str) -> Iterable[tuple[Key, pa.RecordBatch]]:
    return read_groups(
        source,
        fmt=spec.fmt,
        header=spec.header,
        features=list(spec.features) if spec.features else None,
        start=spec.start,
        end=spec.end,
        storage_options=spec.storage_options,
        ground_truth=spec.ground_truth,
        by=spec.by,
    )


def _coalesced(pairs: Iterable[tuple[Key, pa.RecordBatch]]) -> Iterator[tuple[Key, pa.Table]]:
    """Consecutive batches of a group joined up to `BATCH_ROWS` rows (while their schema stays the same).

    A decoded dataset's files hold a few thousand rows an hour and unit; every batch costs each feature a
    fixed number of numpy and Arrow calls, so profiling 64k rows at a time instead of 10k saved a fifth of
    the CPU of a 2M-row window (benchmarks/README.md, Monitoring).
    """
    pending: dict[Key, list[pa.RecordBatch]] = {}
    rows: dict[Key, int] = {}
    for key, batch in pairs:
        parts = pending.setdefault(key, [])
        if parts and parts[0].schema != batch.schema:
            yield key, pa.Table.from_batches(parts)
            parts.clear()
            rows[key] = 0
        parts.append(batch)
        rows[key] = rows.get(key, 0) + batch.num_rows
        if rows[key] >= BATCH_ROWS:
            yield key, pa.Table.from_batches(parts)
            parts.clear()
            rows[key] = 0
    for key, parts in pending.items():
        if parts:
            yield key, pa.Table.from_batches(parts)


def _run(spec: PassSpec, sources: list[str], new: Callable[[int], S], index: int) -> dict[Key, S]:
    states: dict[Key, S] = {}
    # Profiles only: a model-quality state draws its resamples per batch, so its batches stay as read.
    coalesce = not isinstance(new, _NewQuality)
    for source in sources:
        pairs = _read(spec, source)
        for key, batch in _coalesced(pairs) if coalesce else pairs:
            state = states.get(key)
            if state is None:
                state = states[key] = new(index * 1000 + len(states))
            state.add(batch)
    return states


def _run_table(spec: PassSpec, table: pa.Table, new: Callable[[int], S]) -> dict[Key, S]:
    states: dict[Key, S] = {}
    features = list(spec.features) if spec.features else None
    batches = table.to_batches(max_chunksize=65_536)
    for key, batch in select_groups(
        batches, spec.source, features=features, start=spec.start, end=spec.end, by=spec.by
    ):
        state = states.get(key)
        if state is None:
            state = states[key] = new(len(states))
        state.add(batch)
    return states


def _new_profile(stream: int) -> Profile:
    return Profile(stream=stream)


@dataclass(frozen=True)
class _NewQuality:
    options: QualityOptions

    def __call__(self, stream: int) -> QualityState:
        # Every state draws its resamples from a stream of its own, so parts merge into independent samples.
        return QualityState(self.options, stream=stream)


def _chunks(files: list[tuple[str, int]], n: int) -> list[list[str]]:
    """`files` cut into at most `n` contiguous runs of about equal bytes."""
    total = sum(size for _, size in files) or 1
    out: list[list[str]] = [[]]
    done = 0
    for uri, size in files:
        if out[-1] and done >= total * len(out) / n and len(out) < n:
            out.append([])
        out[-1].append(uri)
        done += size
    return out


def _pass(spec: PassSpec, new: Callable[[int], S], empty: Callable[[], S], table: pa.Table | None = None) -> Groups:
    files = [] if table is not None else source_files(spec.source, fmt=spec.fmt, storage_options=spec.storage_options)
    workers = min(spec.workers, len(files))
    if table is not None:
        parts = [_run_table(spec, table, new)]
    elif workers > 1 and spec.ground_truth is None and sum(size for _, size in files) >= PARALLEL_BYTES:
        chunks = _chunks(files, workers)
        logger.info("profiling %d files in this process and %d worker processes", len(files), len(chunks) - 1)
        context = multiprocessing.get_context("spawn")
        rest = range(1, len(chunks))
        # The first run of files is read here while the workers start: one interpreter fewer to spawn and
        # import into (about 1.5 CPU s each), one state fewer to pickle back.
        with ProcessPoolExecutor(max_workers=len(rest), mp_context=context) as pool:
            others = pool.map(_run, [spec] * len(rest), [chunks[i] for i in rest], [new] * len(rest), rest)
            parts = [_run(spec, chunks[0], new, 0)]  # after the map: the workers are already at work
            parts += list(others)
    else:
        parts = [_run(spec, [spec.source], new, 0)]
    groups: dict[Key, S] = {}
    for part in parts:  # in file order
        for key, state in part.items():
            if key in groups:
                groups[key].merge(state)
            else:
                groups[key] = state
    if not spec.by:
        return Groups(groups.get((), empty()), {})
    whole = empty()
    for key in sorted(groups):
        whole.merge(copy.deepcopy(groups[key]))  # merging takes parts of its argument over: keep the groups'
    return Groups(whole, dict(sorted(groups.items())))


def profile_pass(spec: PassSpec) -> Groups:
    """Profiles of the source's features: of the whole, and per group when `spec.by` is given."""
    return _pass(spec, _new_profile, Profile)


def quality_pass(spec: PassSpec, options: QualityOptions) -> Groups:
    """Model-quality states of the source: of the whole, and per group when `spec.by` is given."""
    return _pass(spec, _NewQuality(options), lambda: QualityState(options))


def table_pass(table: pa.Table, spec: PassSpec, quality: QualityOptions | None = None) -> Groups:
    """`profile_pass` (or `quality_pass` with `quality`) over a table in memory (`spec.source` names it)."""
    if quality is None:
        return _pass(spec, _new_profile, Profile, table)
    return _pass(spec, _NewQuality(quality), lambda: QualityState(quality), table)
