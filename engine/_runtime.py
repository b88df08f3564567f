"""Process-wide memory policy, shared by the CLI, the container entry and Spark workers.

A library must not change process-wide allocator settings behind its caller's back, so nothing here runs on
`import engine`; entry points call `tune_memory` once, with the job they are about to run.
"""

from __future__ import annotations

import ctypes
import logging
import sys

__all__ = ["tune_memory"]

logger = logging.getLogger(__name__)

_M_MMAP_THRESHOLD = -3  # mallopt parameter number in glibc's malloc.h
_JEMALLOC_DECAY_MS = 500  # merge: how long jemalloc keeps freed pages for reuse before returning them


def _tune_malloc() -> None:
    """Give large buffers back to the OS when freed (glibc only).

    glibc raises its mmap threshold each time a large block is freed, after which units of a few MB
    come from the heap arenas (one per thread) and stay resident after use: peak RSS then grows with
    the number of threads that ever held a unit rather than with the units in flight.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(_M_MMAP_THRESHOLD, 2**20)
    except (OSError, AttributeError):  # not glibc (musl...): nothing to tune
        logger.debug("mallopt unavailable")


def _merge_pool() -> None:
    # The merge frees large Arrow buffers on other threads than allocated them (decode, join, write), which
    # mimalloc (pyarrow's default) keeps resident: about 200 MB more peak RSS at 2M rows. jemalloc returning
    # pages unused for half a second keeps mimalloc's speed at ~70% of its memory; where pyarrow has no
    # jemalloc, glibc's malloc (mmap threshold pinned by _tune_malloc) returns them at once, for ~10% more CPU.
    import pyarrow as pa

    try:
        pa.set_memory_pool(pa.jemalloc_memory_pool())
        pa.jemalloc_set_decay_ms(_JEMALLOC_DECAY_MS)
    except NotImplementedError:
        pa.set_memory_pool(pa.system_memory_pool())


def tune_memory(job: str | None = None) -> None:
    """Apply the memory policy: glibc returns large blocks at once; a merge also gets its Arrow memory pool."""
    if job is None:
        _tune_malloc()
    elif job == "merge":
        _merge_pool()
