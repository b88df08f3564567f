"""Seeded generator of realistic Amazon SageMaker data-capture trees.

The output mirrors what a real-time endpoint with data capture enabled, plus a ground-truth labelling
job, leave in S3::

    {dest}/capture/{endpoint}/{variant}/YYYY/MM/DD/HH/{MM}-{SS}-{mmm}-{uuid4}.jsonl
    {dest}/ground-truth/YYYY/MM/DD/HH/{MMSS}-{n}.jsonl
    {dest}/synth.json

Every capture line is compact JSON in SageMaker's key order. Payloads are CSV (the XGBoost churn example:
integers, 1-2 decimal floats and one-hot dummies), JSON (``{"instances": ...}`` / ``{"predictions": ...}``)
or JSON Lines, some of them BASE64-encoded, some carrying several records. The same options always give
byte-identical output: every random choice, UUIDs included, comes from one seeded numpy generator.

:func:`synth_batch` writes what batch transform jobs with data capture (and ``GenerateInferenceId``) leave::

    {dest}/transform-input/job-{n}/data-{i}.csv[.gz] | data-{i}.jsonl[.gz]
    {dest}/transform-output/job-{n}/{input name}.out
    {dest}/batch-capture/input/YYYY/MM/DD/HH/{uuid4}.json     (manifests; HH = the job's start hour)
    {dest}/batch-capture/output/YYYY/MM/DD/HH/{uuid4}.json
    {dest}/ground-truth-batch/YYYY/MM/DD/HH/{MMSS}-{n}.jsonl
    {dest}/synth-batch.json

The generator streams one capture object at a time, so memory stays bounded whatever the output size; the
per-row feature text is built in bulk with numpy (fixed-width token gather, then dropping the padding) because
formatting tens of values per row in Python would dominate the runtime of gigabyte-sized benchmarks.
"""

from __future__ import annotations

import base64
import gzip
import itertools
import json
import logging
import math
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone
from fractions import Fraction
from functools import lru_cache
from typing import Any, Final, NamedTuple

import fsspec
import numpy as np
import orjson
from fsspec.implementations.local import LocalFileSystem
from numpy.typing import NDArray

from engine.errors import OptionsError

__all__ = [
    "BatchSynthOptions",
    "BatchSynthSummary",
    "SynthOptions",
    "SynthSummary",
    "refuse_non_empty",
    "synth",
    "synth_batch",
]

logger = logging.getLogger(__name__)

ENDPOINT_PREFIX: Final = "churn-xgb-endpoint"
JSON_FEATURES: Final = 14  # like the adult-income (census) example used with JSON payloads

_MS_PER_HOUR: Final = 3_600_000
_PILOT_EVENTS: Final = 2_000
_LABEL_FILE_LINES: Final = 20_000  # flush a ground-truth object at this size to keep memory bounded
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


def synth(
    dest: str,
    options: SynthOptions = _DEFAULT_OPTIONS,
    *,
    storage_options: dict[str, Any] | None = None,
) -> SynthSummary:
    """Writes a synthetic SageMaker capture tree (and its ground truth) under ``dest``.

    Existing objects under ``dest`` are left alone; objects with the same key are overwritten.

    Args:
        dest: An fsspec URL or local path (``/tmp/x``, ``file:///tmp/x``, ``memory://x``, ``s3://bucket/x``).
        options: What to generate.
        storage_options: Passed to the fsspec filesystem (credentials, endpoint URL, ...).

    Returns:
        Counts of what was written; the same summary (plus the options) is stored as ``{dest}/synth.json``.

    Raises:
        OptionsError: If an option is out of range (a ``ValueError``).
    """
    _validate(options)
    fs, base = fsspec.core.url_to_fs(dest, **(storage_options or {}))
    root = dest.rstrip("/") or dest
    writer = _Writer(fs, base.rstrip("/") or base)
    factory = _EventFactory(options)
    main_seed, pilot_seed, label_seed = np.random.SeedSequence(options.seed).spawn(3)
    rng = np.random.default_rng(main_seed)
    labels = _LabelSink(writer, np.random.default_rng(label_seed), options.start)

    streams = _streams(options)
    unit_weights = [Fraction(1, options.hours) * w for _, _, w in streams] * options.hours
    target = options.target_bytes
    planned = _allocate(options.records, unit_weights) if target is None else []
    # Weight of the units from each one to the last, to share what is left of a byte target.
    weight_left = list(itertools.accumulate(reversed(unit_weights)))[::-1]
    pilot_events, pilot_bytes = (0, 0) if target is None else factory.pilot(np.random.default_rng(pilot_seed))

    events = records = files = capture_bytes = 0
    events_per_hour: dict[str, int] = {}
    unit = 0
    for hour in range(options.hours):
        hour_start = options.start + timedelta(hours=hour)
        hour_key = hour_start.strftime("%Y-%m-%dT%H")
        events_per_hour[hour_key] = 0
        time_prefix = hour_start.strftime("%Y-%m-%dT%H:")
        for endpoint, variant, _ in streams:
            if target is None:
                count = planned[unit]
            else:
                # Re-plan each unit from what is left, so the pilot's estimate error does not accumulate.
                share = float(unit_weights[unit] / weight_left[unit])
                mean = (pilot_bytes + capture_bytes) / (pilot_events + events)
                count = round(max(0, target - capture_bytes) * share / mean)
                if count == 0 and events == 0 and unit == len(unit_weights) - 1:
                    count = 1  # a positive target always yields something to read
            unit += 1
            if count == 0:
                continue
            folder = f"capture/{endpoint}/{variant}/{hour_start:%Y/%m/%d/%H}"
            times, fractional = _event_times(rng, count, options.fractional_time_share)
            for lo in range(0, count, options.records_per_file):
                hi = lo + options.records_per_file
                batch = factory.render(rng, times[lo:hi], fractional[lo:hi], time_prefix)
                first = int(times[lo])
                name = (
                    f"{first // 60_000 % 60:02d}-{first // 1000 % 60:02d}-{first % 1000:03d}-{_uuid4s(rng, 1)[0]}.jsonl"
                )
                writer.write(f"{folder}/{name}", batch.data)
                files += 1
                capture_bytes += len(batch.data)
                events += batch.events
                records += batch.records
                labels.add(hour, batch.labels)
            events_per_hour[hour_key] += count
        # No later inference hour can add labels to collection hours up to this one.
        labels.flush(through_hour=hour)
    labels.flush(through_hour=None)

    summary = SynthSummary(
        root=root,
        capture_root=f"{root}/capture",
        ground_truth_root=f"{root}/ground-truth",
        events=events,
        records=records,
        files=files,
        capture_bytes=capture_bytes,
        labels=labels.lines,
        label_files=labels.files,
        events_per_hour=events_per_hour,
    )
    # Written last: its presence tells a reader the tree is complete.
    writer.write("synth.json", orjson.dumps({**summary.to_dict(), "options": options}, option=orjson.OPT_INDENT_2))
    logger.info(
        "synth wrote %d events (%d records, %d bytes) in %d files and %d labels in %d files under %s",
        events,
        records,
        capture_bytes,
        files,
        summary.labels,
        summary.label_files,
        root,
    )
    return summary


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


