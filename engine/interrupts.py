"""Interrupts (SIGTERM, SIGINT) as a flag the jobs poll at safe points, never as an exception in library code.

A signal delivered as an exception lands wherever the main thread happens to be, including inside
fsspec or botocore code with bare ``except:`` clauses that swallow it and answer wrongly (``exists``
saying False); during a commit that duplicates rows. So the CLI's handler only calls `request`, and
the engine raises `Interrupted` itself, from `check`, at points where stopping is safe: between
batches while writing and between the steps of a commit before its point of no return. Past that
point the commit is completed and the interrupt reported afterwards.

``CAPTURE_ENGINE_TEST_PHASE=<phase>:<action>`` (tests only; `phase`) makes the process kill itself
(``kill``: SIGKILL) or signal itself (``term``: SIGTERM) when it reaches a named phase, so that
tests can aim kills at each step of a commit.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading

__all__ = ["Interrupted", "check", "pending", "phase", "request", "reset"]

logger = logging.getLogger(__name__)

_lock = threading.Lock()
_pending: int | None = None


class Interrupted(KeyboardInterrupt):
    """Raised by the engine itself at a safe point after SIGTERM/SIGINT was requested."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def request(signum: int) -> None:
    """Record that the process was asked to stop (called from a signal handler: no I/O, no raising)."""
    global _pending
    with _lock:
        if _pending is None:
            _pending = signum


def pending() -> int | None:
    """The signal number of an interrupt requested and not yet acted on, else None."""
    return _pending


def reset() -> None:
    global _pending
    with _lock:
        _pending = None


def check() -> None:
    """Raise `Interrupted` if an interrupt was requested (call only where stopping is safe)."""
    signum = _pending
    if signum is not None:
        raise Interrupted(signum)


def phase(name: str) -> None:
    """Mark a named step of a run for `CAPTURE_ENGINE_TEST_PHASE` (does nothing unless it names `name`)."""
    hook = os.environ.get("CAPTURE_ENGINE_TEST_PHASE")
    if not hook:
        return
    target, _, action = hook.rpartition(":")
    if target != name:
        return
    logger.warning("test hook: %s at phase %s", action, name)
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif action == "term":
        os.kill(os.getpid(), signal.SIGTERM)


def _is_cli() -> bool:
    # While `python -m engine` imports the package, sys.argv[0] is "-m"; the console script is named so.
    first = sys.argv[0] if sys.argv else ""
    return first == "-m" or os.path.basename(first) == "capture-engine"


def _early(signum: int, frame: object) -> None:
    request(signum)


# Only when the process is the command line: catch SIGTERM from the very start, before the package's
# imports (~0.7 s) have run, so an early stop still ends with a message (engine.cli installs the same
# handler again). Imported as a library, this module changes nothing process-wide.
if _is_cli() and threading.current_thread() is threading.main_thread():
    signal.signal(signal.SIGTERM, _early)
