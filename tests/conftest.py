"""Shared fixtures: capture trees on disk and the real CLI in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

# An unregistered reject reason is an engine bug: make every run of the suite (the CLI subprocesses too) fail on it.
os.environ["CAPTURE_ENGINE_STRICT_REASONS"] = "1"

# The records quoted in the formats reference (sagemaker-formats.md section 1), verbatim.
QUOTED_CSV = (
    '{"captureData":{"endpointInput":{"observedContentType":"text/csv","mode":"INPUT","data":"132,10,182.9,54,292.4,'
    '…,0,1,0,1,0,0,1","encoding":"CSV"},"endpointOutput":{"observedContentType":"text/csv; charset=utf-8",'
    '"mode":"OUTPUT","data":"0.036397725343704224","encoding":"CSV"}},"eventMetadata":{"eventId":'
    '"09e668ab-172a-4ef1-9dc3-696d52879010","inferenceId":"59","inferenceTime":"2021-05-18T00:29:04Z"},'
    '"eventVersion":"0"}'
)
QUOTED_MIXED = (
    '{"captureData":{"endpointInput":{"observedContentType":"text/csv","mode":"INPUT","data":"0.5629733055182888,'
    '0.3018707225866159,0.5824503894753207","encoding":"CSV"},"endpointOutput":{"observedContentType":'
    '"application/json","mode":"OUTPUT","data":"{\\"predictions\\": [{\\"score\\": 0.012620825320482254, '
    '\\"predicted_label\\": 0}]}","encoding":"JSON"}},"eventMetadata":{"eventId":'
    '"28cc8646-bb47-4a96-92fc-d04fc2651286","inferenceTime":"2021-11-30T04:32:05Z"},"eventVersion":"0"}'
)
QUOTED_JSONLINES = (
    '{"captureData":{"endpointInput":{"observedContentType":"application/jsonlines","mode":"INPUT","data":'
    '"{\\"features\\":[28,2,133937,9,13,2,0,0,4,1,15024,0,55,37]}\\n{\\"features\\":[43,2,72338,12,14,2,12,0,1,1,'
    '0,0,40,37]}","encoding":"JSON"},"endpointOutput":{"observedContentType":"application/jsonlines","mode":'
    '"OUTPUT","data":"{\\"predicted_label\\":1,\\"score\\":0.989977359771728}\\n{\\"predicted_label\\":1,'
    '\\"score\\":0.504138827323913}\\n","encoding":"JSON"}},"eventMetadata":{"eventId":'
    '"74e40c99-2d94-4a6d-a21e-f0222769012e","inferenceTime":"2023-01-19T05:28:32Z"},"eventVersion":"0"}'
)

ROOT = Path(__file__).resolve().parent.parent


def record(event_id: str, time: str, *, inference_id: str | None = None, data: str = "1,2,3") -> str:
    """A compact capture line like SageMaker writes, CSV in and out."""
    meta = f'"eventId":"{event_id}"'
    if inference_id is not None:
        meta += f',"inferenceId":"{inference_id}"'
    meta += f',"inferenceTime":"{time}"'
    return (
        '{"captureData":{"endpointInput":{"observedContentType":"text/csv","mode":"INPUT","data":"'
        + data
        + '","encoding":"CSV"},"endpointOutput":{"observedContentType":"text/csv; charset=utf-8","mode":"OUTPUT",'
        '"data":"0.5","encoding":"CSV"}},"eventMetadata":{' + meta + '},"eventVersion":"0"}'
    )


WriteCapture = Callable[..., Path]


@pytest.fixture
def write_capture(tmp_path: Path) -> WriteCapture:
    """Write a capture object at {tmp}/capture/{endpoint}/{variant}/{yyyy/mm/dd/hh}/{name}."""

    def write(
        hour: str,
        lines: list[str] | bytes,
        *,
        endpoint: str = "ep",
        variant: str = "AllTraffic",
        name: str = "00-00-000-a.jsonl",
    ) -> Path:
        path = tmp_path / "capture" / endpoint / variant / hour / name
        path.parent.mkdir(parents=True, exist_ok=True)
        data = lines if isinstance(lines, bytes) else "".join(line + "\n" for line in lines).encode()
        path.write_bytes(data)
        return path

    return write


@pytest.fixture
def run_cli() -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run `python -m engine ARGS...` in a subprocess, as a container would."""

    def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        return subprocess.run(
            [sys.executable, "-m", "engine", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            cwd=ROOT,
        )

    return run


@pytest.fixture(autouse=True)
def _clean_aws_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # Tests never read the developer's AWS settings.
    for key in list(os.environ):
        if key.startswith("AWS_"):
            monkeypatch.delenv(key)
    yield