def _streams(o: SynthOptions) -> list[tuple[str, str, Fraction]]:
    """Endpoint/variant pairs with their share of the traffic.

    Variant k gets weight 1/k so AllTraffic is always the busiest; endpoints decay geometrically so they
    differ in volume too. Exact fractions keep the allocation deterministic across platforms.
    """
    pairs = []
    for e in range(o.endpoints):
        for v in range(o.variants):
            variant = "AllTraffic" if v == 0 else f"Variant{v + 1}"
            pairs.append((f"{ENDPOINT_PREFIX}-{e + 1}", variant, Fraction(4, 5) ** e * Fraction(1, v + 1)))
    total = sum((w for _, _, w in pairs), Fraction(0))
    return [(e, v, w / total) for e, v, w in pairs]


def _allocate(total: int, weights: list[Fraction]) -> list[int]:
    """Splits ``total`` into integers proportional to ``weights`` (largest remainder, exact)."""
    raw = [total * w for w in weights]
    counts = [math.floor(r) for r in raw]
    left = total - sum(counts)
    by_remainder = sorted(range(len(raw)), key=lambda i: (counts[i] - raw[i], i))
    for i in by_remainder[:left]:
        counts[i] += 1
    return counts


def _event_times(
    rng: np.random.Generator, count: int, fractional_share: float
) -> tuple[NDArray[np.int64], NDArray[np.bool_]]:
    """Sorted millisecond offsets within an hour and which of them print fractional seconds.

    Events printed without fractions are truncated to the whole second *before* sorting, so the file order and
    the file name (the first event's time) agree with what the lines say.
    """
    ms = rng.integers(0, _MS_PER_HOUR, size=count, dtype=np.int64)
    fractional = rng.random(count) < fractional_share
    ms = np.where(fractional, ms, ms - ms % 1000)
    order = np.argsort(ms, kind="stable")
    return ms[order], fractional[order]


# --- feature text -----------------------------------------------------------------------------------------
#
# Every value printed is drawn from a fixed vocabulary of tokens (small integers, floats with one or two
# decimals), so a row of token ids can be rendered by gathering fixed-width byte rows from a table and
# dropping the zero padding: no per-value Python formatting.

_INT_N: Final = 1000
_FLOAT_INT_BASE: Final = _INT_N  # the same integers printed as floats ("39.0") for JSON features
_D1_BASE: Final = 2 * _INT_N
_D1_N: Final = 4000  # 0.0 .. 399.9
_D2_BASE: Final = _D1_BASE + _D1_N
_D2_N: Final = 8000  # 0.0 .. 79.99


@lru_cache(maxsize=1)
def _tokens() -> tuple[str, ...]:
    """The vocabulary, in Python's shortest float repr (k / 10 round-trips to its one-decimal string)."""
    ints = [str(v) for v in range(_INT_N)]
    float_ints = [repr(float(v)) for v in range(_INT_N)]
    tenths = [repr(k / 10) for k in range(_D1_N)]
    hundredths = [repr(k / 100) for k in range(_D2_N)]
    return (*ints, *float_ints, *tenths, *hundredths)


@lru_cache(maxsize=2)
def _token_table(terminator: bytes) -> NDArray[np.uint8]:
    """Token i as bytes + terminator, zero-padded to a common width, one row per token."""
    encoded = [t.encode("ascii") + terminator for t in _tokens()]
    width = max(map(len, encoded))
    return np.array(encoded, dtype=f"S{width}").view(np.uint8).reshape(len(encoded), width)


def _render_rows(ids: NDArray[np.int32]) -> list[str]:
    """Renders each row of token ids as comma-separated text."""
    rows = ids.shape[0]
    if rows == 0:
        return []
    body = _token_table(b",")[ids[:, :-1]].reshape(rows, -1)
    last = _token_table(b"\n")[ids[:, -1]]
    flat = np.concatenate((body, last), axis=1).ravel()
    text: str = flat[flat != 0].tobytes().decode("ascii")
    return text.split("\n")[:-1]


