"""A local batch transform job: input objects -> mini-batches -> the model -> ``.out`` objects and capture manifests.

What SageMaker does, in order (reference 5, formats reference 3 and 4): list the ``S3Prefix`` (every object
whose key starts with it; a local folder is a folder) or read the ``ManifestFile``; split each object into
records and mini-batches (`engine.emulate.records`); apply ``InputFilter`` to each record; send each mini-
batch to the model, at most ``MaxConcurrentTransforms`` at once; then per record ``JoinSource``,
``OutputFilter`` and ``GenerateInferenceId``; assemble one ``.out`` per input object, in record order; and
with data capture write one input and one output manifest under ``{capture}/input|output/yyyy/mm/dd/hh/``
(the job's start hour), listing every object of the job.

Failures as SageMaker's (reference 5.2): a file whose records cannot be split or whose invocation fails
(after ``InvocationsMaxRetries``) gets no ``.out``, the other files go on, and the job ends ``Failed``
(`TransformFailed`, one line naming the first failed file and why). Each ``.out`` is written under
``{output}/_temporary/{job}/`` and moved to its name only when complete, so nothing half-written is ever
at an output name. A model that cannot be reached or is not healthy fails the job before anything is
written. When records must be matched with their outputs (join, output filter, inference IDs), a
response with another number of records than its request fails its file; otherwise the response is
written as the model returned it (SageMaker does not count), and a line-count difference is only warned.

Memory follows the payload: at most ``2 x MaxConcurrentTransforms`` mini-batches (each at most
``MaxPayloadInMB``) and their responses are held; objects are streamed.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone

from engine.emulate.minibatch import Job, Transformer, first_line
from engine.emulate.model import Model, ModelUnavailable, open_model
from engine.emulate.objects import InputObject, OutputObject, list_manifest, list_prefix, write_capture
from engine.emulate.options import TransformOptions
from engine.emulate.records import RecordError, iter_batches
from engine.errors import EngineError
from engine.interrupts import check as check_interrupt
from engine.io.concurrency import ordered_map
from engine.io.storage import Location, open_location, translate_errors

__all__ = ["TransformFailed", "TransformReport", "TransformUnavailable", "run_transform"]

logger = logging.getLogger(__name__)


class TransformUnavailable(EngineError):
    """The model cannot be used (unreachable, unhealthy, not loadable): nothing was transformed."""


class TransformFailed(EngineError):
    """Some input files failed (no ``.out`` for them); the others were written. `report` says which."""

    def __init__(self, report: TransformReport) -> None:
        uri, why = report.failed[0]
        more = f" (and {len(report.failed) - 1} more, see the log)" if len(report.failed) > 1 else ""
        super().__init__(
            f"transform failed: {len(report.failed)} of {report.files} input files got no .out: {uri}: {why}{more}"
        )
        self.report = report


@dataclass
class TransformReport:
    """What a transform job did."""

    source: str
    dest: str
    model: str
    status: str = "Completed"
    files: int = 0
    records: int = 0
    requests: int = 0
    bytes_sent: int = 0
    bytes_written: int = 0
    seconds: float = 0.0
    outputs: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    capture: list[str] = field(default_factory=list)

    @property
    def records_per_second(self) -> float:
        return self.records / self.seconds if self.seconds else 0.0

    def summary(self) -> str:
        """A few lines for people."""
        lines = [
            f"transform {self.status}: {self.files:,} input files, {self.records:,} records in {self.requests:,} "
            f"requests to {self.model}, {self.seconds:.2f} s ({self.records_per_second:,.0f} records/s)",
            f"  output: {len(self.outputs):,} .out objects under {self.dest} ({self.bytes_written / 1e6:,.1f} MB)",
        ]
        lines += [f"  capture manifest: {uri}" for uri in self.capture]
        lines += [f"  failed: {uri}: {why}" for uri, why in self.failed]
        return "\n".join(lines)


def _jobs(loc: Location, inputs: list[InputObject], options: TransformOptions, failed: set[int]) -> Iterator[Job]:
    """Every mini-batch of every object, in order; a file stops at its first failure."""
    payload = int(options.max_payload_mb or 6) * 2**20
    strategy = options.batch_strategy or "MultiRecord"
    for k, inp in enumerate(inputs):
        try:
            with translate_errors(inp.uri), loc.fs.open(inp.path, "rb") as handle:
                batches = iter_batches(
                    handle,
                    split=options.split_type,
                    strategy=strategy,
                    max_payload=payload,
                    gzip=options.compression == "Gzip",
                )
                for batch in batches:
                    if k in failed:
                        break
                    yield Job(k, inp, batch)
        except (RecordError, EngineError) as exc:
            yield Job(k, inp, None, first_line(exc))


def run_transform(
    source: str, dest: str, model: str | Model, *, options: TransformOptions | None = None
) -> TransformReport:
    """Run a batch transform of the objects at `source` through `model` into ``.out`` objects under `dest`.

    Args:
        source: an S3Prefix (local path or fsspec URL: every object whose key starts with it; a local folder
            or file as such), or with ``options.manifest`` a ManifestFile.
        dest: the output root (``TransformOutput.S3OutputPath``).
        model: ``http(s)://host:port`` of a container speaking SageMaker's protocol, ``module:function``, or
            a `Model`.
        options: see `TransformOptions`.

    Raises:
        OptionsError: invalid options (also after the model's execution parameters are applied).
        SourceError: the input cannot be listed or read.
        TransformUnavailable: the model cannot be reached or loaded; nothing was written.
        TransformFailed: some files failed; the others have their ``.out`` (and the capture manifests).
    """
    options = options or TransformOptions()
    started = time.perf_counter()
    start = options.start_time or datetime.now(timezone.utc).replace(microsecond=0)
    if options.manifest:
        loc, in_prefix, inputs, _ = list_manifest(source, options)
    else:
        loc = open_location(source, options.storage_options)
        in_prefix, inputs = list_prefix(loc, source)
    try:
        client = (
            open_model(model, timeout=options.invocations_timeout, retries=options.max_retries)
            if isinstance(model, str)
            else model
        )
    except ValueError as exc:
        raise TransformUnavailable(str(exc)) from None
    try:
        try:
            client.ping(options.ping_timeout)
        except ModelUnavailable as exc:
            raise TransformUnavailable(str(exc)) from None
        suggested = (
            client.execution_parameters()
            if None in (options.batch_strategy, options.max_payload_mb, options.max_concurrent)
            else {}
        )
        options = options.resolved(suggested)
        report = TransformReport(source=source, dest=dest, model=client.name, files=len(inputs))
        _run(loc, inputs, dest, client, options, start, report)
    finally:
        client.close()
    if options.capture:
        report.capture = write_capture(options, start, in_prefix, inputs, dest)
    report.seconds = time.perf_counter() - started
    if report.failed:
        report.status = "Failed"
        raise TransformFailed(report)
    return report


def _run(
    loc: Location,
    inputs: list[InputObject],
    dest: str,
    model: Model,
    options: TransformOptions,
    start: datetime,
    report: TransformReport,
) -> None:
    out_loc = open_location(dest, options.storage_options)
    job_id = uuid.uuid4().hex
    failed: set[int] = set()
    outputs: dict[int, OutputObject] = {}
    warned: set[int] = set()
    workers = int(options.max_concurrent or 1)
    transformer = Transformer(model, options, start)
    try:
        for result in ordered_map(
            transformer, _jobs(loc, inputs, options, failed), workers=workers, lookahead=2 * workers
        ):
            check_interrupt()
            k, inp = result.job.file, result.job.inp
            if k in failed:
                continue
            if result.error is not None:
                failed.add(k)
                report.failed.append((inp.uri, result.error))
                logger.warning("%s failed, no .out: %s", inp.uri, result.error)
                if k in outputs:
                    outputs.pop(k).abort()
                continue
            batch = result.job.batch
            assert batch is not None
            report.records += batch.count
            report.requests += 1 if batch.count else 0
            report.bytes_sent += result.sent
            if result.mismatch and k not in warned:
                warned.add(k)
                logger.warning("%s: %s (written as returned)", inp.uri, result.mismatch)
            out = outputs.setdefault(k, OutputObject(out_loc, job_id, inp.out_rel))
            if result.data:
                out.write(result.data)
            if batch.last:
                report.outputs.append(outputs.pop(k).commit())
                report.bytes_written += out.size
    finally:
        for out in outputs.values():
            out.abort()
        temporary = out_loc.join("_temporary", job_id)
        try:
            if out_loc.fs.exists(temporary):
                out_loc.fs.rm(temporary, recursive=True)
            parent = out_loc.join("_temporary")
            if out_loc.is_local and out_loc.fs.exists(parent) and not out_loc.fs.ls(parent):
                out_loc.fs.rmdir(parent)
        except OSError as exc:
            logger.debug("could not remove %s: %s", temporary, exc)
