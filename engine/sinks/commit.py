"""The commit protocol: files written under `_temporary/` become the dataset through a journal and a manifest.

Commit protocol (idempotent, crash-safe, one writer at a time; the README shows what readers see when):
1. `begin_run` takes the destination's lock (`DestinationLock`), completes the commits of runs killed
   after their journal and removes what runs killed before it left (`recover`), removes `_SUCCESS`.
2. Files are written under ``DEST/_temporary/<run>/``; readers (pyarrow, Spark, DuckDB with hive
   globs on ``year=``...) skip names starting with ``_``.
3. `commit_run` plans under ``_temporary/<run>/`` (`engine.sinks.replace`: the rows of cut hours to keep,
   files rewritten to their table's one schema), writes the journal (the point of no return), moves the new files in,
   flips ``DEST/_manifest.json`` atomically, deletes the replaced files (only the engine's own).
4. `_SUCCESS` (the JSON run report) is written last.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Mapping
from typing import Any

import orjson
import pyarrow as pa

from engine import interrupts
from engine.errors import SinkError
from engine.io.storage import Location, translate_errors
from engine.sinks.dataset import SUCCESS, TEMPORARY
from engine.sinks.lock import DestinationLock
from engine.sinks.manifest import JOURNAL, MANIFEST, bootstrap_manifest, read_manifest
from engine.sinks.replace import CommitStats, plan_replacement

__all__ = ["CommitStats", "abort_run", "begin_run", "commit_run", "recover", "write_report"]

logger = logging.getLogger(__name__)


def begin_run(loc: Location, run_id: str) -> DestinationLock:
    """Lock the destination, finish or clear what dead runs left, remove `_SUCCESS`; returns the held lock."""
    lock = DestinationLock(loc, run_id)
    lock.acquire()
    try:
        recover(loc, run_id)
        path = loc.join(SUCCESS)
        with translate_errors(loc.uri(path), sink=True):
            if loc.fs.exists(path):
                loc.fs.rm(path)
    except BaseException:
        lock.release()
        raise
    return lock


def recover(loc: Location, run_id: str) -> None:
    """With the lock held: complete the commits of runs killed past their point of no return, remove the rest.

    Every run holds the lock from start to end, so the temporary folder of any other run belongs to a
    dead process: a run that wrote its commit journal is rolled forward (its commit finished exactly as
    it would have), any other is removed.
    """
    fs = loc.fs
    fs.invalidate_cache()
    tmp = loc.join(TEMPORARY)
    with translate_errors(loc.uri(tmp), sink=True):
        if not fs.exists(tmp):
            return
        runs = [p for p in fs.ls(tmp, detail=False) if p.rstrip("/").rsplit("/", 1)[-1] != run_id]
    for path in sorted(runs):
        name = path.rstrip("/").rsplit("/", 1)[-1]
        journal = f"{path.rstrip('/')}/{JOURNAL}"
        with translate_errors(loc.uri(journal), sink=True):
            data = fs.cat_file(journal) if fs.exists(journal) else None
        if data is not None:
            logger.warning("completing the commit of run %s, which was stopped during its commit", name)
            _execute(loc, name, orjson.loads(data), recovering=True)
        else:
            with translate_errors(loc.uri(path), sink=True):
                size = sum(int(i.get("size") or 0) for i in fs.find(path, detail=True).values())
                fs.rm(path, recursive=True)
            logger.warning("removed the temporary files of run %s, which died before committing (%d bytes)", name, size)
    _remove_empty_temporary(loc)


def _remove_empty_temporary(loc: Location) -> None:
    parent = loc.join(TEMPORARY)
    if loc.is_local:
        with contextlib.suppress(OSError):  # absent, or another run's files in it
            os.rmdir(parent)


def commit_run(
    loc: Location,
    run_id: str,
    written: dict[str, tuple[int, list[str]]],
    *,
    reports: Mapping[str, bytes | None],
    cuts: Mapping[str, tuple[str, int, int]] | None = None,
    file_rows: Mapping[str, int] | None = None,
    file_schemas: Mapping[str, pa.Schema] | None = None,
    run_entry: Mapping[str, Any] | None = None,
    compression: str | None = "zstd",
) -> CommitStats:
    """Commit this run's partitions, with the dataset manifest flipped atomically; hold the lock while calling.

    Each partition in `written` (relative folder -> (rows, temporary files)) is replaced: the engine's
    files committed there before are removed and the run's moved in, except that in a partition the
    run's window cuts (`cuts`: folder -> (time column, lo ms, hi ms)) the old rows outside [lo, hi) are
    kept, rewritten into a file of this run. Then every table's files get one schema (`widen`).

    Steps: plan (carry-over and schema rewrites, all under ``_temporary/<run>/``), write the journal
    (the point of no return), move the files in, write the manifest, delete the replaced files, write
    `reports` (name -> content, None removes that file: ``_SUCCESS``, ``_FAILED``), remove
    ``_temporary/<run>/``. A run killed after the journal is completed by the next run (`recover`).
    """
    t0 = time.perf_counter()
    fs = loc.fs
    # Object-store filesystems cache listings; what other runs or this one wrote must be seen fresh.
    fs.invalidate_cache()
    manifest = read_manifest(loc) or bootstrap_manifest(loc)
    plan, stats = plan_replacement(
        loc,
        run_id,
        manifest,
        written,
        cuts=cuts or {},
        file_rows=file_rows or {},
        file_schemas=file_schemas or {},
        run_entry=run_entry,
        compression=compression,
    )
    interrupts.check()  # the last point at which stopping leaves the destination as it was
    stats.plan_seconds = time.perf_counter() - t0
    journal = {
        "run_id": run_id,
        "moves": plan.moves,
        "deletes": sorted(set(plan.deletes)),
        "manifest": plan.manifest,
        "reports": {k: None if v is None else v.decode() for k, v in reports.items()},
    }
    interrupts.phase("commit:plan")
    path = loc.join(TEMPORARY, run_id, JOURNAL)
    with translate_errors(loc.uri(path), sink=True):
        _write_atomic(loc, path, orjson.dumps(journal))
    interrupts.phase("commit:journal")
    _execute(loc, run_id, journal, recovering=False)
    logger.info("committed %d partitions to %s", len(written), loc.uri(loc.root))
    return stats


def _write_atomic(loc: Location, path: str, data: bytes) -> None:
    """Replace `path` with `data` so that readers see the old or the new content, never a part of it."""
    fs = loc.fs
    if loc.is_local:
        os.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)  # rename(2) is atomic within a filesystem
    else:
        fs.pipe_file(path, data)  # one PUT: object stores show the old or the new object


def _execute(loc: Location, run_id: str, journal: Mapping[str, Any], *, recovering: bool) -> None:
    """Carry out a commit journal; idempotent, so a run killed half-way is completed by the next one."""
    fs = loc.fs
    made: set[str] = set()
    for i, (tmp, final) in enumerate(journal["moves"]):
        dst = loc.join(final)
        with translate_errors(loc.uri(dst), sink=True):
            if recovering and not fs.exists(tmp):
                if not fs.exists(dst):
                    raise SinkError(f"the commit journal of run {run_id} names a file that is gone", uri=loc.uri(tmp))
                continue
            folder = dst.rsplit("/", 1)[0]
            if loc.is_local and folder not in made:
                fs.makedirs(folder, exist_ok=True)
                made.add(folder)
            fs.mv(tmp, dst)
        if i == 0:
            interrupts.phase("commit:move")
    interrupts.phase("commit:moved")
    path = loc.join(MANIFEST)
    with translate_errors(loc.uri(path), sink=True):
        _write_atomic(loc, path, orjson.dumps(journal["manifest"], option=orjson.OPT_INDENT_2))
    interrupts.phase("commit:manifest")
    deletes = [loc.join(rel) for rel in journal["deletes"]]
    for i, p in enumerate(deletes):
        # FileNotFoundError: removed already, by the run that was killed.
        with translate_errors(loc.uri(p), sink=True), contextlib.suppress(FileNotFoundError):
            fs.rm_file(p)
        if i == 0:
            interrupts.phase("commit:delete")
    if loc.is_local:
        for folder in sorted({p.rsplit("/", 1)[0] for p in deletes}, reverse=True):
            with contextlib.suppress(OSError):  # a partition replaced by nothing leaves no empty folder
                os.rmdir(folder)
    interrupts.phase("commit:deleted")
    for name, text in sorted(journal["reports"].items(), key=lambda kv: kv[0] == SUCCESS):
        p = loc.join(name)
        with translate_errors(loc.uri(p), sink=True):
            if text is None:
                if fs.exists(p):
                    fs.rm(p)
            else:
                _write_atomic(loc, p, text.encode())
    interrupts.phase("commit:report")
    tmp_root = loc.join(TEMPORARY, run_id)
    with translate_errors(loc.uri(tmp_root), sink=True):
        if fs.exists(tmp_root):
            fs.rm(tmp_root, recursive=True)
        _remove_empty_temporary(loc)
    interrupts.phase("commit:done")


def write_report(loc: Location, name: str, data: bytes) -> None:
    """Write a report file (``_FAILED``) of a run that commits nothing."""
    path = loc.join(name)
    with translate_errors(loc.uri(path), sink=True):
        _write_atomic(loc, path, data)


def abort_run(loc: Location, run_id: str) -> None:
    """Remove this run's temporary files (best effort; the next run removes what is left)."""
    tmp_root = loc.join(TEMPORARY, run_id)
    try:
        if loc.fs.exists(f"{tmp_root}/{JOURNAL}"):
            # Past its point of no return a commit is completed, never undone: the next run rolls it forward.
            logger.warning(
                "the commit of run %s stopped after its point of no return; the next run on %s completes it",
                run_id,
                loc.uri(loc.root),
            )
            return
        if loc.fs.exists(tmp_root):
            loc.fs.rm(tmp_root, recursive=True)
        _remove_empty_temporary(loc)
    except Exception:  # best effort: the store may be what failed, and its error is the one to report
        logger.warning("could not remove %s", loc.uri(tmp_root))
