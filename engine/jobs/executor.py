"""Where a job's plan runs: the seam between planning (on the caller) and the kernels.

A job lists its window into a plan of plain data (capture objects, transform files), opens its run and
writers, hands the plan to an executor, then commits whichever executor ran it. The executor runs the
kernels over the plan and delivers every unit's result into the run (`engine.jobs.pipelines.deliver`):
rows to the data writer, rejects to the run's rejects, counts to its report. `LocalExecutor` runs them
on threads in this process; `engine.spark` has one that runs them as Spark tasks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from engine.io.listing import CaptureObject
from engine.io.storage import Location
from engine.jobs.pipelines import capture_units, deliver, transform_units
from engine.jobs.run import JobRun
from engine.kernels.batch_records import Decoded
from engine.kernels.result import UnitResult
from engine.options import BatchOptions, RealtimeOptions
from engine.report import RunReport
from engine.sinks.dataset import DatasetWriter
from engine.sources.manifests import TransformFile

__all__ = ["Executor", "LocalExecutor", "ProgressCallback"]

ProgressCallback = Callable[[RunReport, int], None]  # report so far, inputs in total


class Executor(Protocol):
    """Runs a plan's kernels and delivers every result into `run` (`data` for rows, `run.rejects`)."""

    def run_capture(
        self, run: JobRun, data: DatasetWriter, src: Location, objects: list[CaptureObject], options: RealtimeOptions
    ) -> None: ...

    def run_transform(
        self, run: JobRun, data: DatasetWriter, src: Location, files: list[TransformFile], options: BatchOptions
    ) -> None: ...


@dataclass(frozen=True)
class LocalExecutor:
    """This process: `options.workers` decode threads, bounded, in input order; the caller's thread writes."""

    progress: ProgressCallback | None = None

    def run_capture(
        self, run: JobRun, data: DatasetWriter, src: Location, objects: list[CaptureObject], options: RealtimeOptions
    ) -> None:
        self._deliver_all(run, data, capture_units(src, objects, options, run.report), len(objects))

    def run_transform(
        self, run: JobRun, data: DatasetWriter, src: Location, files: list[TransformFile], options: BatchOptions
    ) -> None:
        self._deliver_all(run, data, transform_units(src, files, options, run.report), run.report.objects)

    def _deliver_all(self, run: JobRun, data: DatasetWriter, units: Iterable[UnitResult | Decoded], total: int) -> None:
        for d in units:
            deliver(run.report, d, data.write, run.rejects.write)
            if self.progress is not None:
                self.progress(run.report, total)
