"""Credentials never appear in any output: a canary secret searched over stdout, stderr, logs and every file."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from engine.synth import SynthOptions, synth
from tests.conftest import ROOT

if TYPE_CHECKING:
    from tests.s3_server import S3Endpoint

pytest_plugins = ["tests.s3_server"]
pytestmark = pytest.mark.s3


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "CAPTURE_ENGINE_"))}
    return subprocess.run(
        [sys.executable, "-m", "engine", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**base, **env},
        cwd=ROOT,
    )


def _everything_written(fs: object, prefix: str) -> str:
    from s3fs import S3FileSystem

    assert isinstance(fs, S3FileSystem)
    return "".join(fs.cat_file(p).decode("latin-1") for p in fs.find(prefix))


def test_no_credential_in_any_output_even_with_debug(s3_server: S3Endpoint, s3_bucket: str, tmp_path: Path) -> None:
    fs = s3_server.filesystem()
    tree = synth(
        f"s3://{s3_bucket}/sample", SynthOptions(records=200, hours=1), storage_options=s3_server.storage_options()
    )
    # A bad line, so that rejects (with their source URIs) are written too.
    bad = next(p for p in fs.find(f"{s3_bucket}/sample/capture") if p.endswith(".jsonl"))
    fs.pipe_file(bad, fs.cat_file(bad) + b"not json\n")
    isolated = {k: v for k, v in s3_server.env().items() if k.endswith(("_FILE", "_DISABLED"))}
    flags = [
        f"key={s3_server.key}",
        f"secret={s3_server.secret}",
        f"client_kwargs.endpoint_url={s3_server.endpoint_url}",
        f"client_kwargs.region_name={s3_server.region}",
    ]
    opts = [a for f in flags for a in ("--storage-option", f)]
    dest = f"s3://{s3_bucket}/out"
    proc = _cli("realtime", tree.capture_root, dest, "--debug", "--max-reject-ratio", "1", *opts, env=isolated)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "botocore" in proc.stderr  # the debug logs of the client are there, redacted
    written = _everything_written(fs, f"{s3_bucket}/out")
    for canary in (s3_server.secret, s3_server.key):
        for text in (proc.stdout, proc.stderr, written):
            assert canary not in text
    # The environment's credentials, and a secret in an endpoint URL that cannot be reached (an error path).
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    canary = "canary-secret-2f9c"
    env = {**s3_server.env(), "AWS_ENDPOINT_URL_S3": f"http://user:{canary}@127.0.0.1:{port}", "AWS_MAX_ATTEMPTS": "1"}
    for debug in ([], ["--debug"]):
        proc = _cli("realtime", f"s3://{s3_bucket}/sample/capture", str(tmp_path / "o"), *debug, env=env)
        assert proc.returncode != 0
        for text in (proc.stdout, proc.stderr):
            assert canary not in text and s3_server.secret not in text and s3_server.key not in text
