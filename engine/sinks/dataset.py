"""Sink: hive-partitioned Parquet, written under `_temporary/` and committed through a journal and a manifest.

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
import errno
import hashlib
import logging
import os
import re
import socket
import threading
import time
from collections import OrderedDict, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from engine import interrupts
from engine.errors import SinkError
from engine.io.storage import Location, _client_error_code, translate_errors
from engine.kernels.partition import PartitionKey, partition_path, split_by_hour
from engine.tables import TableSpec

__all__ = [
    "CommitStats",
    "DatasetWriter",
    "DestinationLock",
    "abort_run",
    "begin_run",
    "commit_run",
    "committed_files",
    "read_manifest",
    "widen",
]

logger = logging.getLogger(__name__)

TEMPORARY = "_temporary"
SUCCESS = "_SUCCESS"
# Low-cardinality columns; payloads and ids are unique per row, where dictionaries only cost time.
_DICTIONARY = {
    "event_version",
    "input_content_type",
    "input_encoding",
    "output_content_type",
    "output_encoding",
    "source_file",
    "reason",
    "label_encoding",
    "label_file",
}
_NO_STATISTICS = {"input_data", "output_data", "custom_attributes", "raw", "detail"}


def _parquet_writer(f: Any, schema: pa.Schema, compression: str | None) -> pq.ParquetWriter:
    return pq.ParquetWriter(
        f,
        schema,
        compression=compression,
        use_dictionary=[c for c in schema.names if c in _DICTIONARY],
        # Min/max of payload strings cost time and prune nothing; ids and times do prune.
        write_statistics=[c for c in schema.names if c not in _NO_STATISTICS],
    )


@dataclass
class _Open:
    writer: pq.ParquetWriter
    handle: Any
    path: str


@dataclass
class _Partition:
    rel: str  # relative directory under DEST
    hour: int | None = None  # hours since the epoch of its time column (None: no time)
    schema: pa.Schema | None = None  # of its current part file
    rows: int = 0
    files: list[str] = field(default_factory=list)  # temporary paths
    buffer: list[pa.RecordBatch] = field(default_factory=list)
    buffered: int = 0
    parts: int = 0


def widen_schemas(old: pa.Schema, new: pa.Schema) -> pa.Schema:
    """The narrowest schema holding both: new columns added, numbers widened, any other type conflict text.

    A payload field that is a number in one unit and a string in a later one (no spec fixes its type) makes
    its column text for the partition, as a field with mixed types inside one unit does; never a failed run.
    """
    try:
        return pa.unify_schemas([old, new], promote_options="permissive")
    except (pa.ArrowTypeError, pa.ArrowInvalid):
        pass
    fields = {f.name: f for f in old}
    for f in new:
        have = fields.get(f.name)
        if have is None:
            fields[f.name] = f
            continue
        try:
            fields[f.name] = pa.unify_schemas([pa.schema([have]), pa.schema([f])], promote_options="permissive").field(
                0
            )
        except (pa.ArrowTypeError, pa.ArrowInvalid):
            logger.warning(
                "column %r is %s in some rows and %s in others; its column is text", f.name, have.type, f.type
            )
            fields[f.name] = pa.field(f.name, pa.string())
    return pa.schema(list(fields.values()))


def _cast_column(col: pa.Array, target: pa.DataType) -> pa.Array:
    """Cast for schema widening: a value widened to text is its Arrow cast (a number as its shortest
    round-trip text); a nested value Arrow cannot cast (a list) becomes its JSON text."""
    if col.type == target:
        return col
    try:
        return col.cast(target)
    except (pa.ArrowNotImplementedError, pa.ArrowInvalid):
        if not pa.types.is_string(target):
            raise
        # Rare (a list in one unit, a scalar in another): one value at a time.
        return pa.array([None if v is None else orjson.dumps(v).decode() for v in col.to_pylist()], pa.string())


class DatasetWriter:
    """Buffers record batches per partition and writes them as row groups of bounded size."""

    def __init__(
        self,
        loc: Location,
        *,
        spec: TableSpec,
        time_column: str,
        dynamic: bool = False,
        run_id: str,
        prefix: str = "",
        compression: str = "zstd",
        row_group_bytes: int = 64 * 2**20,
        max_open: int = 64,
    ) -> None:
        self.loc = loc
        self.spec = spec
        self.time_column = time_column
        self.run_id = run_id
        self.prefix = prefix
        self.compression = None if compression == "none" else compression
        self.row_group_bytes = row_group_bytes
        self.budget = 2 * row_group_bytes
        self.max_open = max_open
        # Fixed: every file has the table's schema. Dynamic (decoded payloads, whose columns come from
        # the data): each partition takes the schema of its first rows, and rows with new columns start
        # a new part file with the widened schema (readers merge them: union_by_name, missing_columns).
        self.schema = spec.file_schema
        self.dynamic = dynamic
        self.drop = [c for c in spec.partition_by if c in spec.schema.names]
        self.partitions: dict[PartitionKey, _Partition] = {}
        self.open: OrderedDict[PartitionKey, _Open] = OrderedDict()
        self.buffered = 0
        self.rows = 0
        # Per temporary file: rows and schema, for the dataset manifest and the commit's schema unification.
        self.file_rows: dict[str, int] = {}
        self.file_schemas: dict[str, pa.Schema] = {}

    def touch(self, key: PartitionKey) -> None:
        """Mark a partition as part of this run even if it gets no rows (it will be replaced by nothing)."""
        self._partition(key)

    def _partition(self, key: PartitionKey) -> _Partition:
        part = self.partitions.get(key)
        if part is None:
            path = partition_path(key, with_names="endpoint" in self.spec.partition_by)
            rel = "/".join(p for p in (self.prefix, path) if p)
            part = self.partitions[key] = _Partition(rel=rel, hour=key[2])
        return part

    def time_ranges(self, start: datetime | None, end: datetime | None) -> dict[str, tuple[int, int] | None]:
        """Per partition, the part of the window [start, end) it covers, in epoch milliseconds.

        None means the whole partition (or a partition without time); an empty range (lo >= hi) means
        the window does not reach it at all.
        """
        out: dict[str, tuple[int, int] | None] = {}
        for part in self.partitions.values():
            if part.hour is None:
                out[part.rel] = None
                continue
            lo, hi = part.hour * 3_600_000, (part.hour + 1) * 3_600_000
            if start is not None:
                lo = max(lo, int(start.timestamp() * 1000))
            if end is not None:
                hi = min(hi, int(end.timestamp() * 1000))
            out[part.rel] = None if (lo, hi) == (part.hour * 3_600_000, (part.hour + 1) * 3_600_000) else (lo, hi)
        return out

    def write(self, batch: pa.RecordBatch) -> None:
        # Between batches is a safe point to stop at (see engine.interrupts); inside library calls is not.
        interrupts.check()
        for key, rows in split_by_hour(batch, self.time_column):
            part = self._partition(key)
            rows = self._conform(key, part, rows)
            part.buffer.append(rows)
            part.buffered += rows.nbytes
            part.rows += rows.num_rows
            self.buffered += rows.nbytes
            self.rows += rows.num_rows
            if part.buffered >= self.row_group_bytes:
                self._flush(key)
        while self.buffered > self.budget:
            biggest = max(self.partitions, key=lambda k: self.partitions[k].buffered)
            self._flush(biggest)

    def _conform(self, key: PartitionKey, part: _Partition, rows: pa.RecordBatch) -> pa.RecordBatch:
        if not self.dynamic:
            part.schema = self.schema
            return rows.select(self.schema.names)
        rows = rows.drop_columns([c for c in self.drop if c in rows.schema.names])
        if part.schema is None:
            part.schema = rows.schema
        elif rows.schema != part.schema:
            if not set(rows.schema.names) <= set(part.schema.names) or any(
                part.schema.field(f.name).type != f.type for f in rows.schema
            ):
                widened = widen_schemas(part.schema, rows.schema)
                logger.info("columns of %s widen to %s", part.rel, widened.names)
                self._flush(key)
                self._close(key)
                part.schema = widened
            if part.buffer and part.buffer[0].schema != part.schema:
                part.buffer = [self._cast(b, part.schema) for b in part.buffer]
            rows = self._cast(rows, part.schema)
        return rows

    @staticmethod
    def _cast(rows: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
        cols = [
            _cast_column(rows.column(f.name), f.type)
            if f.name in rows.schema.names
            else pa.nulls(rows.num_rows, f.type)
            for f in schema
        ]
        return pa.RecordBatch.from_arrays(cols, schema=schema)

    def _flush(self, key: PartitionKey) -> None:
        part = self.partitions[key]
        if not part.buffer:
            return
        table = pa.Table.from_batches(part.buffer, schema=part.schema)
        self.buffered -= part.buffered
        part.buffer, part.buffered = [], 0
        handle = self.open.get(key)
        if handle is None:
            handle = self._open(key, part)
        else:
            self.open.move_to_end(key)
        with translate_errors(self.loc.uri(handle.path), sink=True):
            handle.writer.write_table(table, row_group_size=max(table.num_rows, 1))
        self.file_rows[handle.path] = self.file_rows.get(handle.path, 0) + table.num_rows

    def _open(self, key: PartitionKey, part: _Partition) -> _Open:
        while len(self.open) >= self.max_open:
            # Least recently written partition: its next rows go to a new part file.
            self._close(next(iter(self.open)))
        name = f"part-{self.run_id}-{part.parts:05d}.parquet"
        part.parts += 1
        path = self.loc.join(TEMPORARY, self.run_id, part.rel, name)
        schema = part.schema or self.schema
        fs = self.loc.fs
        with translate_errors(self.loc.uri(path), sink=True):
            if self.loc.is_local:
                fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
            f = fs.open(path, "wb")
            writer = _parquet_writer(f, schema, self.compression)
        part.files.append(path)
        self.file_schemas[path] = schema
        self.file_rows.setdefault(path, 0)
        handle = self.open[key] = _Open(writer, f, path)
        return handle

    def _close(self, key: PartitionKey) -> None:
        handle = self.open.pop(key, None)
        if handle is None:
            return
        with translate_errors(self.loc.uri(handle.path), sink=True):
            handle.writer.close()
            handle.handle.close()

    def abort(self) -> None:
        """Drop open files without finishing them (after a failure; nothing of them is committed).

        An object-store upload is aborted rather than completed, and the writer is marked closed so
        that garbage collection does not try to write a footer to a dead connection.
        """
        for key in list(self.open):
            handle = self.open.pop(key)
            handle.writer.is_open = False
            try:
                if self.loc.is_local:
                    handle.handle.close()
                else:
                    try:
                        handle.handle.discard()
                    finally:
                        handle.handle.closed = True
            except Exception:  # best effort: the store may be the thing that failed
                logger.debug("could not discard %s", self.loc.uri(handle.path), exc_info=True)

    def close(self) -> dict[str, tuple[int, list[str]]]:
        """Flush and close everything; returns {partition dir: (rows, temporary files)}."""
        for key in list(self.partitions):
            self._flush(key)
        for key in list(self.open):
            self._close(key)
        out: dict[str, tuple[int, list[str]]] = {}
        for p in self.partitions.values():  # keys of different shape may name one folder (batch: no endpoint)
            rows, files = out.get(p.rel, (0, []))
            out[p.rel] = (rows + p.rows, files + p.files)
        return out


# ---------------------------------------------------------------------------------------------------------------
# The destination: lock, dataset manifest, commit journal.

MANIFEST = "_manifest.json"
FAILED = "_FAILED"
LOCK = "_lock"
JOURNAL = "_commit.json"
MANIFEST_FORMAT = "capture-engine-manifest/1"
# How long an object-store lock stays valid without a heartbeat: a killed run blocks the destination this long.
LOCK_TTL_SECONDS = 60.0
# Names of the files the engine writes in partitions: part-<run id>-<n>.<ext>, the run id being the
# UTC start time and 8 hex digits. Only such files (or those the manifest lists) are ever deleted.
_OURS = re.compile(r"part-\d{8}T\d{6}-[0-9a-f]{8}-[a-z]?\d{5}\.(?:parquet|jsonl)")


def is_engine_file(name: str) -> bool:
    """True for a file name the engine writes into partitions (a user's own ``part-x.parquet`` is not)."""
    return _OURS.fullmatch(name.rsplit("/", 1)[-1]) is not None


def _schema_bytes(schema: pa.Schema) -> bytes:
    return bytes(schema.remove_metadata().serialize().to_pybytes())


def _schema_id(schema: pa.Schema) -> str:
    return hashlib.sha256(_schema_bytes(schema)).hexdigest()[:16]


def _load_schema(text: str) -> pa.Schema:
    return pa.ipc.read_schema(pa.py_buffer(base64.b64decode(text)))


def widen(schemas: Iterable[pa.Schema]) -> pa.Schema:
    """The narrowest schema every one of `schemas` casts to: missing columns null, int -> float -> string.

    pyarrow's permissive promotion does what it can (null -> any, int -> wider int -> float, ...); a
    column whose types it cannot reconcile (number and string, say) becomes a string column.
    """
    schemas = [s.remove_metadata() for s in schemas]
    try:
        return pa.unify_schemas(schemas, promote_options="permissive")
    except (pa.ArrowTypeError, pa.ArrowInvalid, NotImplementedError):
        pass
    fields: dict[str, pa.Field] = {}
    for s in schemas:
        for f in s:
            have = fields.get(f.name)
            if have is None or have.type == f.type:
                fields.setdefault(f.name, f)
                continue
            try:
                fields[f.name] = pa.unify_schemas(
                    [pa.schema([have]), pa.schema([f])], promote_options="permissive"
                ).field(0)
            except (pa.ArrowTypeError, pa.ArrowInvalid, NotImplementedError):
                fields[f.name] = pa.field(f.name, pa.string())
    return pa.schema(list(fields.values()))


def _conform(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    cols = []
    for f in schema:
        if f.name not in batch.schema.names:
            cols.append(pa.nulls(batch.num_rows, f.type))
            continue
        col = batch.column(f.name)
        try:
            cols.append(col.cast(f.type))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            # No Arrow cast (a struct to string, say): its JSON text keeps the value.
            cols.append(pa.array([None if v is None else orjson.dumps(v).decode() for v in col.to_pylist()], f.type))
    return pa.RecordBatch.from_arrays(cols, schema=schema)


def table_of(rel_path: str) -> str:
    """The table a file belongs to: its directory up to the time partitions (``endpoint=a/variant=b``)."""
    parts = rel_path.split("/")[:-1]
    for i, p in enumerate(parts):
        if p.startswith("year="):
            return "/".join(parts[:i])
    return "/".join(parts)


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


def _new_manifest() -> dict[str, Any]:
    return {"format": MANIFEST_FORMAT, "generation": 0, "files": {}, "schemas": {}, "runs": []}


def read_manifest(loc: Location) -> dict[str, Any] | None:
    """The dataset manifest of `loc`, or None when the dataset has none (empty, or written before manifests)."""
    path = loc.join(MANIFEST)
    with translate_errors(loc.uri(path), sink=True):
        try:
            data = loc.fs.cat_file(path)
        except FileNotFoundError:
            return None
    try:
        manifest: dict[str, Any] = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise SinkError(f"the dataset manifest is not valid JSON ({exc})", uri=loc.uri(path)) from None
    if manifest.get("format") != MANIFEST_FORMAT:
        raise SinkError(f"unknown dataset manifest format {manifest.get('format')!r}", uri=loc.uri(path))
    return manifest


def _bootstrap_manifest(loc: Location) -> dict[str, Any]:
    """A manifest for a dataset written before manifests existed: the engine's files found by listing."""
    manifest = _new_manifest()
    fs = loc.fs
    with translate_errors(loc.uri(loc.root), sink=True):
        if not fs.exists(loc.root):
            return manifest
        found = fs.find(loc.root)
    base = loc.root.rstrip("/") + "/"
    for path in sorted(found):
        rel = path[len(base) :] if path.startswith(base) else path
        if rel.startswith(TEMPORARY + "/") or not is_engine_file(rel):
            continue
        entry: dict[str, Any] = {"rows": None, "run": None}
        if rel.endswith(".parquet"):
            with translate_errors(loc.uri(path), sink=True), fs.open(path, "rb") as f:
                meta = pq.ParquetFile(f).metadata
                schema = meta.schema.to_arrow_schema()
            entry["rows"] = meta.num_rows
            entry["schema"] = _schema_id(schema)
            manifest["schemas"].setdefault(entry["schema"], base64.b64encode(_schema_bytes(schema)).decode())
        manifest["files"][rel] = entry
    if manifest["files"]:
        logger.info("%s has no manifest: listed %d files written before manifests", loc.uri(loc.root), len(found))
    return manifest


def committed_files(dest: str, storage_options: Mapping[str, Any] | None = None, *, table: str = "") -> list[str]:
    """The data files of the last commit of dataset `dest`, from its manifest: a consistent view, even mid-commit.

    `table` selects files under that relative folder (``"_rejects"``, ``"endpoint=a"``); by default every
    file outside folders starting with ``_``. Paths are as the dataset's filesystem names them.
    """
    from engine.io.storage import open_location

    loc = open_location(dest, storage_options)
    manifest = read_manifest(loc) or _new_manifest()
    out = []
    for rel in sorted(manifest["files"]):
        if table and not (rel == table or rel.startswith(table.rstrip("/") + "/")):
            continue
        if not table and rel.startswith("_"):
            continue
        out.append(loc.join(rel))
    return out


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
                w = _parquet_writer(out, schema, compression)
                for b in kept:
                    w.write_batch(b)
                w.close()
        sid = _schema_id(schema)
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
            w = _parquet_writer(out, schema, compression)
            for batch in pf.iter_batches():
                w.write_batch(_conform(batch, schema))
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
        tid = _schema_id(target)
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
    manifest = read_manifest(loc) or _bootstrap_manifest(loc)
    files: dict[str, dict[str, Any]] = manifest["files"]
    known = {k: _load_schema(v) for k, v in manifest["schemas"].items()}
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
                entry["schema"] = sid = _schema_id(file_schemas[tmp])
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
        "schemas": {k: base64.b64encode(_schema_bytes(known[k])).decode() for k in sorted(used)},
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
