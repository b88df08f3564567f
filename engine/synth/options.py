"""Options and summaries of the generators, and the checks that refuse options describing no real tree."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Final

import fsspec

from engine.errors import OptionsError

logger = logging.getLogger(__name__)

ENDPOINT_PREFIX: Final = "churn-xgb-endpoint"
JSON_FEATURES: Final = 14  # like the adult-income (census) example used with JSON payloads

_MS_PER_HOUR: Final = 3_600_000
_PILOT_EVENTS: Final = 2_000
_TRAILING_NEWLINE_SHARE: Final = 0.5  # of multi-record CSV inputs


@dataclass(frozen=True, kw_only=True)
class SynthOptions:
    """What to generate.

    Attributes:
        records: Number of capture events (lines) in total; ignored if ``target_bytes`` is set.
        target_bytes: If set, generate events until the capture JSONL totals about this many bytes.
        hours: Consecutive UTC hours of traffic.
        start: First hour; must be timezone-aware UTC and a whole hour.
        endpoints: Number of endpoints, named ``churn-xgb-endpoint-1``, ``-2``, ...
        variants: Production variants per endpoint: ``AllTraffic``, then ``Variant2``, ``Variant3``, ...
        seed: Seed of the random generator; the same options give byte-identical output.
        features: CSV feature count, like SageMaker's XGBoost churn example.
        json_share: Share of events with JSON / JSON Lines payloads (the rest are CSV).
        base64_share: Share of events whose input and output are BASE64-encoded.
        inference_id_share: Share of events carrying ``eventMetadata.inferenceId``.
        multi_record_share: Share of events whose body carries 2-5 records.
        fractional_time_share: Share of events with a fractional-second ``inferenceTime``.
        label_share: Share of events that get a ground-truth label.
        max_label_delay_hours: Labels land 0..max hours after the inference hour.
        records_per_file: Events per capture object.
    """

    records: int = 20_000
    target_bytes: int | None = None
    hours: int = 3
    start: datetime = datetime(2026, 11, 1, 0, tzinfo=timezone.utc)
    endpoints: int = 2
    variants: int = 2
    seed: int = 0
    features: int = 69
    json_share: float = 0.25
    base64_share: float = 0.1
    inference_id_share: float = 0.5
    multi_record_share: float = 0.05
    fractional_time_share: float = 0.05
    label_share: float = 0.9
    max_label_delay_hours: int = 6
    records_per_file: int = 400


@dataclass(frozen=True)
class SynthSummary:
    """What :func:`synth` wrote.

    Attributes:
        root: The destination given to :func:`synth`.
        capture_root: ``f"{root}/capture"``.
        ground_truth_root: ``f"{root}/ground-truth"``.
        events: Capture lines written.
        records: Payload records (sum of rows per event).
        files: Capture objects written.
        capture_bytes: Total size of the capture objects.
        labels: Ground-truth lines written.
        label_files: Ground-truth objects written.
        events_per_hour: ``"YYYY-MM-DDTHH"`` -> events whose inferenceTime is in that UTC hour, for every
            hour of the traffic window (zero included).
    """

    root: str
    capture_root: str
    ground_truth_root: str
    events: int
    records: int
    files: int
    capture_bytes: int
    labels: int
    label_files: int
    events_per_hour: dict[str, int]

    def to_dict(self) -> dict[str, Any]:
        """Returns the summary as plain JSON-serialisable data."""
        return asdict(self)


@dataclass(frozen=True, kw_only=True)
class BatchSynthOptions:
    """What :func:`synth_batch` generates.

    Per-job and per-file shares are exact quotas (``round(count * share)`` picked at random), not coin flips,
    so a run of a few jobs still shows every variant the shares ask for.

    Attributes:
        jobs: Transform jobs, ``job-0``, ``job-1``, ...; job n starts within the hour ``start + n hours``.
        files_per_job: Input files per job (the single-object job has one).
        records_per_file: Records (lines) per input file.
        start: Hour of the first job; must be timezone-aware UTC and a whole hour.
        seed: Seed of the random generator; the same options give byte-identical output.
        features: Columns of CSV input rows (the churn layout, as in :func:`synth`).
        jsonl_share: Share of jobs with JSON Lines input and output (the rest are CSV).
        join_share: Share of jobs with ``JoinSource=Input``.
        gzip_share: Share of input files that are gzip-compressed.
        id_space_share: Share of CSV jobs writing ``", <uuid>"`` (a space before the inference ID).
        failed_file_share: Share of input files that fail and so have no ``.out``.
        single_object_job: Whether one job's input ``S3Uri`` is a single object, whose input manifest is
            ``[{"prefix": <object uri>}, ""]``.
        label_share: Share of output records that get a ground-truth label.
        max_label_delay_hours: Labels land 0..max hours after the job's start hour.
    """

    jobs: int = 3
    files_per_job: int = 4
    records_per_file: int = 500
    start: datetime = datetime(2026, 11, 1, 0, tzinfo=timezone.utc)
    seed: int = 0
    features: int = 69
    jsonl_share: float = 0.34
    join_share: float = 0.5
    gzip_share: float = 0.25
    id_space_share: float = 0.5
    failed_file_share: float = 0.1
    single_object_job: bool = True
    label_share: float = 0.9
    max_label_delay_hours: int = 6


@dataclass(frozen=True)
class BatchSynthSummary:
    """What :func:`synth_batch` wrote.

    Attributes:
        root: The destination given to :func:`synth_batch`.
        capture_root: ``f"{root}/batch-capture"``, holding the ``input/`` and ``output/`` manifests.
        transform_input_root: ``f"{root}/transform-input"``.
        transform_output_root: ``f"{root}/transform-output"``.
        ground_truth_root: ``f"{root}/ground-truth-batch"``.
        jobs: Transform jobs (one input and one output manifest each).
        input_files: Input objects written.
        output_files: ``.out`` objects written.
        records: Lines in the ``.out`` objects written.
        missing_outputs: Output-manifest entries with no ``.out`` object (the failed input files).
        labels: Ground-truth lines written.
    """

    root: str
    capture_root: str
    transform_input_root: str
    transform_output_root: str
    ground_truth_root: str
    jobs: int
    input_files: int
    output_files: int
    records: int
    missing_outputs: int
    labels: int

    def to_dict(self) -> dict[str, Any]:
        """Returns the summary as plain JSON-serialisable data."""
        return asdict(self)


_DEFAULT_OPTIONS: Final = SynthOptions()


def refuse_non_empty(dest: str, storage_options: dict[str, Any] | None = None) -> None:
    """The CLI's guard: writing a sample tree into a folder that holds anything else would mix two trees.

    Raises:
        OptionsError: `dest` exists and is not empty (``--overwrite`` skips this check).
    """
    fs, base = fsspec.core.url_to_fs(dest, **(storage_options or {}))
    try:
        entries = fs.ls(base, detail=False) if fs.isdir(base) else ([base] if fs.exists(base) else [])
    except (FileNotFoundError, NotADirectoryError):
        return
    if entries:
        raise OptionsError(f"{dest} is not empty: synth would mix its tree with what is there; give --overwrite")


def _validate(o: SynthOptions) -> None:
    """Raises OptionsError for options that cannot describe a capture tree."""
    _check_positive(
        {
            "hours": o.hours,
            "endpoints": o.endpoints,
            "variants": o.variants,
            "features": o.features,
            "records_per_file": o.records_per_file,
        }
    )
    if o.records < 0:
        raise OptionsError(f"records must be >= 0, got {o.records}")
    if o.target_bytes is not None and o.target_bytes < 1:
        raise OptionsError(f"target_bytes must be >= 1 or None, got {o.target_bytes}")
    if o.max_label_delay_hours < 0:
        raise OptionsError(f"max_label_delay_hours must be >= 0, got {o.max_label_delay_hours}")
    _check_shares(
        {
            "json_share": o.json_share,
            "base64_share": o.base64_share,
            "inference_id_share": o.inference_id_share,
            "multi_record_share": o.multi_record_share,
            "fractional_time_share": o.fractional_time_share,
            "label_share": o.label_share,
        }
    )
    _check_start(o.start)


def _check_positive(values: dict[str, int]) -> None:
    for name, value in values.items():
        if value < 1:
            raise OptionsError(f"{name} must be >= 1, got {value}")


def _check_shares(shares: dict[str, float]) -> None:
    for name, share in shares.items():
        if not 0.0 <= share <= 1.0:
            raise OptionsError(f"{name} must be within [0, 1], got {share}")


def _check_start(start: datetime) -> None:
    offset = start.utcoffset()
    if offset is None or offset != timedelta(0):
        raise OptionsError(f"start must be timezone-aware UTC, got {start!r}")
    if (start.minute, start.second, start.microsecond) != (0, 0, 0):
        raise OptionsError(f"start must be a whole hour, got {start.isoformat()}")


def _validate_batch(o: BatchSynthOptions) -> None:
    """Raises OptionsError for options that cannot describe batch transform jobs."""
    _check_positive(
        {
            "jobs": o.jobs,
            "files_per_job": o.files_per_job,
            "records_per_file": o.records_per_file,
            "features": o.features,
        }
    )
    if o.max_label_delay_hours < 0:
        raise OptionsError(f"max_label_delay_hours must be >= 0, got {o.max_label_delay_hours}")
    _check_shares(
        {
            "jsonl_share": o.jsonl_share,
            "join_share": o.join_share,
            "gzip_share": o.gzip_share,
            "id_space_share": o.id_space_share,
            "failed_file_share": o.failed_file_share,
            "label_share": o.label_share,
        }
    )
    _check_start(o.start)
