"""CaptureWriter on its own: hour folders and object rolls by size and age under an injected clock, flush and
close semantics (also at interpreter exit, in a real subprocess), seeded sampling within its binomial bounds,
capture modes, back-pressure (drops counted, the request path never blocked, memory bounded), write failures
counted, invalid options refused."""

from __future__ import annotations

import math
import subprocess
import sys
import threading
import time
import tracemalloc
from datetime import datetime, timedelta, timezone
from pathlib import Path

import orjson
import pytest

from engine import read_capture
from engine.capture import CaptureWriter
from engine.errors import OptionsError
from tests.conftest import ROOT

UTC = timezone.utc
CSV = {"request_content_type": "text/csv", "response_content_type": "text/csv; charset=utf-8"}


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self, t: datetime) -> None:
        self.t = t

    def __call__(self) -> datetime:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += timedelta(seconds=seconds)


def _objects(root: Path) -> dict[str, list[dict[str, object]]]:
    """Capture objects under `root` by key (relative), each as its parsed lines; dot-files would be a bug."""
    files = sorted(p for p in root.rglob("*") if p.is_file())
    assert all(not p.name.startswith(".") for p in files), files
    return {p.relative_to(root).as_posix(): [orjson.loads(x) for x in p.read_bytes().splitlines()] for p in files}


def _names(objects: dict[str, list[dict[str, object]]]) -> list[tuple[str, str, int]]:
    """(hour folder, name without its uuid, lines) of each object."""
    out = []
    for key, lines in objects.items():
        *folders, name = key.split("/")
        out.append(("/".join(folders[2:]), name[:9], len(lines)))
    return sorted(out)


def test_hour_folders_and_rolls_by_age_and_size_follow_the_clock(tmp_path: Path) -> None:
    clock = FakeClock(datetime(2026, 3, 1, 10, 59, 58, 250_000, tzinfo=UTC))
    w = CaptureWriter(str(tmp_path), endpoint="ep", sampling_percentage=100, clock=clock, max_object_seconds=60)
    w.record(request=b"1", response=b"a", **CSV)  # 10:59:58.250, opens the 10:00 object
    clock.advance(1.65)
    w.record(request=b"2", response=b"b", **CSV)  # 10:59:59.900
    clock.advance(0.2)
    w.record(request=b"3", response=b"c", **CSV)  # 11:00:00.100, opens the 11:00 object
    # A request that arrived before the hour and finished after it: its hour is its arrival's.
    w.record(request=b"4", response=b"d", inference_time=datetime(2026, 3, 1, 10, 59, 59, 990_000, tzinfo=UTC), **CSV)
    assert w.flush(timeout=10)
    assert _names(_objects(tmp_path)) == [("2026/03/01/10", "59-58-250", 3), ("2026/03/01/11", "00-00-100", 1)]

    clock.advance(30)  # 11:00:30.100: a new object (the flush wrote the others)
    w.record(request=b"5", response=b"e", **CSV)
    clock.advance(59.8)  # 11:01:29.900: within 60 s of that object's first record
    w.record(request=b"6", response=b"f", **CSV)
    clock.advance(0.2)  # 11:01:30.100: 60 s after it: the next object
    w.record(request=b"7", response=b"g", **CSV)
    assert w.close(timeout=10)
    names = _names(_objects(tmp_path))
    assert ("2026/03/01/11", "00-30-100", 2) in names and ("2026/03/01/11", "01-30-100", 1) in names
    assert len(names) == 4

    rows = read_capture(str(tmp_path)).read_all().sort_by("inference_time").to_pylist()
    assert [r["input_data"] for r in rows] == ["1", "2", "4", "3", "5", "6", "7"]
    assert rows[0]["inference_time"] == datetime(2026, 3, 1, 10, 59, 58, tzinfo=UTC)  # whole seconds
    assert len({r["event_id"] for r in rows}) == 7
    assert w.stats.written == w.stats.captured == 7 and w.stats.objects == 4


