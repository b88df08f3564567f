"""The commit protocol: files written under `_temporary/` become the dataset through a journal and a manifest.

Commit protocol (idempotent, crash-safe, one writer at a time; the README shows what readers see when):
1. `begin_run` takes the destination's lock (`DestinationLock`), completes the commits of runs killed
   after their journal and removes what runs killed before it left (`recover`), removes `_SUCCESS`.
2. Files are written under ``DEST/_temporary/<run>/``; readers (pyarrow, Spark, DuckDB with hive
   globs on ``year=``...) skip names starting with ``_``.
3. `commit_run` plans under ``_temporary/<run>/`` (the rows of cut hours to keep, files rewritten to
   their table's one schema), writes the journal (the point of no return), moves the new files in,
   flips ``DEST/_manifest.json`` atomically, deletes the replaced files (only the engine's own).
4. `_SUCCESS` (the JSON run report) is written last.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import time
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from engine import interrupts
from engine.errors import SinkError
from engine.io.storage import Location, translate_errors
from engine.sinks.dataset import SUCCESS, TEMPORARY
from engine.sinks.formats import parquet_writer
from engine.sinks.lock import DestinationLock
from engine.sinks.manifest import (
    JOURNAL,
    MANIFEST,
    MANIFEST_FORMAT,
    bootstrap_manifest,
    conform_batch,
    load_schema,
    read_manifest,
    schema_bytes,
    schema_id,
    table_of,
    widen,
)

__all__ = ["CommitStats", "abort_run", "begin_run", "commit_run", "recover", "write_report"]

logger = logging.getLogger(__name__)


@dataclass
class CommitStats:
    """What a commit did beyond moving the run's files: carried rows of cut hours, schema rewrites."""

    partitions: int = 0
    carried_rows: int = 0
    carried_files: int = 0
    rewritten_files: int = 0
    rewritten_bytes: int = 0
    rewrite_seconds: float = 0.0
    plan_seconds: float = 0.0


@dataclass
class _Plan:
    moves: list[tuple[str, str]] = field(default_factory=list)  # temporary path -> relative final path
    deletes: list[str] = field(default_factory=list)  # relative paths of committed files to remove
    entries: dict[str, dict[str, Any]] = field(default_factory=dict)  # relative final path -> manifest entry
    schemas: dict[str, pa.Schema] = field(default_factory=dict)
    counter: int = 0
    carried: int = 0  # rows of cut hours kept from committed files


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


def _carry_over(
    loc: Location, run_id: str, rel: str, old: str, cut: tuple[str, int, int], plan: _Plan, compression: str | None
) -> bool:
    """Rewrite committed file `old` of a cut hour without the rows inside the run's window [lo, hi).

    Returns False when no row of it falls in the window (the file stays as it is).
    """
    column, lo, hi = cut
    fs = loc.fs
    src = loc.join(old)
    with translate_errors(loc.uri(src), sink=True), fs.open(src, "rb") as f:
        pf = pq.ParquetFile(f)
        if column not in pf.schema_arrow.names:
            return True  # no time to cut by: replaced whole, as before windows could cut hours
        kept: list[pa.RecordBatch] = []
        total = 0
        for batch in pf.iter_batches():
            total += batch.num_rows
            t = batch.column(column).cast(pa.timestamp("ms", tz="UTC")).cast(pa.int64())
            keep = pc.fill_null(pc.or_(pc.less(t, lo), pc.greater_equal(t, hi)), True)
            kept.append(batch.filter(keep))
        schema = pf.schema_arrow
    rows = sum(b.num_rows for b in kept)
    if rows == total:
        return False
    if rows:
        name = f"part-{run_id}-c{plan.counter:05d}.parquet"
        plan.counter += 1
        tmp = loc.join(TEMPORARY, run_id, rel, name)
        with translate_errors(loc.uri(tmp), sink=True):
            if loc.is_local:
                fs.makedirs(tmp.rsplit("/", 1)[0], exist_ok=True)
            with fs.open(tmp, "wb") as out:
                w = parquet_writer(out, schema, compression)
                for b in kept:
                    w.write_batch(b)
                w.close()
        sid = schema_id(schema)
        plan.schemas[sid] = schema
        plan.moves.append((tmp, f"{rel}/{name}"))
        plan.entries[f"{rel}/{name}"] = {"rows": rows, "run": run_id, "schema": sid}
        plan.carried += rows
    return True


def _rewrite(loc: Location, src: str, dst: str, schema: pa.Schema, compression: str | None) -> int:
    """Copy Parquet file `src` to `dst` with `schema` (a widening of its own), row group by row group."""
    fs = loc.fs
    with translate_errors(loc.uri(src), sink=True), fs.open(src, "rb") as f:
        pf = pq.ParquetFile(f)
        size = pf.metadata.serialized_size
        if loc.is_local:
            fs.makedirs(dst.rsplit("/", 1)[0], exist_ok=True)
        with fs.open(dst, "wb") as out:
            w = parquet_writer(out, schema, compression)
            for batch in pf.iter_batches():
                w.write_batch(conform_batch(batch, schema))
            w.close()
    return int(size)


