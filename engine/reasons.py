"""The registry of reject reasons: every value the ``reason`` column of ``_rejects`` can hold, what it means and
which jobs emit it.

The README's table of reasons is tested against this registry, and every committed run checks its reasons
against it (an unregistered reason is an engine bug: logged, or raised where ``CAPTURE_ENGINE_STRICT_REASONS``
is set, as the test suite does).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["REASONS", "RejectReason", "check_reasons"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RejectReason:
    name: str
    meaning: str
    jobs: tuple[str, ...]  # realtime, batch, merge (ground truth and the capture/batch sources of a merge)


_R, _B, _M = "realtime", "batch", "merge"

REASONS: dict[str, RejectReason] = {
    r.name: r
    for r in (
        # A line of capture or ground-truth JSON Lines.
        RejectReason("invalid_json", "the line (or a JSON payload body) is not valid JSON", (_R, _B, _M)),
        RejectReason(
            "not_an_object", "the line (or an element of a ground-truth array) is JSON but not an object", (_R, _M)
        ),
        RejectReason("missing_event_id", "no eventMetadata.eventId", (_R, _M)),
        RejectReason("missing_inference_time", "no eventMetadata.inferenceTime", (_R, _M)),
        RejectReason(
            "invalid_inference_time",
            "inferenceTime (or an appended SageMakerInferenceTime) is not an ISO-8601 time in years 1-9999",
            (_R, _B, _M),
        ),
        RejectReason("line_too_long", "the line is longer than --max-line-bytes", (_R, _B, _M)),
        RejectReason("invalid_field", "a field cannot be kept as JSON text (nested too deep)", (_R, _M)),
        RejectReason(
            "corrupt_gzip",
            "the line was inflated from a gzip stream that is corrupt, truncated or followed by other bytes",
            (_R, _B, _M),
        ),
        RejectReason("missing_label_data", "a ground-truth record without groundTruthData.data", (_M,)),
        # Payloads (--decode).
        RejectReason("unknown_encoding", "the payload's encoding is not CSV, JSON or BASE64", (_R, _B, _M)),
        RejectReason("invalid_base64", "a BASE64 payload does not decode", (_R, _B, _M)),
        RejectReason("invalid_utf8", "a base64-decoded payload is not UTF-8 text", (_R, _B, _M)),
        RejectReason("empty_payload", "the body holds no record", (_R, _B, _M)),
        RejectReason("invalid_csv", "a CSV body has an unbalanced double quote", (_R, _B, _M)),
        RejectReason("csv_column_count", "a CSV record has another column count than its body or spec", (_R, _B, _M)),
        RejectReason("invalid_value", "a value does not convert to its column's type", (_R, _B, _M)),
        RejectReason("record_count_mismatch", "input and output bodies hold different record counts", (_R, _B, _M)),
        # Batch transform capture.
        RejectReason("invalid_manifest", "a capture manifest is not a JSON array of a prefix and keys", (_B, _M)),
        RejectReason("invalid_manifest_entry", "a manifest entry is not a string", (_B, _M)),
        RejectReason("unexpected_scheme", "a manifest entry names another storage than the source", (_B, _M)),
        RejectReason("key_escapes_prefix", "a manifest entry leaves its prefix (../)", (_B, _M)),
        RejectReason("outside_allowed_root", "a manifest entry lies outside the allowed roots", (_B, _M)),
        RejectReason("missing_inference_id", "an output record without the appended inference ID and time", (_B, _M)),
        RejectReason("line_count_mismatch", "an output line without its input line, or the reverse", (_B, _M)),
        RejectReason("empty_record", "a blank line where a transform record belongs", (_B, _M)),
    )
}


def check_reasons(reasons: Iterable[str], where: str) -> None:
    """Log (or, in strict mode, raise) reasons that are not in the registry: an engine bug, not bad input."""
    unknown = sorted(set(reasons) - REASONS.keys())
    if not unknown:
        return
    message = f"unregistered reject reasons in {where}: {', '.join(unknown)}"
    if os.environ.get("CAPTURE_ENGINE_STRICT_REASONS"):
        raise AssertionError(message)
    logger.error("%s", message)
