"""Path layouts and file formats of the one partitioned writer: the exact folders and part files each produces."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from engine.formats.capture import hour_prefix
from engine.io.storage import open_location
from engine.kernels.partition import HIVE_NULL
from engine.sinks.dataset import TEMPORARY, DatasetWriter
from engine.sinks.formats import JsonLines
from engine.sinks.layout import CAPTURE, HIVE, HIVE_HOURS, MAX_SEGMENT_BYTES, hive, sagemaker_merged
from engine.sinks.merged_jsonl import SAGEMAKER_ROOT, merged_writer
from engine.tables import table_spec
from engine.times import TIME_TYPE

H = int(datetime(2026, 11, 1, 13, tzinfo=timezone.utc).timestamp()) // 3600


def test_hive_folders_are_named_zero_padded_and_utc() -> None:
    assert HIVE.folder(("ep", "AllTraffic", H)) == "endpoint=ep/variant=AllTraffic/year=2026/month=11/day=01/hour=13"
    assert HIVE_HOURS.folder((None, None, H)) == "year=2026/month=11/day=01/hour=13"
    assert HIVE.folder((None, "v", None)) == (
        f"endpoint={HIVE_NULL}/variant=v/year={HIVE_NULL}/month={HIVE_NULL}/day={HIVE_NULL}/hour={HIVE_NULL}"
    )
    # Hours before 1970 and before year 1000 keep four-digit years.
    assert HIVE_HOURS.folder((None, None, -1)) == "year=1969/month=12/day=31/hour=23"
    year_999 = int(datetime(999, 3, 4, 5, tzinfo=timezone.utc).timestamp()) // 3600
    assert HIVE_HOURS.folder((None, None, year_999)) == "year=0999/month=03/day=04/hour=05"
    assert hive(table_spec("capture").partition_by) is HIVE
    assert hive(table_spec("batch").partition_by) is HIVE_HOURS


def test_hive_escapes_names_a_folder_cannot_hold() -> None:
    assert HIVE.folder(("a/b c", "v%", H)).startswith("endpoint=a%2Fb c/variant=v%25/")
    # A name that reads as null gets a suffix; a long one is cut with a hash of the whole name.
    assert HIVE.folder((HIVE_NULL, "v", H)).split("/")[0].startswith(f"endpoint={HIVE_NULL}~")
    long = HIVE.folder(("é" * 100, "v", H)).split("/")[0].removeprefix("endpoint=")
    assert len(long) <= MAX_SEGMENT_BYTES and long != HIVE.folder(("é" * 101, "v", H)).split("/")[0]


def test_sagemaker_merged_folders() -> None:
    assert sagemaker_merged("realtime").folder(("ep", "AllTraffic", H)) == "merge/ep/AllTraffic/2026/11/01/13"
    assert sagemaker_merged("batch").folder((None, None, H)) == "merge/2026/11/01/13"
    assert sagemaker_merged("batch", "my-schedule").folder((None, None, H)) == "merge/my-schedule/2026/11/01/13"
    # No hour: one default-partition folder where the four hour folders would be; names as they are.
    assert sagemaker_merged("realtime").folder(("a b", None, None)) == f"merge/a b/{HIVE_NULL}/{HIVE_NULL}"
    assert sagemaker_merged("realtime").under(SAGEMAKER_ROOT).folder(("e", "v", H)) == (
        "_sagemaker/merge/e/v/2026/11/01/13"
    )


def test_capture_folders_are_the_capture_keys_hour_prefix() -> None:
    t = datetime(2026, 11, 1, 13, 59, 59, tzinfo=timezone.utc)
    assert CAPTURE.folder(("my-endpoint", "AllTraffic", H)) == hour_prefix("my-endpoint", "AllTraffic", t)


def _rendered(endpoint: str, hour: int, lines: list[str]) -> pa.RecordBatch:
    t = pa.array([hour * 3_600_000_000 + i for i in range(len(lines))], pa.int64()).cast(TIME_TYPE)
    return pa.RecordBatch.from_pydict(
        {"endpoint": [endpoint] * len(lines), "variant": ["v"] * len(lines), "inference_time": t, "line": lines}
    )


def test_json_lines_part_files_roll_at_their_text_size(tmp_path: Path) -> None:
    """One file per flush, each flushed when its folder's text (not its Arrow size) reaches the buffer size."""
    line = '{"a":"xy"}\n'  # 11 bytes
    w = merged_writer(open_location(str(tmp_path)), run_id="r1", kind="realtime", buffer_bytes=3 * len(line))
    for i in range(7):
        w.write(_rendered("ep", H, [line.replace("xy", f"{i:02d}")]))
    w.write(_rendered("other", H + 1, [line]))
    written = w.close()
    base = tmp_path / TEMPORARY / "r1"
    files = sorted(p.relative_to(base).as_posix() for p in base.rglob("*") if p.is_file())
    assert files == [
        "_sagemaker/merge/ep/v/2026/11/01/13/part-r1-00000.jsonl",
        "_sagemaker/merge/ep/v/2026/11/01/13/part-r1-00001.jsonl",
        "_sagemaker/merge/ep/v/2026/11/01/13/part-r1-00002.jsonl",
        "_sagemaker/merge/other/v/2026/11/01/14/part-r1-00000.jsonl",
    ]
    texts = [(base / f).read_text() for f in files[:3]]
    assert [t.count("\n") for t in texts] == [3, 3, 1]
    assert "".join(texts) == "".join(line.replace("xy", f"{i:02d}") for i in range(7))
    assert written["_sagemaker/merge/ep/v/2026/11/01/13"][0] == 7


def test_one_writer_with_parquet_hive_and_json_lines_hive(tmp_path: Path) -> None:
    """The same writer, the format and the layout swapped: each file where its layout puts it."""
    loc = open_location(str(tmp_path))
    batch = _rendered("ep", H, ['{"a":1}\n', '{"a":2}\n'])
    pq_writer = DatasetWriter(loc, spec=None, time_column="inference_time", run_id="r1", layout=HIVE)
    pq_writer.write(batch)
    pq_writer.close()
    js_writer = DatasetWriter(
        loc,
        spec=None,
        time_column="inference_time",
        run_id="r2",
        prefix="lines",
        file_format=JsonLines(),
        layout=HIVE,
    )
    js_writer.write(batch)
    js_writer.close()
    folder = "endpoint=ep/variant=v/year=2026/month=11/day=01/hour=13"
    table = pq.read_table(tmp_path / TEMPORARY / "r1" / folder / "part-r1-00000.parquet")
    assert table.column("line").to_pylist() == ['{"a":1}\n', '{"a":2}\n']
    text = (tmp_path / TEMPORARY / "r2" / "lines" / folder / "part-r2-00000.jsonl").read_text()
    assert text == '{"a":1}\n{"a":2}\n'


def test_an_aborted_json_lines_writer_leaves_no_file(tmp_path: Path) -> None:
    w = merged_writer(open_location(str(tmp_path)), run_id="r1", kind="realtime")
    w.write(_rendered("ep", H, ['{"a":1}\n']))
    w.abort()
    assert not (tmp_path / TEMPORARY).exists()
