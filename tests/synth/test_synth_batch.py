"""Tests of the synthetic batch transform capture generator (engine.synth.synth_batch).

Everything is read back through fsspec from the URIs the manifests name, the way a batch reader will.
"""

from __future__ import annotations

import gzip
import json
import math
import re
import shutil
import uuid
from collections import Counter
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import fsspec
import pytest

from engine.errors import OptionsError
from engine.synth import BatchSynthOptions, BatchSynthSummary, synth_batch

if TYPE_CHECKING:
    # Types only: importing the module before pytest loads it as a plugin would skip its assertion rewriting.
    from tests.s3_server import S3Endpoint

pytest_plugins = ["tests.s3_server"]

MANIFEST_KEY = re.compile(r"batch-capture/(input|output)/(\d{4})/(\d{2})/(\d{2})/(\d{2})/([0-9a-f-]{36})\.json")
LABEL_KEY = re.compile(r"ground-truth-batch/(\d{4})/(\d{2})/(\d{2})/(\d{2})/\d{4}-\d+\.jsonl")
JOB_PREFIX = re.compile(r".*/transform-(input|output)/job-(\d+)/")
INPUT_NAME = re.compile(r"data-\d+\.(csv|jsonl)(\.gz)?")
UUID4 = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
JOB_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z")
ID_KEYS = ["SageMakerInferenceId", "SageMakerInferenceTime"]

# Enough jobs that every variant shows up: CSV and JSON Lines, joined or not, ID keys first and last.
OPTIONS = BatchSynthOptions(jobs=8, files_per_job=3, records_per_file=40, max_label_delay_hours=3, seed=1)


@dataclass
class Job:
    """One transform job as its two manifests and the objects they name describe it."""

    number: int
    hour: datetime  # the manifests' yyyy/mm/dd/hh folder
    input_manifest: list[Any]
    output_manifest: list[Any]
    input_uris: list[str] = field(default_factory=list)
    output_uris: list[str] = field(default_factory=list)
    jsonl: bool = False
    join: bool = False
    id_space: bool = False
    ids_first: bool = False
    time: str = ""  # the SageMakerInferenceTime of every record
    missing: int = 0  # listed outputs that do not exist


@dataclass
class Tree:
    """Everything a synth_batch run left, checked for consistency."""

    files: dict[str, bytes]  # relative key -> bytes
    jobs: dict[int, Job]
    inference_ids: dict[str, Job]  # SageMakerInferenceId -> the job that wrote it
    output_lines: int
    labels: list[tuple[datetime, dict[str, Any]]]  # (collection hour, ground-truth line)


def cat(uri: str) -> bytes:
    """An object's bytes, read through fsspec from its full URI."""
    with fsspec.open(uri, "rb") as f:
        data: bytes = f.read()
    return data


def exists(uri: str) -> bool:
    fs, path = fsspec.core.url_to_fs(uri)
    return bool(fs.isfile(path))


def read_files(dest: str) -> dict[str, bytes]:
    fs, base = fsspec.core.url_to_fs(dest)
    base = base.rstrip("/")
    return {path[len(base) + 1 :]: fs.cat_file(path) for path in fs.find(base)}


def input_kind(uri: str) -> str:
    """``csv`` or ``jsonl``, from an input object's name."""
    match = INPUT_NAME.fullmatch(uri.rsplit("/", 1)[1])
    assert match, uri
    return match.group(1)


def hour_of(groups: tuple[str | Any, ...]) -> datetime:
    y, m, d, h = (int(g) for g in groups)
    return datetime(y, m, d, h, tzinfo=timezone.utc)


