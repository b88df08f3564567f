"""The batch transform capture job: manifests -> transform objects in step -> records -> write -> commit.

Records: one row per output record with the appended ``SageMakerInferenceId`` and
``SageMakerInferenceTime`` taken out of it (CSV: the last two columns, trimmed; JSON and JSON Lines:
the two keys, wherever they are), the input record it answers, and provenance. Everything per record
is a vectorized Arrow or polars operation over a unit of lines; only per-file decisions (CSV or JSON,
IDs present, output joined with its input) look at a file's first record in Python.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterator

import pyarrow as pa

from engine.errors import NoDataError
from engine.io.concurrency import ordered_map
from engine.io.listing import looks_like
from engine.io.storage import Location, open_location
from engine.jobs.executor import Executor, LocalExecutor
from engine.jobs.pipelines import account, transform_units
from engine.jobs.run import JobRun
from engine.options import BatchOptions
from engine.report import Counts, RunReport
from engine.sources.manifests import (
    Manifest,
    ManifestProblem,
    TransformFile,
    list_manifests,
    pair_manifests,
    read_manifest,
)
from engine.tables import rejects_schema, table_spec

__all__ = ["BatchOptions", "iter_batch", "plan_transform_files", "read_batch", "run_batch"]

logger = logging.getLogger(__name__)


def plan_transform_files(
    loc: Location, options: BatchOptions, report: RunReport
) -> tuple[list[TransformFile], list[ManifestProblem]]:
    """The window's transform files (output with its input) from the manifests, and the manifests' problems.

    The plan every executor runs; manifests and transform files are counted into `report`.
    """
    t0 = time.perf_counter()
    inputs, outputs = list_manifests(loc, hours=options.manifest_hours(), concurrency=options.fetch_concurrency)
    parsed: list[Manifest] = []
    problems: list[ManifestProblem] = []
    for side, objs in (("input", inputs), ("output", outputs)):
        for m, p in ordered_map(
            lambda o, s=side: read_manifest(loc, o, s, prefix_map=options.prefix_map),  # type: ignore[misc]
            objs,
            workers=options.fetch_concurrency,
            lookahead=options.fetch_concurrency,
        ):
            problems += p
            if m is not None:
                parsed.append(m)
    files = pair_manifests([m for m in parsed if m.side == "input"], [m for m in parsed if m.side == "output"])
    report.add_time("list", time.perf_counter() - t0)
    report.counts["manifests"] = len(inputs) + len(outputs)
    report.counts["transform_files"] = len(files)
    logger.info("%d manifests list %d transform files under %s", len(inputs) + len(outputs), len(files), loc.url)
    return files, problems


def _problem_rejects(problems: list[ManifestProblem]) -> pa.RecordBatch:
    rows = [
        {
            "endpoint": None,
            "variant": None,
            "source_hour": p.manifest.hour,
            "source_file": p.manifest.uri,
            "source_line": p.entry,
            "reason": p.reason,
            "detail": p.detail[:500],
            "raw": p.raw,
        }
        for p in problems
    ]
    return pa.RecordBatch.from_pylist(rows, schema=rejects_schema())


def _problem_counts(problems: pa.RecordBatch) -> Counts:
    """Manifest and file problems are records too (one reject each): counted like a unit's rejects."""
    n = problems.num_rows
    return Counts(records=n, rejected=n, reasons=Counter(problems.column("reason").to_pylist()))


def iter_batch(
    source: str,
    *,
    options: BatchOptions | None = None,
    report: RunReport | None = None,
    on_rejects: Callable[[pa.RecordBatch], None] | None = None,
) -> Iterator[pa.RecordBatch]:
    """Stream the batch transform records under `source`: table rows, or with `options.decode` payload records.

    Decoded records carry the columns of their file, so batches may differ in schema (that is why this is an
    iterator, not a `pyarrow.RecordBatchReader` like `read_batch`). Every record read is counted in `report`
    (records, rows, rejects by reason, outside the window), so ``records = events_written + rejected +
    out_of_window`` holds for the batch source of a merge too; rejects go to `on_rejects` (else the log).

    Raises:
        SourceError: the source does not exist or cannot be read (at the call: manifests are listed then).
    """
    options = options or BatchOptions()
    report = report or RunReport(command="read", source=source, dest=None, options={})
    loc = open_location(source, options.storage_options, connections=options.fetch_concurrency)
    files, listed_problems = plan_transform_files(loc, options, report)
    problems = _problem_rejects(listed_problems)
    decoded = transform_units(loc, files, options, report)
    report.objects += report.counts.get("transform_files", 0)

    def rejected(batch: pa.RecordBatch) -> None:
        if not batch.num_rows:
            return
        if on_rejects is not None:
            on_rejects(batch)
        else:
            logger.warning("%d records rejected in %s", batch.num_rows, source)

    def rows() -> Iterator[pa.RecordBatch]:
        report.add(_problem_counts(problems))
        rejected(problems)
        for d in decoded:
            account(report, d)
            rejected(d.rejects)
            yield from (b for b in d.outputs() if b.num_rows)

    return rows()


