"""The life of one job run: begin, write under `_temporary/<run>/`, then commit or abort.

Every job (realtime, batch, merge) ends the same way, so the rules live here once: the destination
is locked for the whole run; rejects are committed even when the run fails on the reject limit (the
user needs them to see why, and `_FAILED` says it), data only when the run succeeds, `_SUCCESS` (the
run report) last; an exception before the commit's journal discards what was written, one after it
leaves the commit for the next run to complete. A run's scope is its window: the partitions it wrote
and the source hours it read, cut to [start, end) (see `engine.sinks.commit.commit_run`).
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from dataclasses import dataclass, field, replace
from datetime import datetime
from types import TracebackType
from typing import Any, Literal, Protocol, TypeVar

from engine import interrupts
from engine.errors import NoDataError, OptionsError, RejectLimitError
from engine.io.storage import Location, open_location, redact, register_secrets
from engine.options import JobOptions
from engine.reasons import check_reasons
from engine.report import RunReport
from engine.sinks.commit import abort_run, begin_run, commit_run, write_report
from engine.sinks.dataset import SUCCESS, DatasetWriter
from engine.sinks.lock import DestinationLock
from engine.sinks.manifest import FAILED
from engine.tables import TableSpec, table_spec

__all__ = ["JobRun", "SideWriter", "Verdict", "iso", "verdict"]

logger = logging.getLogger(__name__)


class SideWriter(Protocol):
    """What a run commits besides Parquet tables (e.g. merge's JSON Lines): partitions of `part-*` files."""

    def close(self) -> dict[str, tuple[int, list[str]]]: ...

    def abort(self) -> None: ...


W = TypeVar("W", bound=SideWriter)
Partitions = dict[str, tuple[int, list[str]]]  # relative folder -> (rows, temporary files)
Verdict = Literal["commit", "reject_limit", "no_data"]


def verdict(report: RunReport, options: JobOptions) -> Verdict:
    """The policy of a run's end, apart from how it commits: `reject_limit` when more records were rejected
    than `max_reject_ratio` allows (the rejects are committed, no data), `no_data` when nothing was read and
    `require_data` is set (nothing is committed), else `commit`."""
    if report.records and report.reject_ratio > options.max_reject_ratio:
        return "reject_limit"
    if report.records == 0 and options.require_data:
        return "no_data"
    return "commit"


@dataclass
class _Closed:
    """Every writer of a run closed: what the commit replaces, and what it needs to know of the files."""

    data: Partitions = field(default_factory=dict)  # the data writer's partitions (reported per partition)
    side: Partitions = field(default_factory=dict)  # other tables and side writers, committed with the data
    rejects: Partitions = field(default_factory=dict)  # committed even when the data is not
    cuts: dict[str, tuple[str, int, int]] = field(default_factory=dict)
    file_rows: dict[str, int] = field(default_factory=dict)
    file_schemas: dict[str, Any] = field(default_factory=dict)


def iso(t: datetime | None) -> str | None:
    return None if t is None else t.strftime("%Y-%m-%dT%H:%M:%SZ")


def _inside(dest: Location, source: Location) -> bool:
    """True when `dest` is `source` or a folder below it, on the same storage (after resolving links)."""
    if dest.protocol != source.protocol:
        return False
    d, s = dest.root, source.root
    if dest.is_local:
        d, s = os.path.realpath(d), os.path.realpath(s)
        if os.path.isfile(s):
            return False
    d, s = d.rstrip("/") or "/", s.rstrip("/") or "/"
    return d == s or d.startswith(s.rstrip("/") + "/")


def _reasons(report: RunReport, limit: int = 5) -> str:
    top = report.rejects_by_reason.most_common(limit)
    more = len(report.rejects_by_reason) - len(top)
    return ", ".join(f"{reason} {n:,}" for reason, n in top) + (f", {more} more reasons" if more > 0 else "")


class JobRun:
    """One run writing a dataset under `dest`; use as a context manager around the writing.

    ``with JobRun(...) as run: w = run.writer(...); ...; run.commit(w)``: leaving the block by an
    exception aborts every writer and removes the run's temporary files.
    """

    def __init__(
        self,
        dest: str,
        *,
        command: str,
        source: str,
        options: JobOptions,
        endpoint_rejects: bool = True,
        replace_read_hours: bool | None = None,
    ) -> None:
        self.started = time.perf_counter()
        self.run_id = time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + "-" + uuid.uuid4().hex[:8]
        self.options = options
        self.source, self.dest = source, dest  # as given (the report's are redacted): executors reopen them
        register_secrets(options.storage_options, dest)
        register_secrets(None, source)
        self.report = RunReport(
            command=command,
            source=redact(source),
            dest=redact(dest),
            options=options.to_dict(),
            run_id=self.run_id,
            window={"start": iso(options.start), "end": iso(options.end)},
        )
        self.out: Location = open_location(
            dest, options.storage_options, kms_key_id=options.kms_key_id, connections=options.fetch_concurrency
        )
        if source:
            src = open_location(source, options.storage_options)
            if _inside(self.out, src):
                raise OptionsError(
                    f"the destination {dest} is inside the source {source}: the run would read its own output; "
                    "choose a destination outside the source"
                )
        # A run replaces what it read: the data partitions of the source hours it read (within its
        # window) are replaced even when none of their rows survived (every line invalid now).
        self.replace_read_hours = command in ("realtime", "batch") if replace_read_hours is None else replace_read_hours
        self.lock: DestinationLock | None = None
        self._writers: list[SideWriter] = []
        self._side: list[SideWriter] = []  # tracked: committed as they are (no cut hours, no schemas)
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
        self._side.append(writer)
        return writer

    def __enter__(self) -> JobRun:
        interrupts.check()
        self.lock = begin_run(self.out, self.run_id)
        interrupts.phase("begin")
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            if exc_type is not None:
                for w in self._writers:
                    w.abort()
                abort_run(self.out, self.run_id)
        finally:
            if self.lock is not None:
                self.lock.release()
                self.lock = None

    def commit(self, data: DatasetWriter, *, empty_message: str, no_data_error: str) -> RunReport:
        """Close the writers, apply the reject limit and `require_data`, commit, write `_SUCCESS` last.

        `data` is the writer whose partitions are the run's output (reported per partition).
        """
        report, options = self.report, self.options
        check_reasons(report.rejects_by_reason, self.out.uri(self.out.root))
        interrupts.check()
        t0 = time.perf_counter()
        closed = self._close(data)
        interrupts.phase("commit:start")  # every file written under _temporary/<run>/, nothing committed
        interrupts.check()
        report.add_time("write", time.perf_counter() - t0)
        report.partitions = {rel: rows for rel, (rows, files) in sorted(closed.data.items()) if rows or files}
        report.rows_written = data.rows
        report.wall_seconds = time.perf_counter() - self.started
        commit_args: dict[str, Any] = {
            "cuts": closed.cuts,
            "file_rows": closed.file_rows,
            "file_schemas": closed.file_schemas,
            "compression": None if options.compression == "none" else options.compression,
        }

        decision = verdict(report, options)
        if decision == "reject_limit":
            # Keep the rejects (the user needs them to see why) but commit no data and no _SUCCESS.
            report.status = "failed"
            report.message = (
                f"{report.rejected:,} of {report.records:,} records rejected ({report.reject_ratio:.2%}), "
                f"above --max-reject-ratio {options.max_reject_ratio:.2%} ({_reasons(report)}); no data committed, "
                f"see {self.out.uri(self.out.join('_rejects'))} and {self.out.uri(self.out.join(FAILED))}"
            )
            commit_run(
                self.out,
                self.run_id,
                closed.rejects,
                reports={FAILED: report.to_json(), SUCCESS: None},
                run_entry=self._run_entry(report, rejects_only=True),
                **commit_args,
            )
            abort_run(self.out, self.run_id)
            raise RejectLimitError(report.message)
        if decision == "no_data":
            abort_run(self.out, self.run_id)
            report.status = "failed"
            report.message = no_data_error
            write_report(self.out, FAILED, report.to_json())
            raise NoDataError(no_data_error)

        t0 = time.perf_counter()
        report.status = "committed"
        report.message = "" if report.records else empty_message
        report.wall_seconds = time.perf_counter() - self.started
        stats = commit_run(
            self.out,
            self.run_id,
            {**closed.side, **closed.data, **closed.rejects},
            reports={SUCCESS: None, FAILED: None},
            run_entry=self._run_entry(report),
            **commit_args,
        )
        report.add_time("commit", time.perf_counter() - t0)
        if stats.rewritten_files:
            report.counts["schema_rewrites"] = stats.rewritten_files
        if stats.carried_rows:
            report.counts["rows_kept_from_cut_hours"] = stats.carried_rows
        report.wall_seconds = time.perf_counter() - self.started
        # _SUCCESS last, with the commit's own time: the data is committed (the manifest says so) already.
        write_report(self.out, SUCCESS, report.to_json())
        interrupts.phase("commit:success")
        logger.info(
            "run %s: %d records, %d rows, %d rejected, %d outside the window",
            self.run_id,
            report.records,
            report.rows_written,
            report.rejected,
            report.out_of_window,
        )
        return report

    def _close(self, data: DatasetWriter) -> _Closed:
        """Close every writer; a table's partitions the window cuts get their cut, slack-only ones are dropped."""
        options = self.options
        if self.replace_read_hours:
            for key in list(self.rejects.partitions):
                data.touch(key)
        closed = _Closed(data=data.close())
        for w in self._writers:
            if any(w is t for t in self._side) or not isinstance(w, DatasetWriter):
                if w is not data:
                    closed.side.update(w.close())  # side tables (e.g. merge's JSON Lines)
                continue
            parts = closed.data if w is data else w.close()
            closed.file_rows.update(w.file_rows)
            closed.file_schemas.update(w.file_schemas)
            if w is self.rejects:
                closed.rejects = parts  # rejects belong to the source hours read: replaced whole
                continue
            for rel, rng in w.time_ranges(options.start, options.end).items():
                if rng is None:
                    continue
                if rng[0] >= rng[1]:  # a source hour listed only as slack: outside the window
                    if rel in parts and not parts[rel][1]:
                        del parts[rel]
                    continue
                closed.cuts[rel] = (w.time_column, rng[0], rng[1])
            if w is not data:
                closed.side.update(parts)
        return closed

    def _run_entry(self, report: RunReport, *, rejects_only: bool = False) -> dict[str, Any]:
        """What the dataset manifest records of this run."""
        return {
            "run_id": self.run_id,
            "command": report.command,
            "window": report.window,
            "committed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "status": "rejects only (failed on the reject limit)" if rejects_only else "committed",
            "records": report.records,
            "rows_written": 0 if rejects_only else report.rows_written,
            "rejected": report.rejected,
            "partitions": {} if rejects_only else dict(report.partitions),
        }
