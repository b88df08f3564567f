"""Options by composition and the environment layer: groups, `compose`/`part`, ``CAPTURE_ENGINE_<FIELD>``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import fields
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.environment import environment_values, variable
from engine.errors import OptionsError
from engine.options import (
    BatchOptions,
    DecodeOptions,
    JobOptions,
    MergeOptions,
    ReadOptions,
    RealtimeOptions,
    RunOptions,
    WindowOptions,
    WriteOptions,
)
from tests.conftest import ROOT, WriteCapture, record

GROUPS = (WindowOptions, ReadOptions, DecodeOptions, WriteOptions, RunOptions)


def test_the_groups_partition_the_job_options() -> None:
    names = [f.name for g in GROUPS for f in fields(g)]
    assert sorted(names) == sorted(f.name for f in fields(JobOptions))
    assert len(names) == len(set(names))


@settings(max_examples=60, deadline=None)
@given(
    workers=st.integers(1, 64),
    unit=st.integers(1, 2**30),
    ratio=st.floats(0, 1),
    decode=st.booleans(),
    compression=st.sampled_from(["zstd", "snappy", "none"]),
    hour=st.integers(0, 22),
)
def test_compose_of_the_parts_is_the_options(
    workers: int, unit: int, ratio: float, decode: bool, compression: str, hour: int
) -> None:
    start = datetime(2026, 11, 1, hour, tzinfo=UTC)
    opts = MergeOptions(
        start=start,
        end=start + timedelta(hours=1),
        workers=workers,
        unit_bytes=unit,
        max_reject_ratio=ratio,
        decode=decode,
        compression=compression,
        label_delay=timedelta(hours=3),
    )
    parts = [opts.part(g) for g in GROUPS]
    assert [type(p) for p in parts] == list(GROUPS)
    assert MergeOptions.compose(*parts, label_delay=timedelta(hours=3)) == opts
    # A group checks its own fields whether built alone or as part of a job's options.
    with pytest.raises(OptionsError, match="unit_bytes must be at least 1"):
        ReadOptions(unit_bytes=0)
    with pytest.raises(OptionsError, match="empty window"):
        RealtimeOptions.compose(WindowOptions(start=start, end=start))


def test_from_env_parses_each_field_by_its_type_and_keywords_win() -> None:
    env = {
        "CAPTURE_ENGINE_START": "2026-11-01T10",
        "CAPTURE_ENGINE_END": "2026-11-01T12:30:00Z",
        "CAPTURE_ENGINE_UNIT_BYTES": "4MiB",
        "CAPTURE_ENGINE_MAX_LINE_BYTES": "1MB",
        "CAPTURE_ENGINE_WORKERS": "3",
        "CAPTURE_ENGINE_MAX_REJECT_RATIO": "0.5",
        "CAPTURE_ENGINE_REQUIRE_DATA": "yes",
        "CAPTURE_ENGINE_DECODE": "false",
        "CAPTURE_ENGINE_STORAGE_OPTIONS": '{"anon": true, "client_kwargs": {"region_name": "eu-west-1"}}',
        "CAPTURE_ENGINE_KMS_KEY_ID": "alias/k",
        "CAPTURE_ENGINE_LABEL_DELAY": "90m",
        "CAPTURE_ENGINE_HOW": "left",
        "CAPTURE_ENGINE_SCHEDULE_NAME": "none",
        "CAPTURE_ENGINE_JOIN_MEMORY": "1GiB",
        "CAPTURE_ENGINE_PREFIX_MAP": '{"s3://b/": "/opt/ml/"}',
        "CAPTURE_ENGINE_STRICT_REASONS": "1",  # names no field: ignored
        "OTHER": "x",
    }
    opts = MergeOptions.from_env(env, workers=5)
    assert opts.start == datetime(2026, 11, 1, 10, tzinfo=UTC)
    assert opts.end == datetime(2026, 11, 1, 12, 30, tzinfo=UTC)
    assert (opts.unit_bytes, opts.max_line_bytes, opts.join_memory) == (4 * 2**20, 10**6, 2**30)
    assert opts.workers == 5  # the keyword wins over CAPTURE_ENGINE_WORKERS
    assert (opts.max_reject_ratio, opts.require_data, opts.decode) == (0.5, True, False)
    assert opts.storage_options == {"anon": True, "client_kwargs": {"region_name": "eu-west-1"}}
    assert (opts.kms_key_id, opts.label_delay, opts.how) == ("alias/k", timedelta(minutes=90), "left")
    assert opts.schedule_name is None
    assert opts.prefix_map == {"s3://b/": "/opt/ml/"}
    # Fields of other jobs' options are not read by a job that has none of them.
    assert "label_delay" not in environment_values(BatchOptions, env)
    assert RealtimeOptions.from_env({}) == RealtimeOptions()
    assert variable("unit_bytes") == "CAPTURE_ENGINE_UNIT_BYTES"


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("CAPTURE_ENGINE_UNIT_BYTES", "lots", "invalid size"),
        ("CAPTURE_ENGINE_WORKERS", "two", "invalid literal"),
        ("CAPTURE_ENGINE_REQUIRE_DATA", "maybe", "not a boolean"),
        ("CAPTURE_ENGINE_HOW", "outer", "choose one of inner, left"),
        ("CAPTURE_ENGINE_STORAGE_OPTIONS", "[1]", "not a JSON object"),
        ("CAPTURE_ENGINE_STORAGE_OPTIONS", "{anon", "unexpected"),
        ("CAPTURE_ENGINE_START", "yesterday", "ISO-8601"),
    ],
)
def test_a_bad_variable_is_one_options_error_naming_it(key: str, value: str, message: str) -> None:
    with pytest.raises(OptionsError, match=message) as err:
        MergeOptions.from_env({key: value})
    assert str(err.value).startswith(f"{key}={value!r}: ")
    # Values that parse but break a rule are the options' own errors.
    with pytest.raises(OptionsError, match="workers must be at least 1"):
        RealtimeOptions.from_env({"CAPTURE_ENGINE_WORKERS": "0"})


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("CAPTURE_ENGINE_")}
    return subprocess.run(
        [sys.executable, "-m", "engine", *args], cwd=ROOT, env={**base, **env}, capture_output=True, text=True
    )


def test_the_command_line_takes_the_environment_under_its_flags(tmp_path: Path, write_capture: WriteCapture) -> None:
    write_capture("2026/11/01/10", [record("a", "2026-11-01T10:00:00Z"), "{bad", record("b", "2026-11-01T11:00:00Z")])
    src = str(tmp_path / "capture")
    env = {
        "CAPTURE_ENGINE_UNIT_BYTES": "64KiB",
        "CAPTURE_ENGINE_MAX_REJECT_RATIO": "0.5",
        "CAPTURE_ENGINE_END": "2026-11-01T11",
    }
    proc = _cli(env, "realtime", src, str(tmp_path / "one"), "--quiet")
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "one" / "_SUCCESS").read_text())
    assert report["options"]["unit_bytes"] == 64 * 2**10
    assert report["options"]["max_reject_ratio"] == 0.5
    assert report["rows_written"] == 1  # CAPTURE_ENGINE_END kept b out of the window
    # A flag wins over its variable.
    proc = _cli(env, "realtime", src, str(tmp_path / "two"), "--unit-size", "1MiB", "--end", "2026-11-01T12", "--quiet")
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "two" / "_SUCCESS").read_text())
    assert (report["options"]["unit_bytes"], report["rows_written"]) == (2**20, 2)
    # Without the ratio variable the default limit (0.01) fails the run on the one bad line of three.
    proc = _cli({}, "realtime", src, str(tmp_path / "three"), "--quiet")
    assert proc.returncode != 0 and "reject" in proc.stderr
    # A bad variable is one line naming it, no traceback, the options' exit code.
    proc = _cli({"CAPTURE_ENGINE_WORKERS": "many"}, "realtime", src, str(tmp_path / "four"))
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and "CAPTURE_ENGINE_WORKERS='many'" in proc.stderr
    assert "Traceback" not in proc.stderr
