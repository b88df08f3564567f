"""The jobs on Apache Spark (`engine.spark`, `local[2]`): exactly the local executor's dataset, rejects and report.

One SparkSession serves the whole module (its start-up is most of the time). Each parity test runs the local
executor and Spark on the same input, bad input included, and compares DuckDB hashes over every column of the
rows and of the rejects (order-independent, duplicate-sensitive), and the run reports' counts. Faults are real:
a task failing on its first attempt (Spark retries it) and a CLI run killed with SIGKILL while its tasks write.
"""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
import pyarrow.parquet as pq
import pytest

from engine import BatchOptions, MergeOptions, RealtimeOptions, parse_column_spec, run_batch, run_merge, run_realtime
from engine.errors import OptionsError
from engine.report import RunReport
from engine.synth import BatchSynthOptions, SynthOptions, synth, synth_batch
from engine.tables import capture_schema, table_spec
from tests.conftest import QUOTED_JSONLINES, QUOTED_MIXED, ROOT, record

pytest.importorskip("pyspark", reason="the spark extra (make install-spark)")
from engine import spark as espark
from engine.spark.executor import FAIL_ONCE_ENV, PAUSE_ENV

if TYPE_CHECKING:
    from tests.s3_server import S3Endpoint

pytest_plugins = ["tests.s3_server"]
pytestmark = [
    pytest.mark.spark,
    # One JVM for the whole module under a parallel run (pytest-xdist --dist loadgroup): Spark starts once.
    pytest.mark.xdist_group("spark"),
    # py4j leaves some of its sockets to the garbage collector (after a task failure, say): not this code's.
    pytest.mark.filterwarnings("ignore:unclosed <socket.socket:ResourceWarning"),
    pytest.mark.filterwarnings("ignore:Exception ignored in. <socket.socket:pytest.PytestUnraisableExceptionWarning"),
]

HOUR = "2026/11/01/00"
# Counts that depend on how the input is cut (decode units), not on what it holds: the local executor packs
# units across objects, a Spark task only across its own objects, so a unit with a bad line (sent down the
# per-line path) is counted once per unit.
_CUT_DEPENDENT = {"fallback_units"}
_REPORT_KEYS = (
    "status",
    "objects",
    "bytes_total",
    "bytes_read",
    "records",
    "blank_lines",
    "rows_written",
    "events_written",
    "out_of_window",
    "rejected",
    "rejects_by_reason",
    "partitions",
    "counts",
    "notes",
    "message",
    "balanced",
)


@pytest.fixture(scope="session")
def spark() -> Iterator[Any]:
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")  # no hostname lookup warnings on a machine without DNS
    # Two shuffle partitions for the tests' own queries (the readers' counts): Spark's 200 are tasks each.
    session = espark.get_session(
        "local[2]", app_name="capture-engine-tests", conf={"spark.sql.shuffle.partitions": "2"}
    )
    yield session
    session.stop()


# -- inputs ------------------------------------------------------------------------------------------------


def _bad_capture(root: Path) -> None:
    """Objects every real capture tree has sometimes: invalid lines, a truncated gzip, CRLF, a BOM, blanks."""
    hour = root / "ep-bad" / "AllTraffic" / HOUR
    hour.mkdir(parents=True)
    good = [record(f"g{i}", f"2026-11-01T00:{i % 60:02d}:00Z") for i in range(300)]
    lines = [*good[:100], "{not json", '{"eventMetadata": {}}', "", "[1, 2]", *good[100:200]]
    (hour / "00-00-000-mixed.jsonl").write_text("\r\n".join(lines) + "\r\n")
    (hour / "00-00-001-bom.jsonl").write_bytes(b"\xef\xbb\xbf" + "\n".join(good[200:]).encode() + b"\n")
    body = "\n".join(record(f"z{i}", f"2026-11-01T00:{i % 60:02d}:30Z") for i in range(400)).encode() + b"\n"
    (hour / "00-00-002-cut.jsonl.gz").write_bytes(gzip.compress(body)[:-40])
    late = root / "ep-bad" / "AllTraffic" / "2026/11/01/01"
    late.mkdir(parents=True)
    # An event filed in the next hour's folder: its row goes to its own hour (and a cut is reported).
    (late / "00-00-000-late.jsonl").write_text(record("late", "2026-11-01T00:59:59Z") + "\n" + QUOTED_MIXED + "\n")


