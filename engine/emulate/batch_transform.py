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
import posixpath
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from engine.emulate._engine import (
    EngineError,
    Location,
    SourceError,
    check_interrupt,
    open_location,
    ordered_map,
    translate_errors,
)
from engine.emulate.model import InvocationError, Model, ModelUnavailable, Response, open_model
from engine.emulate.options import TransformOptions, media_type
from engine.emulate.records import Batch, RecordError, iter_batches
from engine.formats import batch_transform as wire

__all__ = ["TransformFailed", "TransformReport", "TransformUnavailable", "run_transform"]

logger = logging.getLogger(__name__)

_JSON_TYPES = ("application/json", "application/jsonlines")


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


@dataclass(frozen=True)
class _Input:
    path: str  # in the input filesystem
    uri: str
    manifest_rel: str  # relative to the input manifest's prefix
    out_rel: str  # the .out object, relative to the output root


@dataclass(frozen=True)
class _Job:
    file: int
    inp: _Input
    batch: Batch | None  # None: the file failed before this point (see error)
    error: str | None = None


@dataclass(frozen=True)
class _Result:
    job: _Job
    data: bytes = b""
    error: str | None = None
    sent: int = 0
    mismatch: str | None = None


def _folder(prefix: str) -> str:
    return prefix[: prefix.rfind("/") + 1]


def _list_prefix(loc: Location, source: str) -> tuple[str, list[_Input]]:
    """The objects of an S3Prefix (key-name prefix; a local folder or file is taken as such)."""
    root = loc.root
    with translate_errors(source):
        if loc.is_local and loc.fs.isfile(root):
            paths, prefix = [root], root
        else:
            local_dir = loc.is_local and loc.fs.isdir(root)
            prefix = root + "/" if local_dir or source.endswith("/") else root
            parent = prefix.rstrip("/") if local_dir or prefix.endswith("/") else posixpath.dirname(prefix)
            found = loc.fs.find(parent) if parent and loc.fs.exists(parent) else []
            paths = sorted(p for p in found if p.startswith(prefix) and not p.endswith("/"))
    if not paths:
        raise SourceError("no input objects under the transform input prefix", uri=source)
    folder = _folder(prefix)
    inputs = [_Input(p, loc.uri(p), p[len(prefix) :], wire.output_name(p[len(folder) :])) for p in paths]
    return loc.uri(prefix), inputs


def _list_manifest(source: str, options: TransformOptions) -> tuple[Location, str, list[_Input], str]:
    """The objects a ManifestFile lists: each is ``prefix + relative key``."""
    mloc = open_location(source, options.storage_options)
    with translate_errors(source):
        data = mloc.fs.cat_file(mloc.root)
    try:
        prefix, rels = wire.parse_manifest_document(data)
    except ValueError as exc:
        raise SourceError(f"not a ManifestFile ({exc})", uri=source) from None
    if not rels:
        raise SourceError("the ManifestFile lists no objects", uri=source)
    loc = open_location(prefix, options.storage_options)
    folder = _folder(prefix)
    inputs = []
    for rel in rels:
        uri = prefix + rel  # plain concatenation, as SageMaker resolves manifests
        path = loc.fs._strip_protocol(uri)
        inputs.append(_Input(path, loc.uri(path), rel, wire.output_name(uri[len(folder) :])))
    return loc, prefix, inputs, prefix


class _Output:
    """One ``.out`` object, written under a temporary name and moved to its own when complete."""

    def __init__(self, loc: Location, job_id: str, rel: str) -> None:
        self.loc, self.final = loc, loc.join(rel)
        self.tmp = loc.join("_temporary", job_id, rel)
        self.handle: Any = None
        self.size = 0

    def write(self, data: bytes) -> None:
        with translate_errors(self.loc.uri(self.tmp), sink=True):
            if self.handle is None:
                self.loc.fs.makedirs(posixpath.dirname(self.tmp), exist_ok=True)
                self.handle = self.loc.fs.open(self.tmp, "wb")
            self.handle.write(data)
        self.size += len(data)

    def commit(self) -> str:
        self.write(b"")  # an empty object still gets its (empty) .out
        with translate_errors(self.loc.uri(self.final), sink=True):
            self.handle.close()
            self.loc.fs.makedirs(posixpath.dirname(self.final), exist_ok=True)
            self.loc.fs.mv(self.tmp, self.final)
        return self.loc.uri(self.final)

    def abort(self) -> None:
        try:
            if self.handle is not None:
                discard = getattr(self.handle, "discard", None)  # s3fs: abort the multipart upload
                (discard or self.handle.close)()
            if self.loc.fs.exists(self.tmp):
                self.loc.fs.rm(self.tmp)
        except OSError as exc:  # the temporary folder is removed at the end anyway
            logger.debug("could not remove %s: %s", self.tmp, exc)