def read_batch(
    source: str,
    *,
    options: BatchOptions | None = None,
    report: RunReport | None = None,
    on_rejects: Callable[[pa.RecordBatch], None] | None = None,
) -> pa.RecordBatchReader:
    """Stream the batch transform records under `source` (table "batch" of schemas/tables.json; raw, not decoded).

    Args:
        source: a batch data-capture destination (holding ``input/`` and/or ``output/`` manifests) or
            one manifest file, as a local path or fsspec URL.
        options: window, prefix map, concurrency and limits; see `BatchOptions`. `decode` is ignored
            (decoded records vary in schema: use `iter_batch`).
        report: receives the counts (records, rows, rejects by reason, outside the window) as the reader is
            consumed, so ``records = events_written + rejected + out_of_window`` can be checked.
        on_rejects: called with each batch of rejected records (``_rejects`` columns).
    """
    options = options or BatchOptions()
    if options.decode:
        options = BatchOptions(**{**options.__dict__, "decode": False, "columns": None})
    quiet = on_rejects if on_rejects is not None else (lambda _: None)
    rows = iter_batch(source, options=options, report=report, on_rejects=quiet)
    return pa.RecordBatchReader.from_batches(table_spec("batch").schema, rows)


def run_batch(
    source: str,
    dest: str,
    *,
    options: BatchOptions | None = None,
    progress: Callable[[RunReport, int], None] | None = None,
    executor: Executor | None = None,
) -> RunReport:
    """Read batch transform capture under `source` into hour-partitioned Parquet under `dest`.

    The manifests are listed and paired here (the plan); `executor` decodes the transform files (default:
    `LocalExecutor`; `engine.spark.run_batch` passes one that runs them as Spark tasks).

    Raises:
        SourceError: the source does not exist or cannot be read.
        SinkError: the destination cannot be written.
        RejectLimitError: rejects exceed `options.max_reject_ratio` (rejects are kept, nothing else).
        NoDataError: the window is empty and `options.require_data` is set.
    """
    options = options or BatchOptions()
    run = JobRun(dest, command="batch", source=source, options=options, endpoint_rejects=False)
    report = run.report
    loc = open_location(source, options.storage_options, connections=options.fetch_concurrency)
    files, listed_problems = plan_transform_files(loc, options, report)
    problems = _problem_rejects(listed_problems)
    report.objects = report.counts.get("transform_files", 0)
    empty_message = "the window held no batch transform records (nothing to write)"
    if not report.counts.get("manifests") and (what := looks_like(loc, job="batch")) is not None:
        # Pointed at the wrong data: say so, rather than commit an empty dataset without a word.
        empty_message = f"no batch capture manifests under {source}: it looks like {what}"
        if options.require_data:
            raise NoDataError(empty_message)
        logger.warning("%s", empty_message)
    report.add(_problem_counts(problems))
    with run:
        data = run.writer("batch", time_column="inference_time", dynamic=options.decode)
        # The rejects of every manifest hour read are replaced, so a fixed input clears old rejects.
        for hour in {f.hour for f in files} | set(problems.column("source_hour").to_pylist()):
            run.rejects.touch((None, None, None if hour is None else int(hour.timestamp()) // 3600))
        run.rejects.write(problems)  # manifest problems are found while planning: written here
        (executor or LocalExecutor(progress=progress)).run_transform(run, data, loc, files, options)
        return run.commit(
            data,
            empty_message=empty_message,
            no_data_error=f"no batch transform records in the window under {source}",
        )
