"""Every ``/opt/ml`` path the container reads or writes, from one place.

SageMaker lays a processing container out under ``/opt/ml``: the job's request in
``config/processingjobconfig.json``, the hosts in ``config/resourceconfig.json``, inputs and outputs under
``processing/``, the exit message in ``output/message`` (its first 1 KB becomes the job's ``ExitMessage``)
and CloudWatch metric records in ``output/metrics/cloudwatch/``. ``CAPTURE_ENGINE_OPT_ML`` re-roots all of
it, and every ``/opt/ml/...`` path found in the environment (``dataset_source=/opt/ml/processing/input/...``),
so that tests run the real entry point against a temporary directory laid out exactly as SageMaker lays it out.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

__all__ = ["METRICS_ENV", "ROOT_ENV", "SAGEMAKER_ROOT", "MlPaths", "ml_paths"]

SAGEMAKER_ROOT = "/opt/ml"
ROOT_ENV = "CAPTURE_ENGINE_OPT_ML"  # re-roots /opt/ml (tests; a local dry run of a job)
METRICS_ENV = "CLOUDWATCH_METRICS_DIRECTORY"  # the analyzer's name for the metrics folder


@dataclass(frozen=True, kw_only=True)
class MlPaths:
    """The container's file layout under `root` (``/opt/ml`` in SageMaker)."""

    root: Path
    metrics_override: str | None = None

    @property
    def processing_job_config(self) -> Path:
        """The CreateProcessingJob request, ``Environment`` included."""
        return self.root / "config" / "processingjobconfig.json"

    @property
    def resource_config(self) -> Path:
        """``{"current_host": "algo-1", "hosts": [...]}``."""
        return self.root / "config" / "resourceconfig.json"

    @property
    def message(self) -> Path:
        """The exit message: UTF-8, its first 1 KB becomes ``ExitMessage``."""
        return self.root / "output" / "message"

    @property
    def metrics_dir(self) -> Path:
        """Where CloudWatch metric records go when ``publish_cloudwatch_metrics`` is ``Enabled``."""
        if self.metrics_override:
            return Path(self.local(self.metrics_override))
        return self.root / "output" / "metrics" / "cloudwatch"

    @property
    def processing(self) -> Path:
        """The parent of every ProcessingInput and ProcessingOutput ``LocalPath``."""
        return self.root / "processing"

    def local(self, path: str) -> str:
        """`path` with a leading ``/opt/ml`` replaced by `root`; any other path (or URL) unchanged."""
        posix = PurePosixPath(path)
        base = PurePosixPath(SAGEMAKER_ROOT)
        if posix == base or base in posix.parents:
            return str(self.root / posix.relative_to(base))
        return path

    def writable(self) -> list[Path]:
        """The folders the container writes outside its outputs (a non-root image must own them)."""
        return [self.message.parent, self.metrics_dir]


def ml_paths(environ: Mapping[str, str] | None = None) -> MlPaths:
    """The layout for this process: ``/opt/ml``, or `ROOT_ENV` when it is set."""
    env = os.environ if environ is None else environ
    root = env.get(ROOT_ENV, "").strip() or SAGEMAKER_ROOT
    return MlPaths(root=Path(root), metrics_override=env.get(METRICS_ENV) or None)
