"""Accounting: what each unit of work read, kept and rejected (`Counts`), added up into the run report (`RunReport`),
which is written as `_SUCCESS` and printed as a summary.

Every kernel's result gives its `Counts`; every job, reader and executor adds them with `RunReport.add`, the one
accounting path, so ``records = events_written + rejected + out_of_window`` holds the same way for every job.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field, fields
from typing import Any

import orjson

from engine._version import __version__

__all__ = ["Counts", "RunReport", "plural"]


@dataclass
class Counts:
    """One unit's figures. ``records == kept + rejected + out_of_window`` (lines that are records; blank lines aside).

    Plain integers and a reason -> count mapping, so a unit's counts can travel (as a dict or JSON) from a worker
    process or a Spark executor back to the run that adds them up.
    """

    records: int = 0
    kept: int = 0  # records that became rows (events; with payload decoding an event may give several rows)
    rejected: int = 0
    out_of_window: int = 0
    blank_lines: int = 0
    bytes: int = 0
    fallback_units: int = 0  # units that took the per-line path
    reasons: Counter[str] = field(default_factory=Counter)

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["reasons"] = dict(self.reasons)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Counts:
        return cls(**{**d, "reasons": Counter(d.get("reasons", {}))})


@dataclass
class RunReport:
    """Counts of one run. Invariant: records == events_written + rejected + out_of_window.

    `records` and `events_written` count capture events (lines); `rows_written` counts table rows,
    which with payload decoding are payload records (an event may carry several).
    """

    command: str
    source: str
    dest: str | None
    options: dict[str, Any]
    engine_version: str = __version__
    run_id: str = ""
    status: str = "running"
    window: dict[str, str | None] = field(default_factory=dict)
    objects: int = 0
    bytes_read: int = 0
    # Bytes the run expects to read, known once its inputs are listed (0: unknown); for progress only.
    bytes_total: int = 0
    records: int = 0
    blank_lines: int = 0
    rows_written: int = 0
    events_written: int = 0
    out_of_window: int = 0
    rejected: int = 0
    rejects_by_reason: Counter[str] = field(default_factory=Counter)
    fallback_units: int = 0
    partitions: dict[str, int] = field(default_factory=dict)
    # Job-specific counts (batch: missing outputs...; merge: matched, unmatched...), shown in the summary.
    counts: dict[str, int] = field(default_factory=dict)
    # Job-specific notes for the user, e.g. the URIs of missing transform outputs (bounded lists).
    notes: dict[str, list[str]] = field(default_factory=dict)
    stage_seconds: dict[str, float] = field(default_factory=dict)
    wall_seconds: float = 0.0
    message: str = ""
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @property
    def balanced(self) -> bool:
        return self.records == self.events_written + self.rejected + self.out_of_window

    @property
    def reject_ratio(self) -> float:
        return self.rejected / self.records if self.records else 0.0

    def add(self, c: Counts) -> None:
        """Add one unit's counts: the one way figures enter a report (jobs, readers and executors alike)."""
        self.records += c.records
        self.events_written += c.kept
        self.rejected += c.rejected
        self.out_of_window += c.out_of_window
        self.blank_lines += c.blank_lines
        self.bytes_read += c.bytes
        self.fallback_units += c.fallback_units
        self.rejects_by_reason.update(c.reasons)

    def add_time(self, stage: str, seconds: float) -> None:
        """Add busy time to a stage; called from decode threads, hence the lock."""
        with self._lock:
            self.stage_seconds[stage] = self.stage_seconds.get(stage, 0.0) + seconds

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self) if not f.name.startswith("_")}
        d["rejects_by_reason"] = dict(sorted(self.rejects_by_reason.items()))
        d["stage_seconds"] = {k: round(v, 3) for k, v in self.stage_seconds.items()}
        d["wall_seconds"] = round(self.wall_seconds, 3)
        d["balanced"] = self.balanced
        d["reject_ratio"] = round(self.reject_ratio, 6)
        return d

    def to_json(self) -> bytes:
        return orjson.dumps(self.to_dict(), option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)

    def to_json_line(self) -> str:
        """The report as one line of JSON (``--log-format json``)."""
        return orjson.dumps(self.to_dict(), option=orjson.OPT_SORT_KEYS).decode()

    def summary(self) -> str:
        """A human-readable table of the run."""
        mb = self.bytes_read / 1e6
        rate = mb / self.wall_seconds if self.wall_seconds else 0.0
        rows = [
            ("status", self.status),
            ("source", self.source),
            ("destination", self.dest or "-"),
            ("window", f"{self.window.get('start') or '-'} .. {self.window.get('end') or '-'}"),
            ("objects read", f"{self.objects:,}"),
            ("bytes read", f"{mb:,.1f} MB ({rate:,.1f} MB/s)"),
        ]
        rows += self._merge_rows() if self.command == "merge" else self._job_rows()
        stages = ", ".join(f"{k} {v:.2f}" for k, v in self.stage_seconds.items())
        rows.append(("wall time", f"{self.wall_seconds:.2f}s"))
        # Stages run on several threads at once, so their sum may exceed the wall time.
        rows.append(("CPU seconds by stage (summed over workers)", stages or "-"))
        width = max(len(k) for k, _ in rows)
        lines = [f"{k:<{width}}  {v}" for k, v in rows]
        lines += [f"warning: {w}" for w in self.notes.get("warnings", [])]
        if self.message:
            lines.append(self.message)
        return "\n".join(lines)

    def _rejects_rows(self) -> list[tuple[str, str]]:
        rows = [("rejected", f"{self.rejected:,} ({self.reject_ratio:.2%})")]
        return rows + [(f"  {reason}", f"{n:,}") for reason, n in sorted(self.rejects_by_reason.items())]

    def _job_rows(self) -> list[tuple[str, str]]:
        rows = [
            ("records", f"{self.records:,}"),
            ("events written", f"{self.events_written:,}"),
            ("rows written", f"{self.rows_written:,} in {plural(len(self.partitions), 'partition')}"),
            ("outside window", f"{self.out_of_window:,}"),
            *self._rejects_rows(),
        ]
        rows += [(name.replace("_", " "), f"{n:,}") for name, n in self.counts.items()]
        rows.append(("records = written + rejected + outside", "yes" if self.balanced else "NO"))
        return rows

    def _merge_rows(self) -> list[tuple[str, str]]:
        """A merge's own figures: what was joined with what, rather than the decode counts of a job."""
        c = self.counts
        rows = [
            ("predictions read", f"{c.get('predictions', 0):,}"),
            ("labels read", f"{c.get('labels', 0):,}"),
            ("matched predictions", f"{c.get('matched', 0):,}"),
            ("unmatched predictions", f"{c.get('unmatched_predictions', 0):,}"),
            ("unmatched labels", f"{c.get('unmatched_labels', 0):,}"),
            ("duplicate labels", f"{c.get('duplicate_labels', 0):,}"),
            ("duplicate prediction keys", f"{c.get('duplicate_prediction_keys', 0):,}"),
            ("rows written", f"{self.rows_written:,} in {plural(len(self.partitions), 'partition')}"),
            *self._rejects_rows(),
            # The input records this run decoded (labels, and capture unless predictions came from a dataset).
            (
                "input records = accepted + rejected + outside",
                f"{'yes' if self.balanced else 'NO'} ({self.records:,} = {self.events_written:,} + "
                f"{self.rejected:,} + {self.out_of_window:,})",
            ),
        ]
        known = {"predictions", "labels", "matched", "unmatched_predictions", "unmatched_labels"}
        known |= {"duplicate_labels", "duplicate_prediction_keys"}
        rows += [(name.replace("_", " "), f"{n:,}") for name, n in c.items() if name not in known]
        return rows


def plural(n: int, noun: str) -> str:
    """``1 partition``, ``2 partitions``: the count with its noun."""
    return f"{n:,} {noun}" if n == 1 else f"{n:,} {noun}s"