class _Column(NamedTuple):
    """One numeric churn column: how it is drawn and at which resolution it is printed."""

    kind: str  # "int" | "vmail" | "poisson" | "minutes" | "charge"
    mean: float
    sd: float = 0.0
    lo: float = 0.0
    hi: float = 0.0
    risk: float = 0.0  # correlation with the latent churn risk, so predictions and labels relate to features


# The numeric columns of the churn data set; charges are minutes times a tariff, as in the original data.
_CHURN_COLUMNS: Final = (
    _Column("int", 101.0, 40.0, 1, 243),  # account length
    _Column("vmail", 29.0, 8.0, 1, 51),  # voice-mail messages; most customers have none
    _Column("minutes", 180.0, 54.0, 0.0, 350.8, risk=0.5),  # day minutes
    _Column("int", 100.0, 20.0, 0, 165),  # day calls
    _Column("charge", 0.17),  # day charge
    _Column("minutes", 201.0, 51.0, 0.0, 363.7, risk=0.2),  # evening minutes
    _Column("int", 100.0, 20.0, 0, 170),  # evening calls
    _Column("charge", 0.085),  # evening charge
    _Column("minutes", 201.0, 51.0, 23.2, 395.0),  # night minutes
    _Column("int", 100.0, 20.0, 33, 175),  # night calls
    _Column("charge", 0.045),  # night charge
    _Column("minutes", 10.2, 2.8, 0.0, 20.0),  # international minutes
    _Column("poisson", 4.5, 0.0, 0, 20),  # international calls
    _Column("charge", 0.27),  # international charge
    _Column("poisson", 1.56, 0.0, 0, 9, risk=0.4),  # customer-service calls
)
# One-hot groups after the numeric columns: state, area code, international plan, voice-mail plan.
_CHURN_GROUPS: Final[tuple[tuple[int, tuple[float, ...] | None], ...]] = (
    (51, None),
    (3, (0.25, 0.5, 0.25)),
    (2, (0.9, 0.1)),
    (2, (0.72, 0.28)),
)
_MIN_NUMERIC: Final = 11  # the churn example: 11 numeric columns + 58 dummies = 69 features


def _csv_layout(features: int) -> tuple[int, tuple[tuple[int, tuple[float, ...] | None], ...]]:
    """Numeric column count and one-hot groups for ``features`` columns (69 gives the churn layout)."""
    left = features - min(features, _MIN_NUMERIC)
    groups = []
    for size, probs in _CHURN_GROUPS:
        if size <= left:
            groups.append((size, probs))
            left -= size
    return features - sum(size for size, _ in groups), tuple(groups)


def _numeric_ids(
    rng: np.random.Generator, risk: NDArray[np.float64], count: int, *, as_float: bool
) -> NDArray[np.int32]:
    """Token ids of ``count`` numeric churn columns (cycling the template) for each record."""
    rows = len(risk)
    out = np.empty((rows, count), dtype=np.int32)
    int_base = _FLOAT_INT_BASE if as_float else 0
    tenths = np.zeros(rows, dtype=np.int64)
    for j in range(count):
        col = _CHURN_COLUMNS[j % len(_CHURN_COLUMNS)]
        if col.kind == "charge":
            # Charge in cents = minutes (in tenths) * tariff * 10, like the data set's exact tariffs.
            out[:, j] = _D2_BASE + np.minimum(np.rint(tenths * (col.mean * 10)), _D2_N - 1)
            continue
        if col.kind == "poisson":
            lam = col.mean * np.exp(col.risk * risk - col.risk**2 / 2)
            out[:, j] = int_base + np.clip(rng.poisson(lam), col.lo, col.hi)
            continue
        noise = rng.standard_normal(rows)
        drawn = col.mean + col.sd * (col.risk * risk + math.sqrt(1 - col.risk**2) * noise)
        if col.kind == "minutes":
            tenths = np.clip(np.rint(drawn * 10), round(col.lo * 10), round(col.hi * 10)).astype(np.int64)
            out[:, j] = _D1_BASE + tenths
        else:
            values = np.clip(np.rint(drawn), col.lo, col.hi)
            if col.kind == "vmail":
                values = np.where(rng.random(rows) < 0.72, 0, values)
            out[:, j] = int_base + values
    return out


def _csv_ids(
    rng: np.random.Generator,
    risk: NDArray[np.float64],
    numeric: int,
    groups: tuple[tuple[int, tuple[float, ...] | None], ...],
) -> NDArray[np.int32]:
    """Token ids of full churn CSV rows: numeric columns, then 0/1 one-hot groups."""
    rows = len(risk)
    parts = [_numeric_ids(rng, risk, numeric, as_float=False)]
    for size, probs in groups:
        pick = rng.choice(size, size=rows, p=probs) if probs else rng.integers(0, size, size=rows)
        onehot = np.zeros((rows, size), dtype=np.int32)  # token 0 is "0", token 1 is "1"
        onehot[np.arange(rows), pick] = 1
        parts.append(onehot)
    return np.concatenate(parts, axis=1)


def _predictions(rng: np.random.Generator, risk: NDArray[np.float64]) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    """Model scores and true 0/1 labels for each record; higher risk means both are more often 1."""
    logit = -2.0 + 1.4 * risk  # roughly the churn base rate of ~14%
    truth = (rng.random(len(risk)) < 1 / (1 + np.exp(-logit))).astype(np.int64)
    # The model sees the risk through noise, so its quality metrics are good but not perfect.
    score = 1 / (1 + np.exp(-(logit + 0.6 * rng.standard_normal(len(risk)))))
    # Clipped so no score prints in exponent notation or rounds to exactly 0 or 1.
    return np.clip(score, 5e-4, 1 - 5e-4), truth