def test_size_roll_and_open_object_limit(tmp_path: Path) -> None:
    clock = FakeClock(datetime(2026, 3, 1, 10, 0, 0, tzinfo=UTC))
    by_size = tmp_path / "size"
    with CaptureWriter(str(by_size), endpoint="ep", sampling_percentage=100, clock=clock, max_object_bytes=600) as w:
        for i in range(9):
            w.record(request=b"%d" % i * 40, response=b"0", **CSV)  # ~400 bytes a line: two lines an object
            clock.advance(0.001)
    assert [n for _, _, n in _names(_objects(by_size))] == [2, 2, 2, 2, 1]

    hours = tmp_path / "hours"
    with CaptureWriter(str(hours), endpoint="ep", sampling_percentage=100, clock=clock, max_open_objects=1) as w:
        for hour in (10, 11, 10):
            w.record(request=b"1", response=b"0", inference_time=datetime(2026, 3, 1, hour, 5, tzinfo=UTC), **CSV)
    assert [(h[-2:], n) for h, _, n in _names(_objects(hours))] == [("10", 1), ("10", 1), ("11", 1)]


def test_flush_and_close_semantics(tmp_path: Path) -> None:
    w = CaptureWriter(str(tmp_path), endpoint="ep", sampling_percentage=100, max_object_seconds=3600)
    assert w.capture(request=b"1", response=b"a", **CSV)
    time.sleep(0.2)
    assert _objects(tmp_path) == {}  # held until the object rolls, is flushed or the writer closes
    assert w.stats.open_events == 1
    assert w.flush(timeout=10)
    assert [n for _, _, n in _names(_objects(tmp_path))] == [1]
    assert w.stats.open_events == 0 and w.stats.written == 1
    assert w.capture(request=b"2", response=b"b", **CSV)  # after a flush: a new object
    assert w.close(timeout=10) and w.closed
    assert [n for _, _, n in _names(_objects(tmp_path))] == [1, 1]
    assert not w.capture(request=b"3", response=b"c", **CSV)
    assert w.stats.dropped_closed == 1
    assert w.close() and w.flush()  # idempotent, and nothing left to flush

    with CaptureWriter(str(tmp_path / "ctx"), endpoint="ep", sampling_percentage=100) as w2:
        w2.capture(request=b"4", response=b"d", **CSV)
    assert w2.closed and [n for _, _, n in _names(_objects(tmp_path / "ctx"))] == [1]


def test_open_writers_are_flushed_at_interpreter_exit(tmp_path: Path) -> None:
    script = (
        "import sys\n"
        "from engine.capture import CaptureWriter\n"
        "w = CaptureWriter(sys.argv[1], endpoint='ep', sampling_percentage=100, max_object_seconds=3600)\n"
        "for i in range(3):\n"
        "    w.capture(request=b'%d' % i, request_content_type='text/csv', response=b'0')\n"
        "sys.exit(0)  # no close: the atexit hook must write the open object\n"
    )
    subprocess.run([sys.executable, "-c", script, str(tmp_path)], check=True, timeout=60, cwd=ROOT)
    objects = _objects(tmp_path)
    assert [n for _, _, n in _names(objects)] == [3]
    (lines,) = objects.values()
    assert [line["captureData"]["endpointInput"]["data"] for line in lines] == ["0", "1", "2"]  # type: ignore[index]


def test_sampling_is_seeded_and_within_binomial_bounds(tmp_path: Path) -> None:
    n, p = 5000, 0.3
    counts = []
    for seed in (7, 7, 8):
        with CaptureWriter(str(tmp_path), endpoint="ep", sampling_percentage=p * 100, seed=seed) as w:
            counts.append(sum(w.sample() for _ in range(n)))
            assert w.stats.requests == n and w.stats.sampled == counts[-1]
    sd = math.sqrt(n * p * (1 - p))
    assert all(abs(c - n * p) <= 4.5 * sd for c in counts), counts
    assert counts[0] == counts[1]  # the same seed draws the same
    for percentage, expected in ((0, 0), (100, 200)):
        with CaptureWriter(str(tmp_path), endpoint="ep", sampling_percentage=percentage) as w:
            assert sum(w.sample() for _ in range(200)) == expected
    assert _objects(tmp_path) == {}


