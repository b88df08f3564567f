"""Benchmark inputs: seeded synth capture trees, generated once per size and cached on disk.

A tree is generated into a temporary sibling folder and renamed into place only after its marker is written, so
an interrupted generation never leaves a tree that looks complete; a folder without the marker is regenerated.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Final

from engine.synth import SynthOptions, synth

__all__ = [
    "DEFAULT_ROOT",
    "MARKER",
    "SEED",
    "capture_files",
    "ensure_data",
    "is_complete",
    "load_marker",
    "synth_options",
]

logger = logging.getLogger(__name__)

DEFAULT_ROOT: Final = Path(__file__).resolve().parent / ".data"
MARKER: Final = "_COMPLETE.json"
SEED: Final = 1
_HOURS: Final = 6
_ENDPOINTS: Final = 3
_VARIANTS: Final = 2


def synth_options(size_bytes: int) -> SynthOptions:
    """The benchmark tree shape: 6 hours x 3 endpoints x 2 variants, about ``size_bytes`` of capture JSONL."""
    return SynthOptions(target_bytes=size_bytes, hours=_HOURS, endpoints=_ENDPOINTS, variants=_VARIANTS, seed=SEED)


def _tree_dir(size_bytes: int, root: Path) -> Path:
    # Every option that changes the bytes is in the name, so a cached tree is only reused for the same input.
    return root / f"synth-{size_bytes}B-seed{SEED}-h{_HOURS}-e{_ENDPOINTS}-v{_VARIANTS}"


def is_complete(size_bytes: int, root: Path | str | None = None) -> bool:
    """Whether the tree of ``size_bytes`` is already generated (ensure_data will reuse it)."""
    base = Path(root) if root is not None else DEFAULT_ROOT
    return (_tree_dir(size_bytes, base) / MARKER).is_file()


def load_marker(tree: Path) -> dict[str, Any]:
    """The completion marker of a tree: the synth summary, options and how long generation took."""
    data: dict[str, Any] = json.loads((tree / MARKER).read_text())
    return data


def _alive(pid: str) -> bool:
    try:
        os.kill(int(pid), 0)  # signal 0 only asks whether the process exists
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True


def ensure_data(size_bytes: int, root: Path | str | None = None) -> Path:
    """Return the folder of a complete synth tree of about ``size_bytes`` (its capture root is ``<folder>/capture``).

    The tree is generated on first use (about 18 s per GB) and reused afterwards.
    """
    base = Path(root) if root is not None else DEFAULT_ROOT
    tree = _tree_dir(size_bytes, base)
    if (tree / MARKER).is_file():
        return tree
    if tree.exists():
        logger.warning("removing incomplete benchmark tree %s", tree)
        shutil.rmtree(tree)
    base.mkdir(parents=True, exist_ok=True)
    for stale in base.glob(f"{tree.name}.partial-*"):
        if not _alive(stale.name.rsplit("-", 1)[-1]):
            shutil.rmtree(stale, ignore_errors=True)  # left by an interrupted generation
    # The pid keeps two concurrent first runs from writing into the same folder.
    partial = base / f"{tree.name}.partial-{os.getpid()}"
    options = synth_options(size_bytes)
    t0 = time.perf_counter()
    summary = synth(str(partial), options)
    seconds = time.perf_counter() - t0
    marker = {
        "summary": {**summary.to_dict(), "root": str(tree), "capture_root": str(tree / "capture")},
        "options": {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in asdict(options).items()},
        "generate_seconds": round(seconds, 3),
    }
    (partial / MARKER).write_text(json.dumps(marker, indent=2))
    try:
        partial.rename(tree)
    except OSError:
        # Another process finished the same tree first; its copy is as good as ours.
        if not (tree / MARKER).is_file():
            raise
        shutil.rmtree(partial, ignore_errors=True)
    logger.info("generated %s (%d bytes of capture) in %.1f s", tree, summary.capture_bytes, seconds)
    return tree


def capture_files(capture_root: Path) -> list[Path]:
    """Capture objects under a synth capture root, in the sorted order every tool lists them."""
    return sorted(p for p in capture_root.glob("*/*/*/*/*/*/*.jsonl") if p.is_file())
