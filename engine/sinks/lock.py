"""One writer per destination: a lock object created exclusively (a file locally, a conditional put on S3)."""

from __future__ import annotations

import errno
import logging
import os
import socket
import threading
import time

import orjson

from engine.errors import SinkError
from engine.io.storage import Location, _client_error_code, translate_errors
from engine.sinks.manifest import LOCK, LOCK_TTL_SECONDS

__all__ = ["DestinationLock"]

logger = logging.getLogger(__name__)

# Runs of this process holding a lock: a lock object naming this process but none of them is stale.
_ACTIVE: set[str] = set()


class DestinationLock:
    """One writer per destination: an exclusive lock held from the start of a run to the end of its commit.

    On a local filesystem: ``flock`` on ``DEST/_lock``, which the kernel releases when the process dies,
    however it dies. On object stores: ``DEST/_lock`` created with a conditional PUT (If-None-Match, so two
    runs cannot both create it), refreshed by a heartbeat and taken over only once it has expired
    (`LOCK_TTL_SECONDS` after its owner stopped refreshing it). A second run fails with one line.
    """

    def __init__(self, loc: Location, run_id: str) -> None:
        self.loc = loc
        self.run_id = run_id
        self.path = loc.join(LOCK)
        self._fd: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _info(self) -> bytes:
        return orjson.dumps(
            {
                "run_id": self.run_id,
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "expires": time.time() + LOCK_TTL_SECONDS,
            }
        )

    def _busy(self, info: bytes) -> SinkError:
        try:
            owner = orjson.loads(info)
            who = f"run {owner.get('run_id')}, pid {owner.get('pid')} on {owner.get('host')}"
        except orjson.JSONDecodeError:
            who = "another run"
        return SinkError(
            f"another run is writing this destination ({who}); wait for it to finish or stop it",
            uri=self.loc.uri(self.loc.root),
        )

    def acquire(self) -> None:
        if self.loc.is_local:
            self._acquire_local()
        else:
            self._acquire_remote()

    def _acquire_local(self) -> None:
        import fcntl  # POSIX only, like the rest of the local commit

        with translate_errors(self.loc.uri(self.path), sink=True):
            os.makedirs(self.loc.root, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            info = os.pread(fd, 4096, 0)
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise self._busy(info) from None
            raise SinkError(f"cannot lock ({exc.strerror})", uri=self.loc.uri(self.path)) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, self._info(), 0)
        self._fd = fd

    def _acquire_remote(self) -> None:
        fs = self.loc.fs
        with translate_errors(self.loc.uri(self.path), sink=True):
            for _ in range(2):
                try:
                    fs.pipe_file(self.path, self._info(), mode="create")
                    break
                except TypeError:  # a filesystem without exclusive create (memory://): best effort
                    if fs.exists(self.path):
                        info = fs.cat_file(self.path)
                        if not self._stale(info):
                            raise self._busy(info) from None
                    fs.pipe_file(self.path, self._info())
                    break
                except OSError as exc:
                    # S3 answers 412 PreconditionFailed when the object exists (s3fs: EINVAL or EEXIST).
                    if not isinstance(exc, FileExistsError) and _client_error_code(exc) != "PreconditionFailed":
                        raise
                    info = fs.cat_file(self.path)
                    if not self._stale(info):
                        raise self._busy(info) from None
                    logger.warning("taking over the stale lock %s (%s)", self.loc.uri(self.path), info.decode())
                    fs.rm(self.path)
            else:
                raise self._busy(b"")
        _ACTIVE.add(self.run_id)
        self._thread = threading.Thread(target=self._heartbeat, name="engine-lock", daemon=True)
        self._thread.start()

    @staticmethod
    def _stale(info: bytes) -> bool:
        """No live owner: expired, or its owner's process (on this host) is gone or finished that run."""
        try:
            owner = orjson.loads(info)
            if float(owner.get("expires", 0)) < time.time():
                return True
            if owner.get("host") != socket.gethostname():
                return False
            pid = int(owner.get("pid", -1))
            if pid == os.getpid():
                return owner.get("run_id") not in _ACTIVE
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except (orjson.JSONDecodeError, AttributeError, TypeError, ValueError, OSError):
            return False
        return False

    def _heartbeat(self) -> None:
        while not self._stop.wait(LOCK_TTL_SECONDS / 4):
            try:
                self.loc.fs.pipe_file(self.path, self._info())
            except Exception:  # noqa: PERF203  the next beat retries; the commit reports storage errors
                logger.debug("lock heartbeat failed", exc_info=True)

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None
        _ACTIVE.discard(self.run_id)
        if self._thread is not None:
            self._stop.set()
            self._thread.join(timeout=10)
            self._thread = None
            try:
                self.loc.fs.rm(self.path)
            except Exception:  # it expires on its own
                logger.warning("could not remove the lock %s", self.loc.uri(self.path))
