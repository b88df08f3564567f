"""Ground-truth records on the wire, both directions: what a labelling job uploads and what the decoder reads.

One JSON object per line under ``{root}/yyyy/mm/dd/hh/{name}.jsonl`` (the hour the labels were collected)::

    {"groundTruthData": {"data": "1", "encoding": "CSV"}, "eventMetadata": {"eventId": "..."}, "eventVersion": "0"}

``eventId`` is the capture record's ``inferenceId`` when it has one, else its ``eventId``.
"""

from __future__ import annotations

from typing import Final

import orjson
import pyarrow as pa

from engine.formats.capture import (
    DATA,
    ENCODING,
    EVENT_ID,
    EVENT_METADATA,
    EVENT_VERSION,
    EVENT_VERSION_VALUE,
    INFERENCE_TIME,
)

__all__ = ["FIELD_PATHS", "GROUND_TRUTH_DATA", "PARSE_SCHEMA", "encode_label"]

GROUND_TRUTH_DATA: Final = "groundTruthData"

# What pyarrow parses; unknown fields (inferenceId, customAttributes...) are ignored.
PARSE_SCHEMA: Final = pa.schema(
    [
        (GROUND_TRUTH_DATA, pa.struct([(DATA, pa.string()), (ENCODING, pa.string())])),
        (EVENT_METADATA, pa.struct([(EVENT_ID, pa.string()), (INFERENCE_TIME, pa.string())])),
        (EVENT_VERSION, pa.string()),
    ]
)
# Flat column of the decoder -> its path in the record, in the order both decode paths produce them.
FIELD_PATHS: Final[dict[str, tuple[str, ...]]] = {
    "event_id": (EVENT_METADATA, EVENT_ID),
    "label_data": (GROUND_TRUTH_DATA, DATA),
    "label_encoding": (GROUND_TRUTH_DATA, ENCODING),
    "label_inference_time": (EVENT_METADATA, INFERENCE_TIME),
    "event_version": (EVENT_VERSION,),
}


def encode_label(event_id: str, data: str, encoding: str = "CSV") -> bytes:
    """One ground-truth line, compact JSON in the key order of SageMaker's examples, without its newline."""
    return orjson.dumps(
        {
            GROUND_TRUTH_DATA: {DATA: data, ENCODING: encoding},
            EVENT_METADATA: {EVENT_ID: event_id},
            EVENT_VERSION: EVENT_VERSION_VALUE,
        }
    )
