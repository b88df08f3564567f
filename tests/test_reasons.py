"""The registry of reject reasons is the one list: the README's table is it, and no entry is dead."""

from __future__ import annotations

import re

import pytest

from engine.reasons import REASONS, check_reasons
from tests.conftest import ROOT


def test_the_readme_table_lists_exactly_the_registry() -> None:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("### Reject reasons") :]
    rows = re.findall(r"^\| `([a-z0-9_]+)` \| (.+?) \| ([a-z, ]+) \|$", section.split("\n## ", 1)[0], re.M)
    assert [(n, m, tuple(j.split(", "))) for n, m, j in rows] == [(r.name, r.meaning, r.jobs) for r in REASONS.values()]


def test_every_registered_reason_is_emitted_by_some_engine_code() -> None:
    source = "\n".join(p.read_text() for p in (ROOT / "engine").rglob("*.py") if p.name != "reasons.py")
    dead = [name for name in REASONS if f'"{name}"' not in source and f'"{name}:' not in source]
    assert dead == []


def test_an_unregistered_reason_fails_in_strict_mode_and_is_logged_otherwise(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    with pytest.raises(AssertionError, match="no_such_reason"):
        check_reasons(["invalid_json", "no_such_reason"], "file:///x")
    monkeypatch.delenv("CAPTURE_ENGINE_STRICT_REASONS")
    check_reasons(["no_such_reason"], "file:///x")
    assert "unregistered reject reasons in file:///x: no_such_reason" in caplog.text