def _text(data: bytes) -> pa.Array:
    """`data` as a one-element string array, without copying it (a Python list would make pyarrow import
    pandas to look at it); ArrowInvalid when it is not UTF-8."""
    offsets = pa.py_buffer(np.array([0, len(data)], dtype=np.int32).tobytes())
    return pa.Array.from_buffers(pa.binary(), 1, [None, offsets, pa.py_buffer(data)]).cast(pa.string())


def _lines(data: bytes) -> pa.Array:
    """Whole-line bytes as their lines (no line ending; CR of CRLF removed), checking UTF-8, in Arrow.

    Nothing is no line (an empty answer holds no record), not one empty line."""
    if not data:
        return pa.array(np.array([], dtype=object), pa.string())
    text = _text(data)
    parts = pc.list_flatten(pc.split_pattern(text, "\n"))
    if data.endswith(b"\n"):
        parts = parts.slice(0, len(parts) - 1)
    return pc.utf8_rtrim(parts, characters="\r")


def _concat(records: pa.Array, newline_after_last: bool) -> bytes:
    offsets = pa.array(np.array([0, len(records)], dtype=np.int32))
    joined = pc.binary_join(pa.ListArray.from_arrays(offsets, records), "\n")
    text: str = joined[0].as_py()
    return (text + ("\n" if newline_after_last else "")).encode()


class _Transformer:
    """Sends one mini-batch and turns its response into the bytes of the ``.out`` (runs on worker threads)."""

    def __init__(self, model: Model, options: TransformOptions, start: datetime) -> None:
        self.model, self.o = model, options
        self.time = wire.inference_time_text(start)
        self.input_json = media_type(options.content_type) in _JSON_TYPES
        self.per_record = options.data_processing or options.generate_inference_id
        self.in_path, self.out_path = options.input_path, options.output_path

    def __call__(self, job: _Job) -> _Result:
        if job.batch is None:
            return _Result(job, error=job.error)
        b = job.batch
        where = (
            f"records {b.first_record}-{b.first_record + b.count - 1}" if b.count > 1 else f"record {b.first_record}"
        )
        try:
            return self._transform(job, b)
        except (InvocationError, ValueError, pa.ArrowInvalid) as exc:  # PathError is a ValueError
            return _Result(job, error=f"{where}: {_first_line(exc)}")

    def _records(self, data: bytes) -> pa.Array:
        if self.o.split_type == "None":
            return pc.utf8_trim_whitespace(_text(data))
        return _lines(data)

    def _transform(self, job: _Job, b: Batch) -> _Result:
        if not b.count:
            return _Result(job)
        body, originals = b.data, None
        if self.o.join_source == "Input" or not self.in_path.identity:
            originals = self._records(b.data)
            filtered = self.in_path.apply_json(originals) if self.input_json else self.in_path.apply_csv(originals)
            if not self.in_path.identity:
                body = _concat(filtered, self.o.split_type != "None")
        response = self.model.invoke(body, self.o.content_type, self.o.accept)
        out = response.body
        if not self.per_record:
            mismatch = None
            if self.o.split_type != "None" and self.o.assemble_with == "Line":
                got = out.count(b"\n") + (1 if out and not out.endswith(b"\n") else 0)
                mismatch = None if got == b.count else f"the model returned {got} lines for {b.count} records"
            if self.o.assemble_with == "Line" and out and not out.endswith(b"\n"):
                out += b"\n"
            return _Result(job, out, sent=len(body), mismatch=mismatch)
        return _Result(job, self._per_record(b, out, response, originals), sent=len(body))

    def _per_record(self, b: Batch, out: bytes, response: Response, originals: pa.Array | None) -> bytes:
        output_json = _is_json(self.o.accept or response.content_type, out)
        join = self.o.join_source == "Input"
        if self.o.split_type != "None":
            records, expected = _lines(out), b.count
        else:
            whole = self._records(out)
            # One object sent: one JSON document back is one record; CSV or JSON Lines lines are records each.
            one = join or (output_json and bool(wire.json_valid(whole).all()))
            records = whole if one else _lines(out)
            expected = 1 if join else len(records)
        if len(records) != expected:
            raise ValueError(f"the model returned {len(records)} records for {expected} sent")
        record_json = output_json
        if output_json:
            _check_json(records, "the model's output")
        if self.o.join_source == "Input":
            assert originals is not None
            if self.input_json:
                _check_json(originals, "the input")
                if not output_json:
                    raise ValueError("an output joined with JSON input must be JSON (check --accept)")
            records = wire.join_input(originals, records, json_records=self.input_json)
            record_json = self.input_json
        if not self.out_path.identity:
            records = self.out_path.apply_json(records) if record_json else self.out_path.apply_csv(records)
        if self.o.generate_inference_id:
            one_object = self.o.split_type == "None"  # one ID per record sent: here the object
            ids = wire.new_inference_ids(1 if one_object else len(records))
            ids = ids.take(pa.array(np.zeros(len(records), dtype=np.int64))) if one_object else ids
            records = wire.append_ids(records, ids, self.time, json_records=record_json)
        newline = self.o.assemble_with == "Line" or out.endswith(b"\n")
        return _concat(records, newline)


