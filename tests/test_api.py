"""The public surface stays small, explicit and importable."""

from __future__ import annotations

import ast
import dataclasses
import re
import subprocess
import sys

import pytest

import engine
from engine import OptionsError, RealtimeOptions
from engine.errors import EngineError


def test_all_is_sorted_and_complete() -> None:
    public = sorted((n for n in dir(engine) if not n.startswith("_")), key=str.casefold)
    modules = {n for n in public if type(getattr(engine, n)).__name__ == "module"}
    assert engine.__all__ == sorted(engine.__all__)
    assert set(engine.__all__) - {"__version__"} == set(public) - modules


def test_importing_the_package_imports_no_job() -> None:
    # A worker that only decodes must not pay for the merge (or for any job it does not run).
    code = "import sys, engine; print(sorted(m for m in sys.modules if m.startswith('engine.')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert ast.literal_eval(out) == ["engine._version", "engine.errors", "engine.interrupts"]
    code = "import sys, engine.kernels.envelope; print(sorted(m for m in sys.modules if m.startswith('engine.jobs')))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "[]\n"


def test_every_error_derives_from_one_base() -> None:
    for name in engine.__all__:
        obj = getattr(engine, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, EngineError)


def test_options_are_frozen_keyword_only_and_validated() -> None:
    o = RealtimeOptions(start="2026-11-01T13", end="2026-11-01T14:00:00Z")  # type: ignore[arg-type]
    assert o.start is not None and o.start.hour == 13 and o.start.tzinfo is not None
    with pytest.raises(dataclasses.FrozenInstanceError):
        o.workers = 3  # type: ignore[misc]
    with pytest.raises(TypeError):
        RealtimeOptions("2026-11-01")  # type: ignore[misc]
    with pytest.raises(OptionsError, match="max_reject_ratio"):
        RealtimeOptions(max_reject_ratio=1.5)
    assert o.to_dict()["start"] == "2026-11-01T13:00:00.000000Z"


def test_report_never_contains_storage_secrets() -> None:
    o = RealtimeOptions(storage_options={"key": "AKIA-secret", "secret": "shh"})
    assert "shh" not in str(o.to_dict()) and "AKIA-secret" not in str(o.to_dict())


def test_the_readme_map_names_every_module() -> None:
    from tests.conftest import ROOT

    text = (ROOT / "README.md").read_text()
    block = text[text.index("## How it is built") :].split("```")[1]
    named: set[str] = set()
    summarized: set[str] = set()  # packages given one line with a description, their modules not listed
    for line in block.splitlines():
        m = re.match(r"\s*([a-z_]+(?:\.py|/))\s*(.*)$", line)
        if m:
            named.add(m.group(1))
            if m.group(1).endswith("/") and m.group(2):
                summarized.add(m.group(1).rstrip("/"))
        named.update(re.findall(r"\b([a-z_]+\.py)\b", line))
    missing = []
    for path in sorted((ROOT / "engine").rglob("*.py")):
        rel = path.relative_to(ROOT / "engine")
        if rel.name in ("__init__.py", "__main__.py", "_version.py"):
            continue
        if rel.name not in named and not summarized.intersection(rel.parts[:-1]):
            missing.append(str(rel))
    assert missing == []
