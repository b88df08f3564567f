"""One mini-batch through the model: input filter, invocation, join, output filter, inference IDs, assembly.

Runs on the job's worker threads. Records are Arrow string arrays and every step is one vectorized pass
(`engine.formats.batch_transform`); the JSON filters parse record by record (`engine.emulate.jsonpath`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

import engine.formats.batch_transform as wire
from engine.emulate.model import InvocationError, Model, Response
from engine.emulate.objects import InputObject
from engine.emulate.options import TransformOptions, media_type
from engine.emulate.records import Batch

__all__ = ["Job", "Result", "Transformer", "first_line"]

_JSON_TYPES = ("application/json", "application/jsonlines")


@dataclass(frozen=True)
class Job:
    """One mini-batch of one file (or the failure that ended the file)."""

    file: int
    inp: InputObject
    batch: Batch | None  # None: the file failed before this point (see error)
    error: str | None = None


@dataclass(frozen=True)
class Result:
    """What a mini-batch gives: the bytes of the .out, or why its file fails."""

    job: Job
    data: bytes = b""
    error: str | None = None
    sent: int = 0
    mismatch: str | None = None


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


class Transformer:
    """Sends one mini-batch and turns its response into the bytes of the ``.out`` (runs on worker threads)."""

    def __init__(self, model: Model, options: TransformOptions, start: datetime) -> None:
        self.model, self.o = model, options
        self.time = wire.inference_time_text(start)
        self.input_json = media_type(options.content_type) in _JSON_TYPES
        self.per_record = options.data_processing or options.generate_inference_id
        self.in_path, self.out_path = options.input_path, options.output_path

    def __call__(self, job: Job) -> Result:
        if job.batch is None:
            return Result(job, error=job.error)
        b = job.batch
        where = (
            f"records {b.first_record}-{b.first_record + b.count - 1}" if b.count > 1 else f"record {b.first_record}"
        )
        try:
            return self._transform(job, b)
        except (InvocationError, ValueError, pa.ArrowInvalid) as exc:  # PathError is a ValueError
            return Result(job, error=f"{where}: {first_line(exc)}")

    def _records(self, data: bytes) -> pa.Array:
        if self.o.split_type == "None":
            return pc.utf8_trim_whitespace(_text(data))
        return _lines(data)

    def _transform(self, job: Job, b: Batch) -> Result:
        if not b.count:
            return Result(job)
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
            return Result(job, out, sent=len(body), mismatch=mismatch)
        return Result(job, self._per_record(b, out, response, originals), sent=len(body))

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


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