@pytest.fixture(scope="module")
def capture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("capture")
    synth(str(root), SynthOptions(records=1200, hours=2, endpoints=1, variants=2, records_per_file=150))
    _bad_capture(root / "capture")
    return root / "capture"


@pytest.fixture(scope="module")
def payloads(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """CSV payloads a spec types, with the ways they fail: a bad number, a short row, JSON Lines."""
    root = tmp_path_factory.mktemp("payloads") / "capture"
    for variant in ("AllTraffic", "Shadow"):
        hour = root / "ep" / variant / HOUR
        hour.mkdir(parents=True)
        rows = [record(f"{variant}{i}", f"2026-11-01T00:00:{i % 60:02d}Z", data=f"{i},{i / 2},7") for i in range(500)]
        rows += [record(f"{variant}-x", "2026-11-01T00:10:00Z", data="1,x,3")]
        rows += [record(f"{variant}-short", "2026-11-01T00:10:01Z", data="1,2")]
        for k in range(3):
            (hour / f"00-00-00{k}-p.jsonl").write_text("\n".join(rows[k::3]) + "\n")
    (root / "ep" / "AllTraffic" / HOUR / "00-00-009-j.jsonl").write_text(QUOTED_JSONLINES + "\n")
    return root


SPEC = parse_column_spec(
    {
        "input": {"columns": [{"name": n, "type": "float64"} for n in ("a", "b", "c")]},
        "output": {"columns": [{"name": "score", "type": "float64"}]},
    }
)


# -- comparisons -------------------------------------------------------------------------------------------


def _digest(dest: Path, table: str) -> tuple[int, int, list[str]]:
    """(rows, sum of row hashes over every column by name, column names) of one table of a dataset."""
    files = [p for p in (dest / table).glob("**/*.parquet") if "_temporary" not in p.parts] if table else []
    if not table:
        files = [p for p in dest.glob("[!_]*/**/*.parquet")]
    if not files:
        return 0, 0, []
    listing = ", ".join(f"'{p}'" for p in sorted(files))
    rel = f"read_parquet([{listing}], hive_partitioning=true, union_by_name=true)"
    con = duckdb.connect()
    names = sorted(r[0] for r in con.sql(f"describe select * from {rel}").fetchall())
    cols = ", ".join(f'"{n}"' for n in names)
    rows, total = con.sql(f"select count(*), sum(hash({cols})::hugeint) from {rel}").fetchall()[0]
    return int(rows), int(total or 0), names


def _report(dest: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((dest / "_SUCCESS").read_text())
    return data


def assert_same_dataset(local: Path, spark_dest: Path, *, rejects_table: str = "_rejects") -> dict[str, Any]:
    """The Spark run's dataset, rejects and `_SUCCESS` counts are the local run's; returns the Spark report."""
    a, b = _digest(local, ""), _digest(spark_dest, "")
    assert a == b, f"rows differ: local {a[:2]} vs spark {b[:2]}"
    assert a[0] > 0
    assert _digest(local, rejects_table) == _digest(spark_dest, rejects_table)
    ra, rb = _report(local), _report(spark_dest)
    # Without a column spec a task's files have the columns of its own rows, and the commit widens each table
    # to one schema by rewriting the narrower files (counted); with a spec, or raw, there is nothing to rewrite.
    rewrites = rb["counts"].pop("schema_rewrites", 0)
    assert rewrites == 0 or (rb["options"]["decode"] and not rb["options"].get("columns"))
    ra["counts"].pop("schema_rewrites", None)
    assert {k: ra[k] for k in _REPORT_KEYS} == {k: rb[k] for k in _REPORT_KEYS}
    assert rb["options"]["executor"]["name"] == "spark" and rb["options"]["executor"]["tasks"] >= 1
    assert not (spark_dest / "_temporary").exists()
    return rb


def _summary(report: RunReport) -> dict[str, Any]:
    return {k: report.to_dict()[k] for k in _REPORT_KEYS}


# -- parity ------------------------------------------------------------------------------------------------


def test_realtime_raw_matches_local_including_bad_input_and_reruns_idempotently_with_a_task_retried(
    spark: Any, capture: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    options = RealtimeOptions(max_reject_ratio=1.0)
    local = run_realtime(str(capture), str(tmp_path / "local"), options=options)
    assert local.rejected > 0 and set(local.rejects_by_reason) >= {"invalid_json", "corrupt_gzip"}
    small = espark.SparkOptions(task_bytes=250_000)  # several tasks, some writing the same partitions
    first = espark.run_realtime(spark, str(capture), str(tmp_path / "spark"), options=options, spark_options=small)
    assert first.options["executor"]["tasks"] >= 3
    report = assert_same_dataset(tmp_path / "local", tmp_path / "spark")
    # A re-run replaces what it wrote (other task sizes, other file names): the same rows, none twice. One of
    # its tasks fails once after writing its files: Spark retries it, and only the retry's files are committed.
    markers = tmp_path / "markers"
    markers.mkdir()
    monkeypatch.setenv(FAIL_ONCE_ENV, f"{markers}:1")
    again = espark.run_realtime(
        spark,
        str(capture),
        str(tmp_path / "spark"),
        options=options,
        spark_options=espark.SparkOptions(task_bytes=400_000),
    )
    monkeypatch.delenv(FAIL_ONCE_ENV)
    assert (markers / "task-1").exists()
    assert again.options["executor"]["tasks"] >= 2
    assert_same_dataset(tmp_path / "local", tmp_path / "spark")
    assert _summary(again) == {k: report[k] for k in _REPORT_KEYS}
    # The reader: the same events as a Spark DataFrame, in the capture table's columns.
    frame = espark.read_capture(spark, str(capture), spark_options=small)
    assert frame.columns == capture_schema().names
    from pyspark.sql import functions as F

    counts = frame.agg(F.count("*"), F.countDistinct("source_file", "source_line")).collect()[0]
    assert tuple(counts) == (local.events_written, local.events_written)


def test_realtime_decode_with_a_spec_and_without_matches_local(spark: Any, payloads: Path, tmp_path: Path) -> None:
    for name, columns in (("spec", SPEC), ("nospec", None)):
        options = RealtimeOptions(decode=True, columns=columns, max_reject_ratio=1.0)
        local = run_realtime(str(payloads), str(tmp_path / f"local-{name}"), options=options)
        assert local.rejected >= 4 and local.rows_written > 1000
        espark.run_realtime(
            spark,
            str(payloads),
            str(tmp_path / f"spark-{name}"),
            options=options,
            spark_options=espark.SparkOptions(task_bytes=70_000),  # row groups of one file in two tasks
        )
        assert_same_dataset(tmp_path / f"local-{name}", tmp_path / f"spark-{name}")
    _, _, names = _digest(tmp_path / "spark-spec", "")
    assert {"a", "b", "c", "score", "record_index"} <= set(names)


def test_batch_matches_local_including_missing_outputs_and_a_truncated_gzip(spark: Any, tmp_path: Path) -> None:
    summary = synth_batch(str(tmp_path / "s"), BatchSynthOptions(jobs=3, files_per_job=3, records_per_file=60))
    root = Path(summary.capture_root).parent
    # A truncated gzip input whose output exists, and an output line without the appended inference ID.
    inputs = sorted(root.glob("transform-input/**/*.gz"))
    gz = [p for p in inputs if list((root / "transform-output").glob(f"**/{p.name}.out"))]
    assert gz, "the synth batch tree has a gzip input with an output"
    gz[0].write_bytes(gz[0].read_bytes()[:-25])
    out = sorted(root.glob("transform-output/**/*.csv.out"))[0]
    out.write_text(out.read_text() + "1,2,3\n")
    options = BatchOptions(max_reject_ratio=1.0)
    local = run_batch(summary.capture_root, str(tmp_path / "local"), options=options)
    assert local.counts.get("missing_outputs") and local.rejected
    espark.run_batch(
        spark,
        summary.capture_root,
        str(tmp_path / "spark"),
        options=options,
        spark_options=espark.SparkOptions(task_bytes=20_000),
    )
    report = assert_same_dataset(tmp_path / "local", tmp_path / "spark")
    assert report["options"]["executor"]["tasks"] >= 3
    frame = espark.read_batch(spark, summary.capture_root)
    assert frame.columns == table_spec("batch").schema.names and frame.count() == local.events_written


@pytest.mark.s3
def test_realtime_on_s3_matches_local(
    spark: Any, capture: Path, tmp_path: Path, s3_server: S3Endpoint, s3_bucket: str
) -> None:
    fs = s3_server.filesystem()
    fs.put(str(capture), f"{s3_bucket}/capture", recursive=True)
    options = RealtimeOptions(max_reject_ratio=1.0, storage_options=s3_server.storage_options())
    local = run_realtime(f"s3://{s3_bucket}/capture", str(tmp_path / "local"), options=options)
    remote = espark.run_realtime(
        spark,
        f"s3://{s3_bucket}/capture",
        f"s3://{s3_bucket}/out",
        options=options,
        spark_options=espark.SparkOptions(task_bytes=400_000),
    )
    assert remote.options["executor"]["tasks"] >= 2
    fs.get(f"{s3_bucket}/out", str(tmp_path / "spark"), recursive=True)
    assert not [p for p in fs.find(f"{s3_bucket}/out") if "/_temporary/" in p]
    assert_same_dataset(tmp_path / "local", tmp_path / "spark")
    assert local.records == remote.records > 0


# -- merge -------------------------------------------------------------------------------------------------


def _relabel(ground_truth: Path) -> None:
    """Bad labels and re-labels next to the synth's: the latest read must win, the bad ones be rejected."""
    first = sorted(ground_truth.glob("**/*.jsonl"))[0]
    ids = [json.loads(line)["eventMetadata"]["eventId"] for line in first.read_text().splitlines()[:6]]

    def label(event_id: str, data: str, encoding: str = "CSV") -> str:
        return json.dumps(
            {"groundTruthData": {"data": data, "encoding": encoding}, "eventMetadata": {"eventId": event_id}}
        )

    late = ground_truth / "2026/11/01/02"
    late.mkdir(parents=True, exist_ok=True)
    lines = [
        label(ids[0], "7"),  # a later hour folder re-labels an event...
        label(ids[0], "8"),  # ...and a later line of the same object wins over it
        "[" + label(ids[1], "5") + "," + label(ids[1], "6") + "]",  # in one line, the later element wins
        label(ids[2], '{"label": 3}', "JSON"),
        label(ids[3], "1\n2\n3"),  # several values: decoded records pick theirs by record_index
        label("no-such-event", "1"),  # a label no prediction has
        "{not json",
        json.dumps({"groundTruthData": {"data": "1", "encoding": "CSV"}, "eventMetadata": {}}),
        json.dumps({"groundTruthData": {"encoding": "CSV"}, "eventMetadata": {"eventId": ids[4]}}),
        "",
    ]
    (late / "0000-relabel.jsonl").write_text("\n".join(lines) + "\n")
    (late / "0001-cut.jsonl.gz").write_bytes(gzip.compress(("\n".join(lines[:4]) + "\n").encode())[:-12])


def test_merge_on_captures_matches_local_including_bad_labels_and_relabels_and_a_join_task_retried(
    spark: Any, capture: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ground_truth = capture.parent / "ground-truth"
    if not (ground_truth / "2026/11/01/02/0000-relabel.jsonl").exists():
        _relabel(ground_truth)
    # Inner (the left join is the batch test's), predictions of the first hour only (labels still from the
    # hour before to a day after).
    options = MergeOptions(max_reject_ratio=1.0, start="2026-11-01T00:00:00Z", end="2026-11-01T01:00:00Z")
    sources = {"captures": str(capture), "ground_truth": str(ground_truth)}
    local = run_merge(dest=str(tmp_path / "local"), options=options, **sources)
    assert local.counts["duplicate_labels"] >= 3 and local.counts["matched"] and local.counts["unmatched_labels"]
    assert local.out_of_window
    assert set(local.rejects_by_reason) >= {"invalid_json", "missing_event_id", "missing_label_data", "corrupt_gzip"}
    # A join task fails once after writing its files: Spark retries it, and only the retry's files count.
    markers = tmp_path / "markers"
    markers.mkdir()
    monkeypatch.setenv(FAIL_ONCE_ENV, f"{markers}:*:merge-join")
    remote = espark.run_merge(
        spark,
        dest=str(tmp_path / "spark"),
        options=options,
        spark_options=espark.SparkOptions(task_bytes=120_000),  # labels in 2 tasks: re-labels across tasks
        **sources,
    )
    assert (markers / "merge-join-task-any").exists()
    assert remote.options["executor"]["tasks"] >= 6
    assert_same_dataset(tmp_path / "local", tmp_path / "spark")
    assert local.counts == remote.counts


def test_merge_on_decoded_batch_matches_local(spark: Any, tmp_path: Path) -> None:
    summary = synth_batch(str(tmp_path / "s"), BatchSynthOptions(jobs=2, files_per_job=3, records_per_file=60))
    _relabel(Path(summary.ground_truth_root))
    options = MergeOptions(max_reject_ratio=1.0, how="left", decode=True)
    sources = {"batch": summary.capture_root, "ground_truth": summary.ground_truth_root}
    local = run_merge(dest=str(tmp_path / "local"), options=options, **sources)
    assert local.counts["matched"] and local.counts["duplicate_labels"] and local.rejected
    espark.run_merge(
        spark,
        dest=str(tmp_path / "spark"),
        options=options,
        spark_options=espark.SparkOptions(task_bytes=30_000),
        **sources,
    )
    assert_same_dataset(tmp_path / "local", tmp_path / "spark")


def _sagemaker_records(dest: Path) -> dict[str, list[Any]]:
    """SageMaker's merged records under ``DEST/_sagemaker``, parsed, per hour folder (in a canonical order)."""
    folders: dict[str, list[Any]] = {}
    for path in sorted((dest / "_sagemaker").glob("**/*.jsonl")):
        records = [json.loads(line) for line in path.read_text().splitlines()]
        folders.setdefault(path.parent.relative_to(dest).as_posix(), []).extend(records)
    return {k: sorted(v, key=lambda r: json.dumps(r, sort_keys=True)) for k, v in folders.items()}


def test_merge_from_a_predictions_dataset_in_sagemaker_format_matches_local_with_a_join_task_retried(
    spark: Any, capture: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ground_truth = capture.parent / "ground-truth"
    if not (ground_truth / "2026/11/01/02/0000-relabel.jsonl").exists():
        _relabel(ground_truth)
    # The dataset an earlier realtime run wrote, in small row groups: tasks are row groups, some of one file.
    predictions = tmp_path / "rt"
    small = RealtimeOptions(max_reject_ratio=1.0, unit_bytes=20_000, row_group_bytes=5_000)
    run_realtime(str(capture), str(predictions), options=small)
    files = list(predictions.glob("endpoint=*/**/*.parquet"))
    assert max(pq.ParquetFile(f).num_row_groups for f in files) >= 3
    # A window of the first hour and a half: row groups of the later hour pruned, the rest cut by rows.
    options = MergeOptions(
        max_reject_ratio=1.0,
        how="left",
        sagemaker_format=True,
        start="2026-11-01T00:00:00Z",
        end="2026-11-01T01:30:00Z",
    )
    sources = {"predictions": str(predictions), "ground_truth": str(ground_truth)}
    local = run_merge(dest=str(tmp_path / "local"), options=options, **sources)
    assert local.counts["matched"] and local.counts["duplicate_labels"] >= 3 and local.counts["unmatched_labels"]
    assert set(local.rejects_by_reason) >= {"invalid_json", "corrupt_gzip"}  # of the labels
    # A join task fails once after writing its Parquet and JSON Lines: only the retry's files may be committed.
    markers = tmp_path / "markers"
    markers.mkdir()
    monkeypatch.setenv(FAIL_ONCE_ENV, f"{markers}:*:merge-join")
    remote = espark.run_merge(
        spark,
        dest=str(tmp_path / "spark"),
        options=options,
        spark_options=espark.SparkOptions(task_bytes=70_000),  # row groups of one file in two tasks
        **sources,
    )
    assert (markers / "merge-join-task-any").exists()
    assert assert_same_dataset(tmp_path / "local", tmp_path / "spark")["options"]["executor"]["tasks"] >= 5
    assert local.counts == remote.counts
    records = _sagemaker_records(tmp_path / "local")
    assert sum(len(v) for v in records.values()) == local.counts["matched"]
    assert all(k.startswith("_sagemaker/merge/") for k in records)
    assert _sagemaker_records(tmp_path / "spark") == records


def test_merge_on_raw_batch_in_sagemaker_format_matches_local(spark: Any, tmp_path: Path) -> None:
    summary = synth_batch(str(tmp_path / "s"), BatchSynthOptions(jobs=1, files_per_job=3, records_per_file=60))
    _relabel(Path(summary.ground_truth_root))
    options = MergeOptions(max_reject_ratio=1.0, sagemaker_format=True, schedule_name="nightly")
    sources = {"batch": summary.capture_root, "ground_truth": summary.ground_truth_root}
    local = run_merge(dest=str(tmp_path / "local"), options=options, **sources)
    assert local.counts["matched"] and local.rejected
    espark.run_merge(
        spark,
        dest=str(tmp_path / "spark"),
        options=options,
        spark_options=espark.SparkOptions(task_bytes=20_000),
        **sources,
    )
    assert_same_dataset(tmp_path / "local", tmp_path / "spark")
    records = _sagemaker_records(tmp_path / "local")
    assert records and all(k.startswith("_sagemaker/merge/nightly/") for k in records)
    assert _sagemaker_records(tmp_path / "spark") == records


def test_merge_of_a_decoded_dataset_in_sagemaker_format_fails_as_locally(
    spark: Any, payloads: Path, tmp_path: Path
) -> None:
    run_realtime(str(payloads), str(tmp_path / "decoded"), options=RealtimeOptions(decode=True, max_reject_ratio=1.0))
    (tmp_path / "no-labels").mkdir()
    options = MergeOptions(sagemaker_format=True)
    sources = {"predictions": str(tmp_path / "decoded"), "ground_truth": str(tmp_path / "no-labels")}
    with pytest.raises(OptionsError) as local:
        run_merge(dest=str(tmp_path / "local"), options=options, **sources)
    with pytest.raises(OptionsError) as remote:
        espark.run_merge(spark, dest=str(tmp_path / "spark"), options=options, **sources)
    assert "holds decoded payload records" in str(local.value) and str(remote.value) == str(local.value)
    assert not (tmp_path / "spark" / "_SUCCESS").exists()


# -- faults ------------------------------------------------------------------------------------------------


def test_a_run_killed_while_its_tasks_write_commits_nothing_and_a_rerun_completes(
    spark: Any, capture: Path, tmp_path: Path
) -> None:
    dest = tmp_path / "spark"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update({PAUSE_ENV: "60", "SPARK_LOCAL_IP": "127.0.0.1"})
    args = ["realtime", str(capture), str(dest), "--executor", "spark", "--spark-master", "local[1]"]
    log = (tmp_path / "driver.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "engine", *args, "--max-reject-ratio", "1", "-q"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=log,
        start_new_session=True,  # the driver, its JVM and the Python workers: one process group to kill
    )
    try:
        deadline = time.monotonic() + 240
        while not list((dest / "_temporary").glob("*/tasks/*/**/*.parquet")):
            assert proc.poll() is None, (tmp_path / "driver.log").read_text()
            assert time.monotonic() < deadline, "no task wrote a file in time"
            time.sleep(0.2)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        log.close()
    # Killed mid-write: no _SUCCESS, and nothing outside _temporary/ that a reader would take for data.
    assert not (dest / "_SUCCESS").exists() and not (dest / "_manifest.json").exists()
    assert _digest(dest, "") == (0, 0, [])
    assert list(dest.glob("_temporary/*/tasks/*"))
    options = RealtimeOptions(max_reject_ratio=1.0)
    run_realtime(str(capture), str(tmp_path / "local"), options=options)
    espark.run_realtime(spark, str(capture), str(dest), options=options)
    assert_same_dataset(tmp_path / "local", dest)


def _spark_merge_on_s3_matches(
    spark: Any,
    fs: Any,
    out: str,
    tmp_path: Path,
    local: RunReport,
    options: MergeOptions,
    task_bytes: int,
    sources: dict[str, str],
) -> None:
    """The Spark merge into s3://`out` leaves no temporary file and writes what the local run (in tmp/local) wrote."""
    remote = espark.run_merge(
        spark,
        dest=f"s3://{out}",
        options=options,
        spark_options=espark.SparkOptions(task_bytes=task_bytes),
        **sources,
    )
    fs.get(out, str(tmp_path / "spark"), recursive=True)
    assert not [p for p in fs.find(out) if "/_temporary/" in p]
    assert_same_dataset(tmp_path / "local", tmp_path / "spark")
    assert local.counts == remote.counts


@pytest.mark.s3
def test_merge_on_s3_matches_local(
    spark: Any, capture: Path, tmp_path: Path, s3_server: S3Endpoint, s3_bucket: str
) -> None:
    # The side files (labels, keys, prediction segments) go to and come back from S3 through s3fs.
    ground_truth = capture.parent / "ground-truth"
    if not (ground_truth / "2026/11/01/02/0000-relabel.jsonl").exists():
        _relabel(ground_truth)
    fs = s3_server.filesystem()
    fs.put(str(capture), f"{s3_bucket}/mcapture", recursive=True)
    fs.put(str(ground_truth), f"{s3_bucket}/mground-truth", recursive=True)
    options = MergeOptions(max_reject_ratio=1.0, how="left", storage_options=s3_server.storage_options())
    sources = {"captures": f"s3://{s3_bucket}/mcapture", "ground_truth": f"s3://{s3_bucket}/mground-truth"}
    local = run_merge(dest=str(tmp_path / "local"), options=options, **sources)
    assert local.counts["matched"] and local.counts["duplicate_labels"] and local.rejected
    _spark_merge_on_s3_matches(spark, fs, f"{s3_bucket}/mout", tmp_path, local, options, 120_000, sources)


@pytest.mark.s3
def test_merge_on_batch_on_s3_in_sagemaker_format_matches_local(
    spark: Any, tmp_path: Path, s3_server: S3Endpoint, s3_bucket: str
) -> None:
    # Transform files listed through manifests on S3, and JSON Lines written by the executors to S3 and committed.
    so = s3_server.storage_options()
    shape = BatchSynthOptions(jobs=1, files_per_job=2, records_per_file=40)
    summary = synth_batch(f"s3://{s3_bucket}/bsynth", shape, storage_options=so)
    twin = synth_batch(str(tmp_path / "s"), shape)  # the same seed: the same labels, re-labelled on local disk
    _relabel(Path(twin.ground_truth_root))
    fs = s3_server.filesystem()
    fs.put(twin.ground_truth_root, f"{s3_bucket}/bground-truth", recursive=True)
    sources = {"batch": summary.capture_root, "ground_truth": f"s3://{s3_bucket}/bground-truth"}
    options = MergeOptions(max_reject_ratio=1.0, how="left", sagemaker_format=True, storage_options=so)
    local = run_merge(dest=str(tmp_path / "local"), options=options, **sources)
    assert local.counts["matched"] and local.rejected
    _spark_merge_on_s3_matches(spark, fs, f"{s3_bucket}/bout", tmp_path, local, options, 30_000, sources)
    records = _sagemaker_records(tmp_path / "local")
    assert records and _sagemaker_records(tmp_path / "spark") == records
