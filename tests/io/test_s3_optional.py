"""The S3 tier is optional: without s3fs the suite still collects, and the S3 tests skip with one line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT

S3_MODULES = [
    "io/test_s3.py",
    "jobs/test_s3_jobs.py",
    "sinks/test_commit_s3.py",
    "jobs/test_merge_s3.py",
    "io/test_secrets.py",
]


def test_without_s3fs_the_s3_modules_collect_and_their_tests_skip(tmp_path: Path) -> None:
    # A package named s3fs that cannot be imported stands for an environment without the `s3` extra.
    (tmp_path / "s3fs").mkdir()
    (tmp_path / "s3fs" / "__init__.py").write_text("raise ModuleNotFoundError('No module named s3fs', name='s3fs')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])}
    modules = [str(ROOT / "tests" / m) for m in S3_MODULES]
    # Every S3 module is collected (an import error would fail the run); one S3 test runs, and must skip.
    ran = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", *modules, "-k", "same_rows"],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=300,
    )
    assert ran.returncode == 0, ran.stdout[-2000:]
    assert "the S3 tests need s3fs" in ran.stdout and " passed" not in ran.stdout