def test_capture_modes_limits_and_metadata(tmp_path: Path) -> None:
    with CaptureWriter(str(tmp_path), endpoint="ep", sampling_percentage=100, capture_modes=["Output"]) as w:
        assert w.capture(request=b"1", response=b"0.5", inference_id="ok-1", custom_attributes="a=b", **CSV)
        assert w.capture(request=b"2", response=b"0.6", inference_id=" leading space", custom_attributes="é", **CSV)
    assert w.stats.invalid_metadata == 2 and w.stats.written == 2
    rows = read_capture(str(tmp_path)).read_all().sort_by("output_data").to_pylist()
    assert [r["input_data"] for r in rows] == [None, None]  # Output only
    assert [(r["inference_id"], r["custom_attributes"]) for r in rows] == [("ok-1", "a=b"), (None, None)]

    small = CaptureWriter(str(tmp_path / "small"), endpoint="ep", sampling_percentage=100, max_payload_bytes=10)
    assert not small.record(request=b"x" * 11, response=b"0", **CSV)
    assert small.record(request=b"x" * 10, response=b"0", **CSV)
    small.close()
    assert (small.stats.dropped_too_large, small.stats.written) == (1, 1)


def test_back_pressure_drops_and_counts_never_blocks_and_bounds_memory(tmp_path: Path) -> None:
    budget = 256 * 2**10
    w = CaptureWriter(
        str(tmp_path), endpoint="ep", sampling_percentage=100, max_buffer_bytes=budget, max_object_bytes=2**20
    )
    per_thread, threads = 750, 4
    latencies: list[float] = []
    accepted: list[int] = []

    def client(k: int) -> None:
        slowest, kept = 0.0, 0
        for i in range(per_thread):
            body = b"%d," % (k * per_thread + i) * 2000  # a fresh ~10 KB body each time
            t0 = time.perf_counter()
            kept += w.record(request=body, response=body, **CSV)
            slowest = max(slowest, time.perf_counter() - t0)
        latencies.append(slowest)
        accepted.append(kept)

    tracemalloc.start()
    try:
        pool = [threading.Thread(target=client, args=(k,)) for k in range(threads)]
        for t in pool:
            t.start()
        for t in pool:
            t.join()
        assert w.close(timeout=60)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    s = w.stats
    total = per_thread * threads
    assert s.captured + s.dropped_buffer_full == total == sum(accepted) + s.dropped_buffer_full
    assert s.dropped_buffer_full > 0 and s.captured > 0
    assert s.peak_queued_bytes <= budget
    assert s.written == s.captured and s.lost_write_errors == 0
    # 60 MB offered; held at once: the queue budget, one open 1 MiB object and its joined copy (~2.3 MB seen).
    assert peak < 6 * 2**20, peak
    assert max(latencies) < 0.5  # a GIL switch or two, never a wait for storage
    assert sum(len(lines) for lines in _objects(tmp_path).values()) == s.captured


def test_objects_that_cannot_be_written_are_counted_and_the_writer_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    w = CaptureWriter(str(blocker / "capture"), endpoint="ep", sampling_percentage=100, write_attempts=2)
    for i in range(3):
        assert w.capture(request=b"%d" % i, response=b"0", **CSV)
    assert w.close(timeout=30)
    s = w.stats
    assert (s.captured, s.written, s.lost_write_errors, s.write_errors) == (3, 0, 3, 1)
    assert "attempt 1 of 2" in caplog.text and "lost 3 captured events" in caplog.text


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"sampling_percentage": 101}, "sampling_percentage must be within 0-100"),
        ({"capture_modes": ["Everything"]}, "is not Input, Output or InputAndOutput"),
        ({"variant": "All/Traffic"}, "variant name 'All/Traffic' is not a SageMaker name"),
        ({"max_buffer_bytes": 0}, "max_buffer_bytes must be a whole number >= 1"),
        ({"json_content_types": ["json"]}, "is not a content type SageMaker accepts"),
        ({"sampling": 10}, "unknown CaptureWriter setting 'sampling'"),
    ],
)
def test_invalid_settings_are_refused(tmp_path: Path, settings: dict[str, object], message: str) -> None:
    with pytest.raises(OptionsError, match=message):
        CaptureWriter(str(tmp_path), endpoint="ep", **settings)
