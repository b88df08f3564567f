"""The life of one job run: begin, write under `_temporary/<run>/`, then commit or abort.

Every job (realtime, batch, merge) ends the same way, so the rules live here once: rejects are
committed even when the run fails on the reject limit (the user needs them to see why), data only
when the run succeeds, `_SUCCESS` (the run report) last; any exception discards what was written.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import replace
from datetime import datetime
from types import TracebackType
from typing import Protocol, TypeVar

from engine.errors import NoDataError, RejectLimitError
from engine.options import JobOptions
from engine.report import RunReport
from engine.schemas import TableSpec, table_spec
from engine.sink import DatasetWriter, abort_run, begin_run, commit_run
from engine.storage import Location, open_location

__all__ = ["JobRun", "SideWriter", "iso"]

logger = logging.getLogger(__name__)


class SideWriter(Protocol):
    """What a run commits besides Parquet tables (e.g. merge's JSON Lines): partitions of `part-*` files."""

    def close(self) -> dict[str, tuple[int, list[str]]]: ...

    def abort(self) -> None: ...


W = TypeVar("W", bound=SideWriter)


def iso(t: datetime | None) -> str | None:
    return None if t is None else t.strftime("%Y-%m-%dT%H:%M:%SZ")


class JobRun:
    """One run writing a dataset under `dest`; use as a context manager around the writing.

    ``with JobRun(...) as run: w = run.writer(...); ...; run.commit(w)``: leaving the block by an
    exception aborts every writer and removes the run's temporary files.
    """

    def __init__(
        self, dest: str, *, command: str, source: str, options: JobOptions, endpoint_rejects: bool = True
    ) -> None:
        self.started = time.perf_counter()
        self.run_id = time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + "-" + uuid.uuid4().hex[:8]
        self.options = options
        self.report = RunReport(
            command=command,
            source=source,
            dest=dest,
            options=options.to_dict(),
            run_id=self.run_id,
            window={"start": iso(options.start), "end": iso(options.end)},
        )
        self.out: Location = open_location(
            dest, options.storage_options, kms_key_id=options.kms_key_id, connections=options.fetch_concurrency
        )
        self._writers: list[SideWriter] = []
        # Rejects of sources without endpoints (batch, labels) are partitioned by hour only, so that
        # readers need not type an all-null endpoint=/variant= level.
        spec = table_spec("rejects")
        if not endpoint_rejects:
            spec = replace(spec, partition_by=tuple(c for c in spec.partition_by if c not in ("endpoint", "variant")))
        self.rejects = self.writer(spec, time_column="source_hour", prefix="_rejects")

    def writer(
        self, table: str | TableSpec, *, time_column: str, prefix: str = "", dynamic: bool = False
    ) -> DatasetWriter:
        """A partitioned writer of output table `table` (see `schemas/tables.json`) for this run."""
        w = DatasetWriter(
            self.out,
            spec=table_spec(table) if isinstance(table, str) else table,
            time_column=time_column,
            dynamic=dynamic,
            run_id=self.run_id,
            prefix=prefix,
            compression=self.options.compression,
            row_group_bytes=self.options.row_group_bytes,
        )
        self._writers.append(w)
        return w

    def track(self, writer: W) -> W:
        """Commit (or abort) `writer`'s files with this run's, like a side table."""
        self._writers.append(writer)
        return writer

    def __enter__(self) -> JobRun:
        begin_run(self.out)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            return
        for w in self._writers:
            w.abort()
        abort_run(self.out, self.run_id)

    def commit(self, data: DatasetWriter, *, empty_message: str, no_data_error: str) -> RunReport:
        """Close the writers, apply the reject limit and `require_data`, commit, write `_SUCCESS` last.

        `data` is the writer whose partitions are the run's output (reported per partition).
        """
        report, options = self.report, self.options
        t0 = time.perf_counter()
        data_parts = data.close()
        data_written = dict(data_parts)
        for w in self._writers:
            if w is not data and w is not self.rejects:  # side tables (e.g. unmatched labels)
                data_written.update(w.close())
        rejects_written = self.rejects.close()
        report.add_time("write", time.perf_counter() - t0)
        report.partitions = {rel: rows for rel, (rows, _) in sorted(data_parts.items())}
        report.rows_written = data.rows
        report.wall_seconds = time.perf_counter() - self.started

        if report.records and report.reject_ratio > options.max_reject_ratio:
            # Keep the rejects (the user needs them to see why) but commit no data and no _SUCCESS.
            commit_run(self.out, self.run_id, rejects_written, report=None)
            abort_run(self.out, self.run_id)
            report.status = "failed"
            raise RejectLimitError(
                f"{report.rejected:,} of {report.records:,} records rejected ({report.reject_ratio:.2%}), "
                f"above --max-reject-ratio {options.max_reject_ratio:.2%}; nothing committed, "
                f"see {self.out.uri(self.out.join('_rejects'))}"
            )
        if report.records == 0 and options.require_data:
            abort_run(self.out, self.run_id)
            report.status = "failed"
            raise NoDataError(no_data_error)

        t0 = time.perf_counter()
        report.status = "committed"
        report.message = "" if report.records else empty_message
        commit_run(self.out, self.run_id, {**data_written, **rejects_written}, report=None)
        report.add_time("commit", time.perf_counter() - t0)
        report.wall_seconds = time.perf_counter() - self.started
        commit_run(self.out, self.run_id, {}, report=report.to_json())
        logger.info(
            "run %s: %d records, %d rows, %d rejected, %d outside the window",
            self.run_id,
            report.records,
            report.rows_written,
            report.rejected,
            report.out_of_window,
        )
        return report
