"""Partition replacement, planned: what a commit moves in, deletes and rewrites, and the manifest it leaves.

Nothing here touches the committed dataset: carried rows of cut hours and schema rewrites are written under
``_temporary/<run>/``, and the plan (moves, deletes, the next manifest) becomes the commit journal that
`engine.sinks.commit` writes and carries out.
"""

from __future__ import annotations

import base64
import logging
import time
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from engine import interrupts
from engine.io.storage import Location, translate_errors
from engine.sinks.dataset import TEMPORARY
from engine.sinks.formats import parquet_writer
from engine.sinks.manifest import (
    MANIFEST_FORMAT,
    conform_batch,
    load_schema,
    schema_bytes,
    schema_id,
    table_of,
    widen,
)

__all__ = ["CommitStats", "Plan", "plan_replacement"]

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
class Plan:
    moves: list[tuple[str, str]] = field(default_factory=list)  # temporary path -> relative final path
    deletes: list[str] = field(default_factory=list)  # relative paths of committed files to remove
    entries: dict[str, dict[str, Any]] = field(default_factory=dict)  # relative final path -> manifest entry
    schemas: dict[str, pa.Schema] = field(default_factory=dict)
    counter: int = 0
    carried: int = 0  # rows of cut hours kept from committed files
    manifest: dict[str, Any] = field(default_factory=dict)  # the dataset manifest after the commit


def _carry_over(
    loc: Location, run_id: str, rel: str, old: str, cut: tuple[str, int, int], plan: Plan, compression: str | None
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
    plan: Plan,
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


def plan_replacement(
    loc: Location,
    run_id: str,
    manifest: Mapping[str, Any],
    written: dict[str, tuple[int, list[str]]],
    *,
    cuts: Mapping[str, tuple[str, int, int]],
    file_rows: Mapping[str, int],
    file_schemas: Mapping[str, pa.Schema],
    run_entry: Mapping[str, Any] | None,
    compression: str | None,
) -> tuple[Plan, CommitStats]:
    """Plan replacing each partition in `written` of the dataset `manifest` describes (see `commit_run`).

    The engine's files committed in a partition are deleted and the run's moved in; in a partition the
    window cuts, the old rows outside the window are carried into a new file of this run; then every table's
    files get one schema. Returns the plan, its `manifest` the dataset's next one, and what it did.
    """
    files: dict[str, dict[str, Any]] = manifest["files"]
    known = {k: load_schema(v) for k, v in manifest["schemas"].items()}
    by_dir: dict[str, list[str]] = defaultdict(list)
    for rel in files:
        by_dir[rel.rsplit("/", 1)[0] if "/" in rel else ""].append(rel)
    plan, stats = Plan(), CommitStats(partitions=len(written))
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
    plan.manifest = {
        "format": MANIFEST_FORMAT,
        "generation": int(manifest.get("generation", 0)) + 1,
        "updated_at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "last_run": run_id,
        "files": dict(sorted(after.items())),
        "schemas": {k: base64.b64encode(schema_bytes(known[k])).decode() for k in sorted(used)},
        "runs": [*manifest.get("runs", []), *([dict(run_entry)] if run_entry else [])],
    }
    return plan, stats