def check_tree(dest: str, options: BatchSynthOptions, summary: BatchSynthSummary) -> Tree:
    """Reads a run back from its manifests and checks every invariant the generator promises."""
    files = read_files(dest)
    manifests: dict[tuple[str, int], tuple[datetime, list[Any]]] = {}
    for key, data in files.items():
        match = MANIFEST_KEY.fullmatch(key)
        if not match:
            continue
        side = match.group(1)
        assert UUID4.fullmatch(match.group(6)), key
        text = data.decode()
        assert text.startswith('[{"prefix": "'), text  # printed like the real ones, with ", " and ": "
        manifest = json.loads(text)
        assert isinstance(manifest, list)
        assert list(manifest[0]) == ["prefix"]
        assert all(isinstance(rel, str) for rel in manifest[1:])
        assert len(manifest) >= 2
        prefix = manifest[0]["prefix"]
        job_match = JOB_PREFIX.match(prefix)
        assert job_match and job_match.group(1) == side, prefix
        number = int(job_match.group(2))
        assert (side, number) not in manifests
        manifests[side, number] = hour_of(match.groups()[1:5]), manifest
    assert {n for _, n in manifests} == set(range(options.jobs))
    assert len(manifests) == 2 * options.jobs

    jobs: dict[int, Job] = {}
    inference_ids: dict[str, Job] = {}
    output_lines = 0
    for number in range(options.jobs):
        hour, in_manifest = manifests["input", number]
        out_hour, out_manifest = manifests["output", number]
        assert hour == out_hour == options.start + timedelta(hours=number)
        job = Job(number, hour, in_manifest, out_manifest)
        jobs[number] = job
        in_prefix, out_prefix = in_manifest[0]["prefix"], out_manifest[0]["prefix"]
        assert out_prefix.endswith(f"/transform-output/job-{number}/")
        # Plain concatenation, never a "/" inserted: the single-object case has an empty key.
        job.input_uris = [in_prefix + rel for rel in in_manifest[1:]]
        job.output_uris = [out_prefix + rel for rel in out_manifest[1:]]
        if in_manifest[1:] == [""]:
            assert INPUT_NAME.fullmatch(in_prefix.rsplit("/", 1)[1]), in_prefix
        else:
            assert in_prefix.endswith(f"/transform-input/job-{number}/")
            assert len(in_manifest) == options.files_per_job + 1
        assert [u.rsplit("/", 1)[1] + ".out" for u in job.input_uris] == out_manifest[1:]
        kinds = {input_kind(uri) for uri in job.input_uris}
        assert len(kinds) == 1
        job.jsonl = kinds == {"jsonl"}
        shapes: set[tuple[bool, bool]] = set()  # (join, space or ids first) of each line
        times: set[str] = set()
        for in_uri, out_uri in zip(job.input_uris, job.output_uris, strict=True):
            raw = cat(in_uri)
            if in_uri.endswith(".gz"):
                raw = gzip.decompress(raw)
            inputs = raw.decode().splitlines()
            assert len(inputs) == options.records_per_file
            if not exists(out_uri):
                job.missing += 1
                continue
            out_text = cat(out_uri).decode()
            assert out_text.endswith("\n")  # AssembleWith=Line: a newline after every record
            outputs = out_text.splitlines()
            assert len(outputs) == len(inputs)
            output_lines += len(outputs)
            for inp, out in zip(inputs, outputs, strict=True):
                iid, time, shape = check_csv(inp, out, options) if not job.jsonl else check_jsonl(inp, out)
                assert iid not in inference_ids
                inference_ids[iid] = job
                times.add(time)
                shapes.add(shape)
        assert len(shapes) <= 1  # one output shape per job
        if shapes:
            ((job.join, flag),) = shapes
            job.id_space, job.ids_first = (False, flag) if job.jsonl else (flag, False)
            # SageMakerInferenceTime is the job's start time, the same for all its records, within its hour.
            (job.time,) = times
            started = datetime.strptime(job.time, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
            assert hour <= started < hour + timedelta(hours=1)
        # A failed file has no .out; a run never loses the single-object job's output.
        if in_manifest[1:] == [""]:
            assert job.missing == 0

    labels: list[tuple[datetime, dict[str, Any]]] = []
    for key, data in files.items():
        match = LABEL_KEY.fullmatch(key)
        if not match:
            continue
        assert data.endswith(b"\n")
        labels.extend((hour_of(match.groups()), json.loads(line)) for line in data.decode().splitlines())
    tree = Tree(files, jobs, inference_ids, output_lines, labels)
    check_labels(tree, options)
    check_summary(tree, dest, options, summary)
    return tree


def check_csv(inp: str, out: str, options: BatchSynthOptions) -> tuple[str, str, tuple[bool, bool]]:
    """Checks one CSV output line against its input line; returns (inference ID, time, (join, space))."""
    features = inp.split(",")
    assert len(features) == options.features
    cols = out.split(",")
    iid, time = cols[-2].strip(), cols[-1].strip()
    assert UUID4.fullmatch(iid), out
    assert JOB_TIME.fullmatch(time), out
    assert cols[-2] in (iid, " " + iid)
    assert 0 < float(cols[-3]) < 1
    join = len(cols) == options.features + 3
    if join:
        assert cols[: options.features] == features  # JoinSource=Input: the input columns, then the prediction
    else:
        assert len(cols) == 3
    return iid, time, (join, cols[-2].startswith(" "))


def check_jsonl(inp: str, out: str) -> tuple[str, str, tuple[bool, bool]]:
    """Checks one JSON Lines output line against its input; returns (inference ID, time, (join, ids first))."""
    source = json.loads(inp)
    assert list(source) == ["features"]
    assert len(source["features"]) == 14
    assert all(isinstance(v, int) for v in source["features"])
    record = json.loads(out)
    keys = list(record)
    ids_first = keys[:2] == ID_KEYS
    assert ids_first or keys[-2:] == ID_KEYS, out
    iid, time = record.pop("SageMakerInferenceId"), record.pop("SageMakerInferenceTime")
    assert UUID4.fullmatch(iid)
    assert JOB_TIME.fullmatch(time)
    join = "SageMakerOutput" in record
    prediction = record.pop("SageMakerOutput") if join else record
    assert list(prediction) == ["predicted_label", "score"]
    assert prediction["predicted_label"] == int(prediction["score"] >= 0.5)
    if join:
        assert record == source  # JoinSource=Input: the input object with SageMakerOutput added
    return iid, time, (join, ids_first)


def check_labels(tree: Tree, options: BatchSynthOptions) -> None:
    seen: set[str] = set()
    for collected, line in tree.labels:
        assert list(line) == ["groundTruthData", "eventMetadata", "eventVersion"]
        assert line["eventVersion"] == "0"
        assert list(line["eventMetadata"]) == ["eventId"]
        iid = line["eventMetadata"]["eventId"]
        assert iid in tree.inference_ids  # every label names an inference ID really written
        assert iid not in seen
        seen.add(iid)
        job = tree.inference_ids[iid]
        delay = (collected - job.hour) / timedelta(hours=1)
        assert delay in range(options.max_label_delay_hours + 1)
        truth = line["groundTruthData"]
        if job.jsonl:
            assert truth["encoding"] == "JSON"
            assert json.loads(truth["data"]) in ({"label": 0}, {"label": 1})
        else:
            assert truth == {"data": truth["data"], "encoding": "CSV"}
            assert truth["data"] in ("0", "1")


def check_summary(tree: Tree, dest: str, options: BatchSynthOptions, summary: BatchSynthSummary) -> None:
    root = dest.rstrip("/")
    outputs = [k for k in tree.files if k.startswith("transform-output/")]
    assert all(k.endswith(".out") for k in outputs)
    expected = BatchSynthSummary(
        root=root,
        capture_root=f"{root}/batch-capture",
        transform_input_root=f"{root}/transform-input",
        transform_output_root=f"{root}/transform-output",
        ground_truth_root=f"{root}/ground-truth-batch",
        jobs=len(tree.jobs),
        input_files=sum(k.startswith("transform-input/") for k in tree.files),
        output_files=len(outputs),
        records=tree.output_lines,
        missing_outputs=sum(job.missing for job in tree.jobs.values()),
        labels=len(tree.labels),
    )
    assert summary == expected
    assert summary.input_files == sum(len(job.input_uris) for job in tree.jobs.values())
    assert summary.output_files == summary.input_files - summary.missing_outputs
    stored = json.loads(tree.files["synth-batch.json"])
    assert stored.pop("options")["seed"] == options.seed
    assert stored == summary.to_dict()
    known = re.compile(r"synth-batch\.json|transform-(input|output)/job-\d+/data-\d+\..*|batch-capture/.*|ground-.*")
    assert all(known.fullmatch(k) for k in tree.files)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[BatchSynthSummary, Tree]:
    dest = str(tmp_path_factory.mktemp("batch") / "out")
    summary = synth_batch(dest, OPTIONS)
    return summary, check_tree(dest, OPTIONS, summary)


def test_tree_is_consistent_and_summary_matches_disk(run: tuple[BatchSynthSummary, Tree]) -> None:
    summary, tree = run
    assert summary.jobs == len(tree.jobs) == 8
    assert summary.input_files == 7 * 3 + 1  # one job read a single object
    assert summary.records == summary.output_files * 40 == len(tree.inference_ids)


def test_manifest_prefixes_are_file_uris(run: tuple[BatchSynthSummary, Tree]) -> None:
    summary, tree = run
    base = "file://" + summary.root
    for job in tree.jobs.values():
        for manifest in (job.input_manifest, job.output_manifest):
            assert manifest[0]["prefix"].startswith(base + "/transform-")


def test_single_object_input_manifest(run: tuple[BatchSynthSummary, Tree]) -> None:
    summary, tree = run
    singles = [job for job in tree.jobs.values() if job.input_manifest[1:] == [""]]
    assert len(singles) == 1
    (job,) = singles
    obj = job.input_manifest[0]["prefix"]
    assert job.input_uris == [obj]
    assert exists(obj)
    assert obj.startswith(f"file://{summary.root}/transform-input/job-{job.number}/data-0.")
    # The output side still names a folder prefix and the .out key.
    assert job.output_manifest == [
        {"prefix": f"file://{summary.root}/transform-output/job-{job.number}/"},
        obj.rsplit("/", 1)[1] + ".out",
    ]


def test_failed_files_have_no_output_but_stay_listed(run: tuple[BatchSynthSummary, Tree]) -> None:
    summary, tree = run
    eligible = 7 * 3  # the single-object job never fails
    assert summary.missing_outputs == math.floor(eligible * OPTIONS.failed_file_share + 0.5) == 2
    per_job = Counter(job.number for job in tree.jobs.values() for _ in range(job.missing))
    assert max(per_job.values()) == 1  # spread over jobs before any job fails twice
    for job in tree.jobs.values():
        listed = sum(not exists(uri) for uri in job.output_uris)
        assert listed == job.missing
        assert all(exists(uri) for uri in job.input_uris)


def test_every_variant_appears(run: tuple[BatchSynthSummary, Tree]) -> None:
    _, tree = run
    jobs = list(tree.jobs.values())
    jsonl = [j for j in jobs if j.jsonl]
    csv = [j for j in jobs if not j.jsonl]
    assert len(jsonl) == round(8 * OPTIONS.jsonl_share) == 3
    assert sum(j.join for j in jobs) == 4
    assert {(j.jsonl, j.join) for j in jobs} == {(False, False), (False, True), (True, False), (True, True)}
    assert sum(j.id_space for j in csv) == 3  # round-half-up of 5 * 0.5
    assert {j.ids_first for j in jsonl} == {True, False}
    assert len({j.time for j in jobs}) == len(jobs)


def test_csv_outputs_end_with_id_and_time(run: tuple[BatchSynthSummary, Tree]) -> None:
    _, tree = run
    spaced = plain = 0
    for job in tree.jobs.values():
        if job.jsonl:
            continue
        for uri in job.output_uris:
            if not exists(uri):
                continue
            for line in cat(uri).decode().splitlines():
                head, iid, time = line.rsplit(",", 2)
                assert iid.strip() in tree.inference_ids
                assert time == job.time
                spaced += iid.startswith(" ")
                plain += not iid.startswith(" ")
                assert UUID4.fullmatch(iid.strip())
                assert head
    assert spaced and plain


def test_jsonl_id_keys_first_and_last(run: tuple[BatchSynthSummary, Tree]) -> None:
    _, tree = run
    orders: Counter[str] = Counter()
    for job in tree.jobs.values():
        if not job.jsonl:
            continue
        for uri in job.output_uris:
            if exists(uri):
                for line in cat(uri).decode().splitlines():
                    record = json.loads(line)
                    keys = list(record)
                    orders["first" if keys[:2] == ID_KEYS else "last"] += 1
                    assert record["SageMakerInferenceTime"] == job.time
    assert set(orders) == {"first", "last"}


def test_gzip_inputs_decompress(run: tuple[BatchSynthSummary, Tree]) -> None:
    summary, tree = run
    gz = [k for k in tree.files if k.startswith("transform-input/") and k.endswith(".gz")]
    assert len(gz) == math.floor(summary.input_files * OPTIONS.gzip_share + 0.5)
    for key in gz:
        assert gzip.decompress(tree.files[key]).count(b"\n") == OPTIONS.records_per_file
        out = "transform-output/" + key.removeprefix("transform-input/") + ".out"
        if out in tree.files:
            assert not tree.files[out].startswith(b"\x1f\x8b")  # the .out is plain text


def test_labels_share_and_delays(run: tuple[BatchSynthSummary, Tree]) -> None:
    summary, tree = run
    share = summary.labels / summary.records
    assert 0.8 < share < 0.97
    delays = {
        (collected - tree.inference_ids[line["eventMetadata"]["eventId"]].hour) for collected, line in tree.labels
    }
    assert delays == {timedelta(hours=h) for h in range(OPTIONS.max_label_delay_hours + 1)}


def test_same_seed_same_bytes_other_seed_differs(tmp_path: Path) -> None:
    options = BatchSynthOptions(jobs=2, files_per_job=2, records_per_file=20)
    dest = tmp_path / "x"
    synth_batch(str(dest), options)
    first = read_files(str(dest))
    shutil.rmtree(dest)
    synth_batch(str(dest), options)
    assert read_files(str(dest)) == first
    shutil.rmtree(dest)
    synth_batch(str(dest), replace(options, seed=1))
    assert read_files(str(dest)) != first


def test_memory_destination() -> None:
    dest = f"memory://synth-batch-{uuid.uuid4().hex}"
    options = BatchSynthOptions(jobs=3, files_per_job=2, records_per_file=10, failed_file_share=0.5)
    try:
        summary = synth_batch(dest, options)
        tree = check_tree(dest, options, summary)
        assert summary.missing_outputs == 2
        for job in tree.jobs.values():
            for uri in job.input_uris + job.output_uris:
                assert uri.startswith("memory://")
    finally:
        fs, path = fsspec.core.url_to_fs(dest)
        fs.rm(path, recursive=True)


@pytest.mark.s3
def test_s3_destination(s3_server: S3Endpoint, s3_bucket: str) -> None:
    options = BatchSynthOptions(jobs=2, files_per_job=2, records_per_file=10, failed_file_share=0.5)
    summary = synth_batch(f"s3://{s3_bucket}/run", options, storage_options=s3_server.storage_options())
    fs = s3_server.filesystem()
    manifests = fs.find(f"{s3_bucket}/run/batch-capture")
    assert len(manifests) == 2 * options.jobs
    found = missing = 0
    for key in manifests:
        prefix, *rels = json.loads(fs.cat_file(key))
        assert prefix["prefix"].startswith(f"s3://{s3_bucket}/run/transform-")
        for rel in rels:
            if fs.exists(prefix["prefix"] + rel):
                found += 1
            else:
                missing += 1
    assert found == summary.input_files + summary.output_files
    assert missing == summary.missing_outputs == 1
    assert json.loads(fs.cat_file(f"{s3_bucket}/run/synth-batch.json"))["records"] == summary.records


@pytest.mark.parametrize(
    "changes",
    [
        {"jobs": 1},
        {"jobs": 1, "single_object_job": False, "failed_file_share": 1.0},
        {"jsonl_share": 1.0, "join_share": 1.0, "gzip_share": 1.0},
        {"jsonl_share": 0.0, "join_share": 0.0, "id_space_share": 1.0, "label_share": 0.0},
        {"single_object_job": False, "features": 3, "max_label_delay_hours": 0},
        {"start": datetime(2026, 12, 31, 22, tzinfo=timezone.utc)},  # jobs cross midnight and the year
    ],
)
def test_option_corners_give_a_consistent_tree(changes: dict[str, Any], tmp_path: Path) -> None:
    options = replace(BatchSynthOptions(jobs=4, files_per_job=2, records_per_file=8), **changes)
    summary = synth_batch(str(tmp_path), options)
    tree = check_tree(str(tmp_path), options, summary)
    singles = sum(job.input_manifest[1:] == [""] for job in tree.jobs.values())
    assert singles == int(options.single_object_job)
    if options.failed_file_share == 1.0 and not options.single_object_job:
        assert summary.output_files == summary.records == summary.labels == 0
    if options.label_share == 0.0:
        assert summary.labels == 0


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"jobs": 0}, "jobs must be >= 1"),
        ({"files_per_job": 0}, "files_per_job must be >= 1"),
        ({"records_per_file": 0}, "records_per_file must be >= 1"),
        ({"features": 0}, "features must be >= 1"),
        ({"max_label_delay_hours": -1}, "max_label_delay_hours must be >= 0"),
        ({"gzip_share": 1.5}, "gzip_share must be within"),
        ({"failed_file_share": -0.1}, "failed_file_share must be within"),
        ({"start": datetime(2026, 11, 1)}, "timezone-aware UTC"),
        ({"start": datetime(2026, 11, 1, 0, 30, tzinfo=timezone.utc)}, "whole hour"),
    ],
)
def test_invalid_options_are_rejected(changes: dict[str, Any], message: str, tmp_path: Path) -> None:
    with pytest.raises(OptionsError, match=message):
        synth_batch(str(tmp_path), replace(BatchSynthOptions(), **changes))
    assert not any(tmp_path.iterdir())
