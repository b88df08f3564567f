"""Batch transform's wire format in the writing direction: what a transform job appends, joins and lists.

The reading side is ``engine.kernels.batch_records`` (records), ``engine.sources.transform`` (objects in step) and
``engine.sources.manifests`` (capture manifests); every function here writes exactly what those read back
(formats reference 3 and 4):

- ``GenerateInferenceId``: CSV records get two more columns, ``,<uuid>,<time>``; JSON records get the keys
  ``SageMakerInferenceId`` and ``SageMakerInferenceTime`` first, as in real JSON Lines output (the docs'
  example puts them last; readers accept both). The time is the job's start, whole seconds, UTC.
- ``JoinSource=Input``: CSV appends the output to the input row (``1,2,3`` + ``1`` -> ``1,2,3,1``); JSON puts
  the output under ``SageMakerOutput`` in the input object (first, as in real output), or wraps an input
  that is not an object as ``{"SageMakerInput": ..., "SageMakerOutput": ...}``.
- manifests: one JSON array ``[{"prefix": "<uri>"}, "rel", ...]`` (``json.dumps`` separators, as real
  manifests), each entry resolving as plain ``prefix + rel``; capture manifests live under
  ``{root}/input|output/yyyy/mm/dd/hh/{uuid}.json``, the hour being the job's start hour.

Where the sources are silent, what is written is what the reader recovers exactly: a JSON record that is
not an object (or an empty one) cannot carry the ID keys, so it is wrapped as ``SageMakerOutput`` of an
object that carries them (the reader then takes ``SageMakerOutput`` as the output). Text is spliced, never
re-serialized, so a record's own bytes (its numbers, its spacing) survive the round trip.

Records are Arrow string arrays (one element per record, without line ending); every function is one
vectorized pass over them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from datetime import datetime, timezone

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

__all__ = [
    "ID_KEY",
    "INPUT_KEY",
    "OUTPUT_KEY",
    "OUT_SUFFIX",
    "TIME_KEY",
    "append_ids",
    "capture_manifest_key",
    "inference_time_text",
    "join_input",
    "json_valid",
    "manifest_document",
    "new_inference_ids",
    "output_name",
    "parse_manifest_document",
]

ID_KEY = "SageMakerInferenceId"
TIME_KEY = "SageMakerInferenceTime"
OUTPUT_KEY = "SageMakerOutput"
INPUT_KEY = "SageMakerInput"
OUT_SUFFIX = ".out"

# An object's opening brace with the whitespace after it, then the rest; null for texts that are not objects.
_OBJECT = r"^(?P<head>\s*\{\s*)(?P<rest>(?s:.*))$"
_EMPTY_REST = r"^\}\s*$"


def inference_time_text(start: datetime) -> str:
    """``SageMakerInferenceTime`` of a job started at `start`: UTC, whole seconds (``2022-08-30T00:49:15Z``)."""
    if start.tzinfo is None:
        start = start.replace(tzinfo=timezone.utc)
    return f"{start.astimezone(timezone.utc):%Y-%m-%dT%H:%M:%SZ}"


_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
_HEX_AT = np.array([i for i in range(36) if i not in (8, 13, 18, 23)])


def new_inference_ids(n: int, random_bytes: Callable[[int], bytes] = os.urandom) -> pa.StringArray:
    """`n` random version-4 UUIDs in their 36-character text, built in numpy (no Python loop per ID)."""
    raw = np.frombuffer(random_bytes(16 * n), dtype=np.uint8).reshape(n, 16).copy()
    raw[:, 6] = (raw[:, 6] & 0x0F) | 0x40  # version 4
    raw[:, 8] = (raw[:, 8] & 0x3F) | 0x80  # RFC 4122 variant
    digits = np.empty((n, 32), dtype=np.uint8)
    digits[:, 0::2] = _HEX[raw >> 4]
    digits[:, 1::2] = _HEX[raw & 0x0F]
    text = np.full((n, 36), ord("-"), dtype=np.uint8)
    text[:, _HEX_AT] = digits
    offsets = np.arange(0, 36 * (n + 1), 36, dtype=np.int32)
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets.tobytes()), pa.py_buffer(text.tobytes()))


def _cat(*parts: pa.Array | str) -> pa.Array:
    return pc.binary_join_element_wise(*parts, "")


def json_valid(records: pa.Array) -> np.ndarray:
    """Which records are one JSON value (the check the reader makes, so a record it would reject is caught)."""
    if not len(records):
        return np.zeros(0, dtype=bool)
    parsed = pl.Series(records).str.json_path_match("$")
    return np.asarray(parsed.is_not_null().to_numpy(), dtype=bool)


def _objects(records: pa.Array) -> tuple[pa.Array, pa.Array, np.ndarray]:
    """Each record split after its opening brace (and the whitespace after it), and which are non-empty objects."""
    parts = pc.extract_regex(records, _OBJECT)
    head, rest = pc.struct_field(parts, "head"), pc.struct_field(parts, "rest")
    nonempty = pc.and_(pc.is_valid(head), pc.invert(pc.fill_null(pc.match_substring_regex(rest, _EMPTY_REST), True)))
    return head, rest, np.asarray(pc.fill_null(nonempty, False).to_numpy(zero_copy_only=False), dtype=bool)


def _pick(mask: np.ndarray, yes: pa.Array, no: pa.Array) -> pa.Array:
    return pc.if_else(pa.array(mask, pa.bool_()), yes, no)


def append_ids(records: pa.Array, ids: pa.Array, time: str, *, json_records: bool) -> pa.Array:
    """Records with their inference ID and time appended, as ``GenerateInferenceId`` writes them.

    CSV: ``record,<id>,<time>``. JSON: ``{"SageMakerInferenceId":"<id>","SageMakerInferenceTime":"<time>",...}``
    spliced in after the opening brace; a record that is not a non-empty object becomes the
    ``SageMakerOutput`` of such an object. JSON records must be valid JSON (see `json_valid`).
    """
    records = records.cast(pa.string())
    if not json_records:
        return _cat(records, ",", ids, ",", time)
    keys = _cat(f'"{ID_KEY}":"', ids, f'","{TIME_KEY}":"{time}"')
    if not len(records):
        return records
    head, rest, nonempty = _objects(records)
    spliced = _cat(head, keys, ",", rest)
    wrapped = _cat("{", keys, f',"{OUTPUT_KEY}":', pc.utf8_trim_whitespace(records), "}")
    return _pick(nonempty, pc.fill_null(spliced, ""), wrapped)


def join_input(inputs: pa.Array, outputs: pa.Array, *, json_records: bool) -> pa.Array:
    """Each output joined with its input record, as ``JoinSource=Input`` writes them.

    CSV: ``input,output``. JSON: ``{"SageMakerOutput":<output>,<input's members>}`` for an input object
    (an input that already has a ``SageMakerOutput`` member loses it: the key is reserved), else
    ``{"SageMakerInput":<input>,"SageMakerOutput":<output>}``. JSON inputs and outputs must be valid JSON.
    """
    inputs, outputs = inputs.cast(pa.string()), outputs.cast(pa.string())
    if not json_records:
        return _cat(inputs, ",", outputs)
    if not len(inputs):
        return inputs
    inputs = _drop_reserved(inputs)
    out = pc.utf8_trim_whitespace(outputs)
    head, rest, nonempty = _objects(inputs)
    empty_object = pc.fill_null(pc.and_(pc.is_valid(head), pc.invert(pa.array(nonempty))), False)
    spliced = _cat(head, f'"{OUTPUT_KEY}":', out, ",", rest)
    wrapped = _cat(f'{{"{INPUT_KEY}":', pc.utf8_trim_whitespace(inputs), f',"{OUTPUT_KEY}":', out, "}")
    alone = _cat(f'{{"{OUTPUT_KEY}":', out, "}")
    return pc.if_else(empty_object, alone, _pick(nonempty, pc.fill_null(spliced, ""), wrapped))


def _drop_reserved(inputs: pa.Array) -> pa.Array:
    """Input objects with a top-level ``SageMakerOutput`` member rewritten without it (rare: the one case that
    re-serializes, since the join would otherwise leave two such members)."""
    has = pc.fill_null(pc.match_substring(inputs, f'"{OUTPUT_KEY}"'), False)
    if not pc.any(has).as_py():
        return inputs
    texts = inputs.to_pylist()
    for i in np.flatnonzero(np.asarray(has.to_numpy(zero_copy_only=False), dtype=bool)):
        value = json.loads(texts[i])
        if isinstance(value, dict) and OUTPUT_KEY in value:
            del value[OUTPUT_KEY]
            texts[i] = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return pa.array(texts, pa.string())


def output_name(relative: str) -> str:
    """The output object of an input object: its name with ``.out`` appended (``data.csv`` -> ``data.csv.out``)."""
    return relative + OUT_SUFFIX


def manifest_document(prefix: str, relatives: Sequence[str]) -> bytes:
    """A manifest (ManifestFile input, or a capture manifest): ``[{"prefix": ...}, "rel", ...]``, as real ones print.

    A single-object input is ``prefix`` = the object's URI with one empty relative key.
    """
    return json.dumps([{"prefix": prefix}, *relatives]).encode()


def parse_manifest_document(data: bytes) -> tuple[str, list[str]]:
    """The prefix and relative keys of a manifest document.

    Raises:
        ValueError: the document is not ``[{"prefix": "<uri>"}, "<key>", ...]`` (the message says what is wrong).
    """
    body = data.strip().removeprefix(b"\xef\xbb\xbf").strip()
    try:
        doc = json.loads(body or b"null")
    except ValueError as exc:
        raise ValueError(f"not JSON ({exc})") from None
    if not isinstance(doc, list) or not doc:
        raise ValueError("not a JSON array")
    if not isinstance(doc[0], dict) or not isinstance(doc[0].get("prefix"), str):
        raise ValueError('the first element is not {"prefix": "..."}')
    bad = next((i for i, rel in enumerate(doc[1:], start=2) if not isinstance(rel, str)), None)
    if bad is not None:
        raise ValueError(f"entry {bad} is not a string")
    return doc[0]["prefix"], list(doc[1:])


def capture_manifest_key(side: str, start: datetime, manifest_id: str) -> str:
    """Where a capture manifest goes under the capture root: ``{side}/yyyy/mm/dd/hh/{id}.json`` (the start hour)."""
    if side not in ("input", "output"):
        raise ValueError(f"side must be input or output, got {side!r}")
    if start.tzinfo is None:
        start = start.replace(tzinfo=timezone.utc)
    return f"{side}/{start.astimezone(timezone.utc):%Y/%m/%d/%H}/{manifest_id}.json"
