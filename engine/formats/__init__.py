"""SageMaker's wire formats in the writing direction, as data and pure functions (readers: engine.jobs.batch & co)."""

from engine.formats.batch_transform import (
    ID_KEY,
    INPUT_KEY,
    OUT_SUFFIX,
    OUTPUT_KEY,
    TIME_KEY,
    append_ids,
    capture_manifest_key,
    inference_time_text,
    join_input,
    json_valid,
    manifest_document,
    new_inference_ids,
    output_name,
    parse_manifest_document,
)

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