_CSV, _JSON, _JSONL = 0, 1, 2  # payload kinds; JSON is {"instances": ...}, JSONL is JSON Lines


class _Pool(NamedTuple):
    """Rendered payload records of one kind for a batch, consumed in order by the events."""

    rows: list[str]  # feature text of each record, comma-separated
    scores: list[str]  # the model's score for each record, as printed
    truth: list[int]  # the true 0/1 label of each record


def _float32_text(scores: NDArray[np.float64]) -> list[str]:
    """Scores as XGBoost prints them: float32 values widened to double ("0.036397725343704224")."""
    return [repr(s) for s in scores.astype(np.float32).astype(np.float64).tolist()]


def _churn_pool(
    rng: np.random.Generator, count: int, numeric: int, groups: tuple[tuple[int, tuple[float, ...] | None], ...]
) -> _Pool:
    """Records of churn CSV rows (``numeric`` columns, then the one-hot ``groups``), float32 probabilities."""
    risk = rng.standard_normal(count)
    rows = _render_rows(_csv_ids(rng, risk, numeric, groups))
    scores, truth = _predictions(rng, risk)
    return _Pool(rows, _float32_text(scores), truth.tolist())


def _json_pool(rng: np.random.Generator, count: int) -> _Pool:
    """Records of ``{"instances": [{"features": [...]}]}`` bodies: 14 float features."""
    risk = rng.standard_normal(count)
    rows = _render_rows(_numeric_ids(rng, risk, JSON_FEATURES, as_float=True))
    scores, truth = _predictions(rng, risk)
    return _Pool(rows, _float32_text(scores), truth.tolist())


def _jsonl_pool(rng: np.random.Generator, count: int) -> _Pool:
    """Records of JSON Lines bodies: 14 integer adult-census features, scores with 15 significant digits."""
    risk = rng.standard_normal(count)
    features = _adult_features(rng, risk)
    rows = [",".join(map(str, row)) for row in features.tolist()]
    scores, truth = _predictions(rng, risk)
    # Like the linear-learner example's output ("0.989977359771728"); repr(float(..)) drops trailing zeros.
    return _Pool(rows, [repr(float(f"{s:.15g}")) for s in scores.tolist()], truth.tolist())


def _adult_features(rng: np.random.Generator, risk: NDArray[np.float64]) -> NDArray[np.int64]:
    """Label-encoded adult-census rows: age, workclass, fnlwgt, education, ..., hours-per-week, country."""
    rows = len(risk)
    cols = [
        np.clip(np.rint(38.6 + 13.6 * (0.4 * risk + 0.92 * rng.standard_normal(rows))), 17, 90),  # age
        rng.integers(0, 9, size=rows),  # workclass
        np.clip(np.rint(rng.lognormal(12.0, 0.55, size=rows)), 12_285, 1_484_705),  # fnlwgt
        rng.integers(0, 16, size=rows),  # education
        np.clip(np.rint(10.1 + 2.6 * (0.5 * risk + 0.87 * rng.standard_normal(rows))), 1, 16),  # education-num
        rng.integers(0, 7, size=rows),  # marital status
        rng.integers(0, 15, size=rows),  # occupation
        rng.integers(0, 6, size=rows),  # relationship
        rng.choice(5, size=rows, p=(0.01, 0.03, 0.1, 0.01, 0.85)),  # race
        (rng.random(rows) < 0.67).astype(np.int64),  # sex
        np.where(rng.random(rows) < 0.92, 0, rng.integers(114, 99_999, size=rows)),  # capital gain
        np.where(rng.random(rows) < 0.95, 0, rng.integers(155, 4_356, size=rows)),  # capital loss
        np.clip(np.rint(40.4 + 12.3 * rng.standard_normal(rows)), 1, 99),  # hours per week
        np.where(rng.random(rows) < 0.9, 37, rng.integers(0, 41, size=rows)),  # native country
    ]
    return np.stack(cols, axis=1).astype(np.int64)


_HEX: Final = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
_UUID_SLOTS: Final = ((0, 8, 0), (9, 13, 8), (14, 18, 12), (19, 23, 16), (24, 36, 20))


def _uuid4s(rng: np.random.Generator, count: int) -> list[str]:
    """``count`` random (version 4) UUID strings drawn from ``rng`` instead of the OS entropy pool."""
    raw = rng.integers(0, 256, size=(count, 16), dtype=np.uint8)
    raw[:, 6] = (raw[:, 6] & 0x0F) | 0x40
    raw[:, 8] = (raw[:, 8] & 0x3F) | 0x80
    nibbles = np.empty((count, 32), dtype=np.uint8)
    nibbles[:, 0::2] = raw >> 4
    nibbles[:, 1::2] = raw & 0x0F
    digits = _HEX[nibbles]
    text = np.full((count, 36), ord("-"), dtype=np.uint8)
    for lo, hi, src in _UUID_SLOTS:
        text[:, lo:hi] = digits[:, src : src + hi - lo]
    joined = text.tobytes().decode("ascii")
    return [joined[i : i + 36] for i in range(0, 36 * count, 36)]


_MMSS: Final = tuple(f"{s // 60:02d}:{s % 60:02d}" for s in range(3600))


class _Batch(NamedTuple):
    """One rendered capture object and the labels of its events."""

    data: bytes  # JSONL, every line ending in a newline
    events: int
    records: int
    labels: list[tuple[int, str]]  # (delay in hours, ground-truth line)


