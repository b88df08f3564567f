"""Benchmark inputs: seeded synth capture trees, generated once per size and kind and cached on disk.

Two kinds of tree: ``mixed`` (synth's default payload mix: CSV, JSON, JSON Lines, some BASE64; the envelope
benchmark) and ``csv`` (CSV payloads only, none BASE64-encoded, some multi-record bodies; the ``--decode``
benchmark, whose peers split CSV bodies themselves).

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
from typing import Any, Final, Literal

from engine.synth import SynthOptions, synth

__all__ = [
    "DEFAULT_ROOT",
    "KINDS",
    "MARKER",
    "SEED",
    "Kind",
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

Kind = Literal["mixed", "csv"]
KINDS: Final[tuple[Kind, ...]] = ("mixed", "csv")


def synth_options(size_bytes: int, kind: Kind = "mixed") -> SynthOptions:
    """The benchmark tree shape: 6 hours x 3 endpoints x 2 variants, about ``size_bytes`` of capture JSONL.

    ``kind="csv"``: every payload is plain CSV (no JSON, no BASE64); multi-record bodies stay at synth's share.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown tree kind {kind!r}, expected one of {KINDS}")
    shares = {"json_share": 0.0, "base64_share": 0.0} if kind == "csv" else {}
    return SynthOptions(
        target_bytes=size_bytes, hours=_HOURS, endpoints=_ENDPOINTS, variants=_VARIANTS, seed=SEED, **shares
    )


def _tree_dir(size_bytes: int, root: Path, kind: Kind = "mixed") -> Path:
    # Every option that changes the bytes is in the name, so a cached tree is only reused for the same input.
    # The mixed kind keeps its original name, so trees generated before kinds existed are still reused.
    prefix = "synth" if kind == "mixed" else f"synth-{kind}"
    return root / f"{prefix}-{size_bytes}B-seed{SEED}-h{_HOURS}-e{_ENDPOINTS}-v{_VARIANTS}"


def is_complete(size_bytes: int, root: Path | str | None = None, kind: Kind = "mixed") -> bool:
    """Whether the tree of ``size_bytes`` and ``kind`` is already generated (ensure_data will reuse it)."""
    base = Path(root) if root is not None else DEFAULT_ROOT
    return (_tree_dir(size_bytes, base, kind) / MARKER).is_file()


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


def ensure_data(size_bytes: int, root: Path | str | None = None, kind: Kind = "mixed") -> Path:
    """Return the folder of a complete synth tree of about ``size_bytes`` (its capture root is ``<folder>/capture``).

    The tree is generated on first use (about 18 s per GB) and reused afterwards; ``kind`` picks the payload mix
    (see the module docstring), each kind cached in its own folder.
    """
    base = Path(root) if root is not None else DEFAULT_ROOT
    tree = _tree_dir(size_bytes, base, kind)
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
    options = synth_options(size_bytes, kind)
    t0 = time.perf_counter()
    summary = synth(str(partial), options)
    seconds = time.perf_counter() - t0
    marker = {
        "summary": {
            **summary.to_dict(),
            "root": str(tree),
            "capture_root": str(tree / "capture"),
            "ground_truth_root": str(tree / "ground-truth"),
        },
        "options": {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in asdict(options).items()},
        "generate_seconds": round(seconds, 3),
        "kind": kind,
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
