"""Batch transform capture: transform inputs, `.out` outputs with appended IDs, input and output manifests."""

from __future__ import annotations

import gzip
import json
import logging
import math
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any, Final, NamedTuple

import fsspec
import numpy as np
import orjson
from numpy.typing import NDArray

from engine.formats.ground_truth import encode_label
from engine.synth.options import BatchSynthOptions, BatchSynthSummary, _validate_batch
from engine.synth.output import _LabelSink, _Writer
from engine.synth.text import _churn_pool, _csv_layout, _jsonl_pool, _uuid4s

logger = logging.getLogger(__name__)

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
    line = encode_label("|", data, encoding).decode()  # "|": a marker no label text or UUID contains
    head, tail = line.split("|")
    return head, tail