def _unify(
    loc: Location,
    run_id: str,
    files: dict[str, dict[str, Any]],
    known: dict[str, pa.Schema],
    plan: _Plan,
    stats: CommitStats,
    compression: str | None,
) -> None:
    """Give every file of each table one schema: the widening of all of them; narrower files are rewritten.

    `files` is the dataset after this commit (relative path -> entry); new files are those in `plan`.
    Committed files come first, so a table whose new files add nothing keeps its schema and field order.
    """
    t0 = time.perf_counter()
    tmp_of = {final: tmp for tmp, final in plan.moves}
    by_table: dict[str, list[str]] = defaultdict(list)
    for rel in sorted(files, key=lambda r: (r in tmp_of, r)):
        if rel.endswith(".parquet") and files[rel].get("schema"):
            by_table[table_of(rel)].append(rel)
    for rels in by_table.values():
        ids = list(dict.fromkeys(files[r]["schema"] for r in rels))
        if len(ids) == 1:
            continue
        target = widen(known[i] for i in ids)
        tid = schema_id(target)
        known[tid] = plan.schemas[tid] = target
        for rel in rels:
            if files[rel]["schema"] == tid:
                continue
            interrupts.check()
            folder = rel.rsplit("/", 1)[0]
            new_name = f"part-{run_id}-u{plan.counter:05d}.parquet"
            plan.counter += 1
            dst = loc.join(TEMPORARY, run_id, folder, new_name)
            if rel in tmp_of:  # this run's file: rewrite it in the temporary folder
                src = tmp_of[rel]
                plan.moves = [(t, f) for t, f in plan.moves if f != rel]
                entry = plan.entries.pop(rel)
            else:
                src = loc.join(rel)
                plan.deletes.append(rel)
                entry = dict(files[rel])
            stats.rewritten_bytes += _rewrite(loc, src, dst, target, compression)
            stats.rewritten_files += 1
            if rel in tmp_of:
                with translate_errors(loc.uri(src), sink=True):
                    loc.fs.rm(src)
            entry = {**entry, "schema": tid, "run": run_id}
            plan.moves.append((dst, f"{folder}/{new_name}"))
            plan.entries[f"{folder}/{new_name}"] = entry
            files.pop(rel, None)
            files[f"{folder}/{new_name}"] = entry
            logger.info("rewrote %s with the widened schema of its table", rel)
    stats.rewrite_seconds += time.perf_counter() - t0


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
    files: dict[str, dict[str, Any]] = manifest["files"]
    known = {k: load_schema(v) for k, v in manifest["schemas"].items()}
    by_dir: dict[str, list[str]] = defaultdict(list)
    for rel in files:
        by_dir[rel.rsplit("/", 1)[0] if "/" in rel else ""].append(rel)
    plan, stats = _Plan(), CommitStats(partitions=len(written))
    file_rows, file_schemas, cuts = file_rows or {}, file_schemas or {}, cuts or {}
    for rel, (_, tmp_files) in sorted(written.items()):
        interrupts.check()
        cut = cuts.get(rel)
        for old in sorted(by_dir.get(rel, [])):
            if cut is None or not old.endswith(".parquet"):
                plan.deletes.append(old)
            elif _carry_over(loc, run_id, rel, old, cut, plan, compression):
                plan.deletes.append(old)
                stats.carried_files += 1
        for tmp in tmp_files:
            final = f"{rel}/{tmp.rsplit('/', 1)[-1]}"
            plan.moves.append((tmp, final))
            entry: dict[str, Any] = {"rows": file_rows.get(tmp), "run": run_id}
            if tmp in file_schemas:
                entry["schema"] = sid = schema_id(file_schemas[tmp])
                plan.schemas[sid] = file_schemas[tmp]
            plan.entries[final] = entry
    stats.carried_rows = plan.carried
    known.update(plan.schemas)
    after = {k: v for k, v in files.items() if k not in set(plan.deletes)}
    after.update(plan.entries)
    _unify(loc, run_id, after, known, plan, stats, compression)
    used = {e["schema"] for e in after.values() if e.get("schema")}
    new_manifest = {
        "format": MANIFEST_FORMAT,
        "generation": int(manifest.get("generation", 0)) + 1,
        "updated_at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "last_run": run_id,
        "files": dict(sorted(after.items())),
        "schemas": {k: base64.b64encode(schema_bytes(known[k])).decode() for k in sorted(used)},
        "runs": [*manifest.get("runs", []), *([dict(run_entry)] if run_entry else [])],
    }
    interrupts.check()  # the last point at which stopping leaves the destination as it was
    stats.plan_seconds = time.perf_counter() - t0
    journal = {
        "run_id": run_id,
        "moves": plan.moves,
        "deletes": sorted(set(plan.deletes)),
        "manifest": new_manifest,
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
