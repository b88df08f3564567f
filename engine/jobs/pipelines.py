"""The kernels over a plan's inputs: fetched, decoded on threads, in input order, one result per unit.

A plan is plain data (capture objects, transform files). These pipelines turn it into unit results
(`UnitResult` for capture, `Decoded` for transform files) and `deliver` adds each one into a run the one
way every job does it: counts into the report, rows to the data, rejects to the rejects. The readers
(`iter_capture`, `iter_batch`), the local executor and each Spark task run the same pipelines; they differ
only in how many decode threads they give them (a Spark task gets one: Spark's cores are its parallelism).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

from engine.io.concurrency import ordered_map, prefetch
from engine.io.fetch import fetch_threads, group_units, iter_pieces
from engine.io.listing import CaptureObject
from engine.io.storage import Location
from engine.kernels.batch_records import _NOTES_KEPT, Decoded, _Decoder, _Format, sniff
from engine.kernels.envelope import decode_unit
from engine.kernels.payload import ColumnSpec, decode_payloads, payload_rejects
from engine.kernels.rejects import concat_rejects
from engine.kernels.result import UnitResult
from engine.options import BatchOptions, RealtimeOptions
from engine.report import RunReport
from engine.sources.manifests import TransformFile
from engine.sources.transform import Unit, iter_units

__all__ = ["Sink", "account", "capture_units", "deliver", "transform_units"]

logger = logging.getLogger(__name__)

Sink = Callable[[Any], None]  # takes one pa.RecordBatch


def capture_units(
    loc: Location, objects: list[CaptureObject], options: RealtimeOptions, report: RunReport
) -> Iterator[UnitResult]:
    """Fetch and decode capture objects, `options.workers` units at a time, in input order."""
    concurrency = fetch_threads(loc, options.fetch_concurrency)
    pieces = iter_pieces(
        loc, objects, block=options.unit_bytes, concurrency=concurrency, max_line_bytes=options.max_line_bytes
    )

    def decode(unit: list[Any]) -> UnitResult:
        t0 = time.perf_counter()
        d = decode_unit(unit, max_line_bytes=options.max_line_bytes, start=options.start, end=options.end)
        t1 = time.perf_counter()
        report.add_time("decode", t1 - t0)
        if options.decode:
            _decode_payloads(d, options.columns or ColumnSpec())
            report.add_time("payload", time.perf_counter() - t1)
        return d

    units = group_units(pieces, options.unit_bytes)
    yield from ordered_map(decode, units, workers=options.workers, lookahead=options.workers + 1)


def _decode_payloads(d: UnitResult, spec: ColumnSpec) -> None:
    """Replace the unit's envelope rows by payload records; events that do not decode become rejects."""
    records, rejected = decode_payloads(d.rows, spec)
    failed = sum(len(f) for _, f in rejected)
    if failed:
        extra = payload_rejects(rejected)
        d.rejects = concat_rejects([d.rejects, extra])
        d.reasons.update(r for _, fs in rejected for r in (f.reason for f in fs))
    d.events = d.rows.num_rows - failed
    d.records_out = records


def transform_units(
    loc: Location, files: list[TransformFile], options: BatchOptions, report: RunReport
) -> Iterator[Decoded]:
    """Read transform files (output with its input, in step) and decode them, `options.workers` units at a time."""
    units = iter_units(
        loc,
        files,
        unit_bytes=options.unit_bytes,
        max_record_bytes=options.max_line_bytes,
        concurrency=min(options.fetch_concurrency, 4) if loc.is_local else options.fetch_concurrency,
    )
    decoder = _Decoder(options)

    def timed(job: tuple[Unit, _Format]) -> Decoded:
        t0 = time.perf_counter()
        d = decoder(job)
        report.add_time("decode", time.perf_counter() - t0)
        return d

    def with_formats() -> Iterator[tuple[Unit, _Format]]:
        # Sniffed in order here, so that the units of one file can then be decoded in parallel.
        fmt = _Format()
        for unit in units:
            if unit.first_line == 1:
                fmt = sniff(unit)
            yield unit, fmt

    # Reading runs in its own thread, so that the caller's thread (writing Parquet) never waits on it.
    jobs = prefetch(with_formats(), depth=2)
    yield from ordered_map(timed, jobs, workers=options.workers, lookahead=options.workers + 1)


def account(report: RunReport, d: UnitResult | Decoded) -> None:
    """A unit's counts into the run's report: the one accounting path of every job, reader and executor."""
    report.add(d.counts())
    note = getattr(d, "note", None)
    if note is not None:  # a transform file the report names (e.g. an output without its input)
        kind, uri = note
        report.counts[kind + "s"] = report.counts.get(kind + "s", 0) + 1
        kept = report.notes.setdefault(kind + "s", [])
        if len(kept) < _NOTES_KEPT:
            kept.append(uri)
        logger.warning("%s: %s", kind.replace("_", " "), uri)


def deliver(report: RunReport, d: UnitResult | Decoded, data: Sink, rejects: Sink) -> None:
    """A unit's result into a run: counted (`account`), its rows to `data`, its rejects to `rejects`."""
    account(report, d)
    t0 = time.perf_counter()
    for batch in d.outputs():
        data(batch)
    for rejected in d.reject_batches():
        rejects(rejected)
    report.add_time("write", time.perf_counter() - t0)
