"""Layout: any level of the capture tree as root, and only the hour prefixes a window needs are listed."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from fsspec.implementations.local import LocalFileSystem

from engine import RealtimeOptions, read_capture
from engine.io.listing import describe_key, list_capture_objects
from engine.io.storage import open_location
from tests.conftest import WriteCapture, record

UTC = timezone.utc


@pytest.fixture
def tree(write_capture: WriteCapture, tmp_path: Path) -> Path:
    """2 endpoints x 2 variants x hours 10..13 on 2026-11-01, 2 events per object."""
    for ep in ("ep-a", "ep-b"):
        for var in ("AllTraffic", "Shadow"):
            for h in (10, 11, 12, 13):
                t = f"2026-11-01T{h:02d}:30:00Z"
                lines = [record(f"{ep}-{var}-{h}-{i}", t) for i in range(2)]
                write_capture(f"2026/11/01/{h:02d}", lines, endpoint=ep, variant=var, name=f"30-00-000-{h}.jsonl")
    return tmp_path / "capture"


def _ids(source: Path | str, **kw: Any) -> list[str]:
    table = read_capture(str(source), options=RealtimeOptions(**kw)).read_all()
    return sorted(table.column("event_id").to_pylist())


@pytest.mark.parametrize(
    ("sub", "count"),
    [
        ("", 32),
        ("ep-a", 16),
        ("ep-a/Shadow", 8),
        ("ep-a/Shadow/2026", 8),
        ("ep-a/Shadow/2026/11", 8),
        ("ep-a/Shadow/2026/11/01", 8),
        ("ep-a/Shadow/2026/11/01/12", 2),
        ("ep-a/Shadow/2026/11/01/12/30-00-000-12.jsonl", 2),
    ],
)
def test_any_level_of_the_tree_is_a_root(tree: Path, sub: str, count: int) -> None:
    ids = _ids(tree / sub if sub else tree)
    assert len(ids) == count
    if "Shadow" in sub:
        assert all(i.startswith("ep-a-Shadow") for i in ids)


def test_endpoint_and_variant_come_from_the_key(tree: Path) -> None:
    table = read_capture(str(tree)).read_all()
    pairs = set(zip(table.column("endpoint").to_pylist(), table.column("variant").to_pylist(), strict=False))
    assert pairs == {("ep-a", "AllTraffic"), ("ep-a", "Shadow"), ("ep-b", "AllTraffic"), ("ep-b", "Shadow")}


def test_window_filters_by_inference_time(tree: Path) -> None:
    ids = _ids(tree, start="2026-11-01T11", end="2026-11-01T12")
    assert len(ids) == 8 and all("-11-" in i for i in ids)


def test_window_within_a_date_root(tree: Path) -> None:
    ids = _ids(tree / "ep-b" / "AllTraffic" / "2026" / "11", start="2026-11-01T12:00:00Z", end="2026-11-01T14:00:00Z")
    assert ids == sorted(f"ep-b-AllTraffic-{h}-{i}" for h in (12, 13) for i in range(2))


def test_only_the_needed_hour_prefixes_are_listed(tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    listed: list[str] = []
    original: Callable[..., Any] = LocalFileSystem.find

    def spy(self: LocalFileSystem, path: str, *args: Any, **kwargs: Any) -> Any:
        listed.append(path)
        return original(self, path, *args, **kwargs)

    monkeypatch.setattr(LocalFileSystem, "find", spy)
    loc = open_location(str(tree))
    options = RealtimeOptions(start="2026-11-01T12", end="2026-11-01T13")
    objects = list_capture_objects(loc, hours=options.window_hours())
    # Window hour 12, plus one hour of slack each side: 11, 12, 13 (the tree has no hour 14 data anyway).
    hours = sorted({p.rsplit("/", 1)[-1] for p in listed})
    assert hours == ["11", "12", "13"]
    assert len(listed) == 4 * 3  # 4 variants x 3 hour prefixes, never a recursive listing of the root
    assert {o.hour.hour for o in objects if o.hour} == {11, 12, 13}


def test_window_hours_cover_partial_hours() -> None:
    o = RealtimeOptions(start="2026-11-01T10:30", end="2026-11-01T12:15")
    assert o.window_hours() == (datetime(2026, 11, 1, 9, tzinfo=UTC), datetime(2026, 11, 1, 13, tzinfo=UTC))


def test_describe_key() -> None:
    key = "bucket/dc/DEMO-ep/AllTraffic/2024/01/19/19/27-57-062-fb33b08e.jsonl"
    assert describe_key(key) == ("DEMO-ep", "AllTraffic", datetime(2024, 1, 19, 19, tzinfo=UTC))
    assert describe_key("some/file.jsonl") == (None, None, None)


def test_non_capture_files_are_ignored(tree: Path) -> None:
    hour = tree / "ep-a" / "Shadow" / "2026" / "11" / "01" / "12"
    (hour / "_SUCCESS").write_text("")
    (hour / ".hidden.jsonl").write_text("garbage\n")
    (hour / "notes.txt").write_text("garbage\n")
    assert len(_ids(hour)) == 2