def _check_json(records: pa.Array, what: str) -> None:
    valid = wire.json_valid(records)
    if not valid.all():
        raise ValueError(f"{what} is not JSON at record {int((~valid).argmax()) + 1} of the mini-batch")


def _is_json(declared: str | None, body: bytes) -> bool:
    kind = media_type(declared)
    if kind in _JSON_TYPES:
        return True
    if kind == "text/csv":
        return False
    return body.lstrip()[:1] in (b"{", b"[")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _jobs(loc: Location, inputs: list[_Input], options: TransformOptions, failed: set[int]) -> Iterator[_Job]:
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
                    yield _Job(k, inp, batch)
        except (RecordError, EngineError) as exc:
            yield _Job(k, inp, None, _first_line(exc))


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
        loc, in_prefix, inputs, _ = _list_manifest(source, options)
    else:
        loc = open_location(source, options.storage_options)
        in_prefix, inputs = _list_prefix(loc, source)
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
        _write_capture(options, start, in_prefix, inputs, dest, report)
    report.seconds = time.perf_counter() - started
    if report.failed:
        report.status = "Failed"
        raise TransformFailed(report)
    return report


def _run(
    loc: Location,
    inputs: list[_Input],
    dest: str,
    model: Model,
    options: TransformOptions,
    start: datetime,
    report: TransformReport,
) -> None:
    out_loc = open_location(dest, options.storage_options)
    job_id = uuid.uuid4().hex
    failed: set[int] = set()
    outputs: dict[int, _Output] = {}
    warned: set[int] = set()
    workers = int(options.max_concurrent or 1)
    transformer = _Transformer(model, options, start)
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
            out = outputs.setdefault(k, _Output(out_loc, job_id, inp.out_rel))
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


def _write_capture(
    options: TransformOptions,
    start: datetime,
    in_prefix: str,
    inputs: list[_Input],
    dest: str,
    report: TransformReport,
) -> None:
    """The input and output manifests, listing every object of the job (failed ones too, as SageMaker knows
    its files when it starts: a reader then finds a listed ``.out`` missing)."""
    assert options.capture is not None
    cap = open_location(options.capture, options.storage_options)
    out_loc = open_location(dest, options.storage_options)
    out_prefix = out_loc.uri(out_loc.root).rstrip("/") + "/"
    documents = {
        "input": wire.manifest_document(in_prefix, [i.manifest_rel for i in inputs]),
        "output": wire.manifest_document(out_prefix, [i.out_rel for i in inputs]),
    }
    for side, doc in documents.items():
        path = cap.join(wire.capture_manifest_key(side, start, str(uuid.uuid4())))
        tmp = path + ".tmp"
        with translate_errors(cap.uri(path), sink=True):
            cap.fs.makedirs(posixpath.dirname(path), exist_ok=True)
            cap.fs.pipe_file(tmp, doc)
            cap.fs.mv(tmp, path)
        report.capture.append(cap.uri(path))