class _EventFactory:
    """Draws capture events and their labels; holds the run-wide counters that keep ids unique."""

    def __init__(self, options: SynthOptions) -> None:
        self.o = options
        self.numeric, self.groups = _csv_layout(options.features)
        self.inference_ids = 0
        self.json_events = 0

    def pilot(self, rng: np.random.Generator) -> tuple[int, int]:
        """Renders a throw-away sample and returns (events, bytes) to size a ``target_bytes`` run."""
        saved = (self.inference_ids, self.json_events)
        ms, fractional = _event_times(rng, _PILOT_EVENTS, self.o.fractional_time_share)
        size = 0
        for lo in range(0, _PILOT_EVENTS, self.o.records_per_file):
            hi = lo + self.o.records_per_file
            size += len(self.render(rng, ms[lo:hi], fractional[lo:hi], "2000-01-01T00:").data)
        self.inference_ids, self.json_events = saved
        return _PILOT_EVENTS, size

    def _csv_pool(self, rng: np.random.Generator, count: int) -> _Pool:
        """Records of churn CSV bodies: ``features`` columns, float32 probabilities."""
        return _churn_pool(rng, count, self.numeric, self.groups)

    def render(
        self, rng: np.random.Generator, ms: NDArray[np.int64], fractional: NDArray[np.bool_], time_prefix: str
    ) -> _Batch:
        """Draws one capture object with an event per entry of ``ms``.

        Args:
            rng: The run's random generator.
            ms: Sorted millisecond offsets of the events within their hour.
            fractional: Which events print fractional seconds.
            time_prefix: The hour as ``YYYY-MM-DDTHH:``.

        Returns:
            The object's bytes, its event and record counts, and the labels of its labelled events.
        """
        o = self.o
        n = len(ms)
        is_json = rng.random(n) < o.json_share
        # JSON events alternate between the two shapes, run-wide.
        json_rank = np.cumsum(is_json) - 1 + self.json_events
        self.json_events += int(is_json.sum())
        jsonl_shape = json_rank % 2 == 1
        multi = rng.random(n) < o.multi_record_share
        n_records = np.where(multi, rng.integers(2, 6, size=n), 1)
        trailing = rng.random(n) < _TRAILING_NEWLINE_SHARE
        b64 = rng.random(n) < o.base64_share
        has_iid = rng.random(n) < o.inference_id_share
        labelled = rng.random(n) < o.label_share
        delays = rng.integers(0, o.max_label_delay_hours + 1, size=n)
        event_ids = _uuid4s(rng, n)

        kinds = np.where(is_json, np.where(jsonl_shape, _JSONL, _JSON), _CSV)
        counts = [int(n_records[kinds == kind].sum()) for kind in (_CSV, _JSON, _JSONL)]
        pools = (
            self._csv_pool(rng, counts[_CSV]),
            _json_pool(rng, counts[_JSON]),
            _jsonl_pool(rng, counts[_JSONL]),
        )
        cursors = [0, 0, 0]

        lines: list[bytes] = []
        labels: list[tuple[int, str]] = []
        for k, kind, trail, enc64, iid, label, delay, eid, t, frac in zip(
            n_records.tolist(),
            kinds.tolist(),
            trailing.tolist(),
            b64.tolist(),
            has_iid.tolist(),
            labelled.tolist(),
            delays.tolist(),
            event_ids,
            ms.tolist(),
            fractional.tolist(),
            strict=True,
        ):
            pool, at = pools[kind], cursors[kind]
            cursors[kind] = at + k
            rows, scores, truth = pool.rows[at : at + k], pool.scores[at : at + k], pool.truth[at : at + k]
            if kind == _CSV:
                in_type, out_type, encoding = "text/csv", "text/csv; charset=utf-8", "CSV"
                body_in = "\n".join(rows) + ("\n" if k > 1 and trail else "")
                body_out = "\n".join(scores)
                label_data = "\n".join(["1" if v else "0" for v in truth])
            else:
                predicted = [int(float(s) >= 0.5) for s in scores]
                if kind == _JSONL:
                    in_type = out_type = "application/jsonlines"
                    body_in = "\n".join(['{"features":[' + r + "]}" for r in rows])
                    body_out = "".join(
                        [f'{{"predicted_label":{p},"score":{s}}}\n' for p, s in zip(predicted, scores, strict=True)]
                    )
                else:
                    in_type = out_type = "application/json"
                    instances = ", ".join(['{"features": [' + r.replace(",", ", ") + "]}" for r in rows])
                    body_in = '{"instances": [' + instances + "]}"
                    predictions = ", ".join(
                        [f'{{"score": {s}, "predicted_label": {p}}}' for p, s in zip(predicted, scores, strict=True)]
                    )
                    body_out = '{"predictions": [' + predictions + "]}"
                encoding = "JSON"
                if k == 1:
                    label_data = f'{{"label": {truth[0]}}}'
                else:
                    label_data = '{"instances": [' + ", ".join([f'{{"label": {v}}}' for v in truth]) + "]}"
            label_encoding = encoding
            if enc64:
                body_in = base64.b64encode(body_in.encode()).decode("ascii")
                body_out = base64.b64encode(body_out.encode()).decode("ascii")
                encoding = "BASE64"
            metadata = {"eventId": eid}
            if iid:
                self.inference_ids += 1
                metadata["inferenceId"] = str(self.inference_ids)
            metadata["inferenceTime"] = time_prefix + _MMSS[t // 1000] + (f".{t % 1000:03d}Z" if frac else "Z")
            event = {
                "captureData": {
                    "endpointInput": {
                        "observedContentType": in_type,
                        "mode": "INPUT",
                        "data": body_in,
                        "encoding": encoding,
                    },
                    "endpointOutput": {
                        "observedContentType": out_type,
                        "mode": "OUTPUT",
                        "data": body_out,
                        "encoding": encoding,
                    },
                },
                "eventMetadata": metadata,
                "eventVersion": "0",
            }
            lines.append(orjson.dumps(event))
            if label:
                key = metadata.get("inferenceId", eid)
                line = orjson.dumps(
                    {
                        "groundTruthData": {"data": label_data, "encoding": label_encoding},
                        "eventMetadata": {"eventId": key},
                        "eventVersion": "0",
                    }
                )
                # Labels wait in memory for hours; orjson's bytes keep a ~4 KiB buffer each, a str copy does not.
                labels.append((delay, line.decode()))
        lines.append(b"")
        return _Batch(b"\n".join(lines), n, sum(counts), labels)


class _Writer:
    """Writes whole objects under a base path, creating local directories on demand."""

    def __init__(self, fs: fsspec.AbstractFileSystem, base: str) -> None:
        self.fs = fs
        self.base = base
        self.local = isinstance(fs, LocalFileSystem)
        self.made: set[str] = set()

    def write(self, key: str, data: bytes) -> None:
        """Stores ``data`` as ``{base}/{key}`` in one request."""
        path = f"{self.base}/{key}"
        if self.local:
            parent = path.rsplit("/", 1)[0]
            if parent not in self.made:
                self.fs.makedirs(parent, exist_ok=True)
                self.made.add(parent)
        self.fs.pipe_file(path, data)


class _LabelSink:
    """Buffers ground-truth lines per collection hour and writes them as bounded-size objects."""

    def __init__(
        self, writer: _Writer, rng: np.random.Generator, start: datetime, folder: str = "ground-truth"
    ) -> None:
        self.writer = writer
        self.folder = folder
        self.rng = rng
        self.start = start
        self.pending: dict[int, list[str]] = {}
        self.sequence: dict[int, int] = {}
        self.lines = 0
        self.files = 0

    def add(self, inference_hour: int, labels: list[tuple[int, str]]) -> None:
        """Queues labels of events from ``inference_hour``, each collected ``delay`` hours later."""
        for delay, line in labels:
            bucket = self.pending.setdefault(inference_hour + delay, [])
            bucket.append(line)
            if len(bucket) >= _LABEL_FILE_LINES:
                self._write(inference_hour + delay)

    def flush(self, *, through_hour: int | None) -> None:
        """Writes every pending collection hour up to ``through_hour`` (all of them if None)."""
        for hour in sorted(self.pending):
            if through_hour is None or hour <= through_hour:
                self._write(hour)

    def _write(self, hour: int) -> None:
        bucket = self.pending.pop(hour)
        seq = self.sequence.get(hour, 0) + 1
        self.sequence[hour] = seq
        minute, second = (int(v) for v in self.rng.integers(0, 60, size=2))
        when = self.start + timedelta(hours=hour)
        bucket.append("")
        data = "\n".join(bucket).encode()
        self.writer.write(f"{self.folder}/{when:%Y/%m/%d/%H}/{minute:02d}{second:02d}-{seq}.jsonl", data)
        self.lines += len(bucket) - 1
        self.files += 1


# --- batch transform ----------------------------------------------------------------------------------------
#
# A batch transform job with DataCaptureConfig writes no capture records of its own: it leaves one input and one
# output manifest under {DestinationS3Uri}/input|output/{start hour}/, pointing at the transform's own input
# objects and at the `.out` objects it wrote next to them (one per input file, one line per input line with
# AssembleWith=Line). GenerateInferenceId appends a random UUID and the job's start time to every output record.

_DEFAULT_BATCH_OPTIONS: Final = BatchSynthOptions()
_IDS_FIRST_SHARE: Final = 0.5  # of JSON Lines jobs; real output puts the ID keys first, the docs' example last
_GZIP_LEVEL: Final = 6  # zlib's default; level 9 costs much more time on benchmark-sized inputs for little gain


def synth_batch(
    dest: str,
    options: BatchSynthOptions = _DEFAULT_BATCH_OPTIONS,
    *,
    storage_options: dict[str, Any] | None = None,
) -> BatchSynthSummary:
    """Writes synthetic batch transform inputs, outputs, capture manifests and ground truth under ``dest``.

    Manifest prefixes are full URIs of where the objects were written (``file:///...`` for a local ``dest``,
    ``memory:///...``, ``s3://...``), so a reader resolves every entry as plain ``prefix + relative key``.
    Existing objects under ``dest`` are left alone; objects with the same key are overwritten.

    Args:
        dest: An fsspec URL or local path (``/tmp/x``, ``file:///tmp/x``, ``memory://x``, ``s3://bucket/x``).
        options: What to generate.
        storage_options: Passed to the fsspec filesystem (credentials, endpoint URL, ...).

    Returns:
        Counts of what was written; the same summary (plus the options) is stored as ``{dest}/synth-batch.json``.

    Raises:
        OptionsError: If an option is out of range (a ``ValueError``).
    """
    _validate_batch(options)
    fs, base = fsspec.core.url_to_fs(dest, **(storage_options or {}))
    base = base.rstrip("/") or base
    root = dest.rstrip("/") or dest
    base_uri = fs.unstrip_protocol(base)
    base_uri = base_uri if base_uri.endswith("/") else base_uri + "/"
    writer = _Writer(fs, base)
    plan_seed, data_seed, label_seed = np.random.SeedSequence(options.seed).spawn(3)
    jobs = _plan_jobs(np.random.default_rng(plan_seed), options)
    rng = np.random.default_rng(data_seed)
    labels = _LabelSink(writer, np.random.default_rng(label_seed), options.start, folder="ground-truth-batch")
    numeric, groups = _csv_layout(options.features)

    input_files = output_files = records = missing = 0
    for job in jobs:
        in_folder, out_folder = f"transform-input/job-{job.number}", f"transform-output/job-{job.number}"
        for file in job.files:
            rendered = _render_batch_file(rng, job, options, numeric, groups)
            data = gzip.compress(rendered.input, _GZIP_LEVEL, mtime=0) if file.gzip else rendered.input
            writer.write(f"{in_folder}/{file.name}", data)
            input_files += 1
            if file.failed:
                # SageMaker uploads no partial output, so a failed file leaves no .out (and no IDs to label).
                missing += 1
                continue
            # Gzip inputs are decompressed before the model sees them and the docs never name their output;
            # we write "<input name>.out" (data-0.csv.gz.out), uncompressed.
            writer.write(f"{out_folder}/{file.name}.out", rendered.output)
            output_files += 1
            records += options.records_per_file
            labels.add(job.number, rendered.labels)

        hour = f"{job.started:%Y/%m/%d/%H}"
        in_prefix = f"{base_uri}{in_folder}/"
        if job.single_object:
            # The transform's S3Uri named the object itself: the prefix is the whole URI, the key is empty.
            in_manifest: list[Any] = [{"prefix": in_prefix + job.files[0].name}, ""]
        else:
            in_manifest = [{"prefix": in_prefix}, *(f.name for f in job.files)]
        # A failed file keeps its entry in the output manifest too (we assume capture lists the job's files, not
        # what was uploaded), so readers meet a listed .out that is absent, as when outputs are deleted later.
        out_manifest: list[Any] = [{"prefix": f"{base_uri}{out_folder}/"}, *(f"{f.name}.out" for f in job.files)]
        # json.dumps, not orjson: real manifests are printed with ", " and ": " separators.
        writer.write(f"batch-capture/input/{hour}/{job.manifests[0]}.json", json.dumps(in_manifest).encode())
        writer.write(f"batch-capture/output/{hour}/{job.manifests[1]}.json", json.dumps(out_manifest).encode())
        # Jobs run in hour order, so no later job can add labels to collection hours up to this one.
        labels.flush(through_hour=job.number)
    labels.flush(through_hour=None)

    summary = BatchSynthSummary(
        root=root,
        capture_root=f"{root}/batch-capture",
        transform_input_root=f"{root}/transform-input",
        transform_output_root=f"{root}/transform-output",
        ground_truth_root=f"{root}/ground-truth-batch",
        jobs=len(jobs),
        input_files=input_files,
        output_files=output_files,
        records=records,
        missing_outputs=missing,
        labels=labels.lines,
    )
    # Written last: its presence tells a reader the tree is complete.
    writer.write(
        "synth-batch.json", orjson.dumps({**summary.to_dict(), "options": options}, option=orjson.OPT_INDENT_2)
    )
    logger.info(
        "synth_batch wrote %d jobs: %d input files, %d outputs (%d records, %d missing) and %d labels under %s",
        summary.jobs,
        input_files,
        output_files,
        records,
        missing,
        summary.labels,
        root,
    )
    return summary


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


class _BatchFile(NamedTuple):
    """One input file of a transform job."""

    name: str  # relative to the job's input folder
    gzip: bool
    failed: bool


class _BatchJob(NamedTuple):
    """One transform job: its output format and quirks, and its input files."""

    number: int  # the job is job-{number}
    started: datetime  # whole seconds, within hour ``number`` after the start option
    jsonl: bool  # JSON Lines in and out, else CSV
    join: bool  # JoinSource=Input
    id_space: bool  # CSV: ", <uuid>" as in the docs' example
    ids_first: bool  # JSON Lines: SageMakerInferenceId/Time before the other keys, else after them
    single_object: bool  # the input S3Uri named the job's one input object
    files: tuple[_BatchFile, ...]
    manifests: tuple[str, str]  # UUIDs naming the input and output manifests


def _quota(rng: np.random.Generator, count: int, share: float) -> NDArray[np.bool_]:
    """``round(count * share)`` of ``count`` flags set, at random places."""
    flags = np.zeros(count, dtype=np.bool_)
    flags[rng.permutation(count)[: math.floor(count * share + 0.5)]] = True
    return flags


def _plan_jobs(rng: np.random.Generator, o: BatchSynthOptions) -> list[_BatchJob]:
    """Draws every job's format, quirks and files up front, so shares are exact over the whole run."""
    single = int(rng.integers(o.jobs)) if o.single_object_job else -1
    jsonl = _quota(rng, o.jobs, o.jsonl_share)
    join = _quota(rng, o.jobs, o.join_share)
    id_space = np.zeros(o.jobs, dtype=np.bool_)
    id_space[~jsonl] = _quota(rng, int((~jsonl).sum()), o.id_space_share)
    ids_first = np.zeros(o.jobs, dtype=np.bool_)
    ids_first[jsonl] = _quota(rng, int(jsonl.sum()), _IDS_FIRST_SHARE)
    counts = [1 if j == single else o.files_per_job for j in range(o.jobs)]
    gzipped = _quota(rng, sum(counts), o.gzip_share).tolist()
    failed = _failed_files(rng, o, single)
    seconds = rng.integers(0, 3600, size=o.jobs).tolist()
    manifests = _uuid4s(rng, 2 * o.jobs)

    jobs = []
    at = 0
    for j, count in enumerate(counts):
        ext = "jsonl" if jsonl[j] else "csv"
        files = tuple(
            _BatchFile(f"data-{i}.{ext}" + (".gz" if gzipped[at + i] else ""), gzipped[at + i], failed[j][i])
            for i in range(count)
        )
        at += count
        jobs.append(
            _BatchJob(
                number=j,
                started=o.start + timedelta(hours=j, seconds=seconds[j]),
                jsonl=bool(jsonl[j]),
                join=bool(join[j]),
                id_space=bool(id_space[j]),
                ids_first=bool(ids_first[j]),
                single_object=j == single,
                files=files,
                manifests=(manifests[2 * j], manifests[2 * j + 1]),
            )
        )
    return jobs


def _failed_files(rng: np.random.Generator, o: BatchSynthOptions, single: int) -> list[list[bool]]:
    """Which files of each job fail: ``round(share * files)``, spread one per job before any job gets two.

    The single-object job never fails, so that edge case always has an output to read.
    """
    others = o.jobs - (single >= 0)
    noise = rng.random((others, o.files_per_job))
    # Rank each file within its job at random; rank dominates the sort key (noise < 1), noise breaks ties.
    rank = noise.argsort(axis=1).argsort(axis=1)
    picked = np.zeros(noise.size, dtype=np.bool_)
    order = np.argsort((rank + noise).ravel(), kind="stable")
    picked[order[: math.floor(noise.size * o.failed_file_share + 0.5)]] = True
    rows = iter(picked.reshape(others, o.files_per_job).tolist())
    return [[False] if j == single else next(rows) for j in range(o.jobs)]


class _BatchRender(NamedTuple):
    """One input file's text, its ``.out`` text and the labels of its records."""

    input: bytes
    output: bytes
    labels: list[tuple[int, str]]  # (delay in hours, ground-truth line)


def _render_batch_file(
    rng: np.random.Generator,
    job: _BatchJob,
    o: BatchSynthOptions,
    numeric: int,
    groups: tuple[tuple[int, tuple[float, ...] | None], ...],
) -> _BatchRender:
    """Draws one input file of ``job`` and renders what the transform writes for it."""
    n = o.records_per_file
    pool = _jsonl_pool(rng, n) if job.jsonl else _churn_pool(rng, n, numeric, groups)
    ids = _uuid4s(rng, n)
    labelled = (rng.random(n) < o.label_share).tolist()
    delays = rng.integers(0, o.max_label_delay_hours + 1, size=n).tolist()
    time = f"{job.started:%Y-%m-%dT%H:%M:%SZ}"  # SageMakerInferenceTime: the job's start, for every record

    if job.jsonl:
        inputs = ['"features":[' + r + "]" for r in pool.rows]  # the input object without its braces
        outputs = ['"predicted_label":' + ("1" if float(s) >= 0.5 else "0") + ',"score":' + s for s in pool.scores]
        keys = ['"SageMakerInferenceId":"' + i + '","SageMakerInferenceTime":"' + time + '"' for i in ids]
        if job.join:
            # First: like the real joined output; last: the docs' "appended" order, with SageMakerOutput after
            # the input keys too. Readers must not depend on key order.
            if job.ids_first:
                lines = [
                    "{" + k + ',"SageMakerOutput":{' + p + "}," + r + "}\n"
                    for k, p, r in zip(keys, outputs, inputs, strict=True)
                ]
            else:
                lines = [
                    "{" + r + ',"SageMakerOutput":{' + p + "}," + k + "}\n"
                    for k, p, r in zip(keys, outputs, inputs, strict=True)
                ]
        elif job.ids_first:
            lines = ["{" + k + "," + p + "}\n" for k, p in zip(keys, outputs, strict=True)]
        else:
            lines = ["{" + p + "," + k + "}\n" for k, p in zip(keys, outputs, strict=True)]
        text_in = "".join(["{" + r + "}\n" for r in inputs])
        label_data = ['{"label": 0}', '{"label": 1}']
        encoding = "JSON"
    else:
        separator = ", " if job.id_space else ","
        tails = [separator + i + "," + time + "\n" for i in ids]
        if job.join:
            lines = [r + "," + s + t for r, s, t in zip(pool.rows, pool.scores, tails, strict=True)]
        else:
            lines = [s + t for s, t in zip(pool.scores, tails, strict=True)]
        text_in = "".join([r + "\n" for r in pool.rows])
        label_data = ["0", "1"]
        encoding = "CSV"

    # Two line templates (label 0 and 1) split around the ID: concatenation is much cheaper than a dumps per label.
    parts = [_label_parts(data, encoding) for data in label_data]
    labels = [
        (delay, parts[truth][0] + iid + parts[truth][1])
        for iid, truth, label, delay in zip(ids, pool.truth, labelled, delays, strict=True)
        if label
    ]
    return _BatchRender(text_in.encode(), "".join(lines).encode(), labels)


@lru_cache(maxsize=4)
def _label_parts(data: str, encoding: str) -> tuple[str, str]:
    """A compact ground-truth line for ``data``, split where its ``eventMetadata.eventId`` value goes."""
    line = orjson.dumps(
        {
            "groundTruthData": {"data": data, "encoding": encoding},
            "eventMetadata": {"eventId": "|"},  # a marker no label text or UUID contains
            "eventVersion": "0",
        }
    ).decode()
    head, tail = line.split("|")
    return head, tail
