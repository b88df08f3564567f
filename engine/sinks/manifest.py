"""The dataset manifest (`_manifest.json`): which files make up the last commit, their rows and schemas.

Readers that want a consistent view mid-commit use `committed_files`; the commit writes the manifest atomically.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import re
from collections.abc import Iterable, Mapping
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from engine.errors import SinkError
from engine.io.storage import Location, translate_errors
from engine.sinks.dataset import TEMPORARY

__all__ = [
    "FAILED",
    "JOURNAL",
    "LOCK",
    "MANIFEST",
    "bootstrap_manifest",
    "committed_files",
    "conform_batch",
    "is_engine_file",
    "load_schema",
    "new_manifest",
    "read_manifest",
    "schema_bytes",
    "schema_id",
    "table_of",
    "widen",
]

logger = logging.getLogger(__name__)

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


def schema_bytes(schema: pa.Schema) -> bytes:
    return bytes(schema.remove_metadata().serialize().to_pybytes())


def schema_id(schema: pa.Schema) -> str:
    return hashlib.sha256(schema_bytes(schema)).hexdigest()[:16]


def load_schema(text: str) -> pa.Schema:
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


def conform_batch(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
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


def new_manifest() -> dict[str, Any]:
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


def bootstrap_manifest(loc: Location) -> dict[str, Any]:
    """A manifest for a dataset written before manifests existed: the engine's files found by listing."""
    manifest = new_manifest()
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
            entry["schema"] = schema_id(schema)
            manifest["schemas"].setdefault(entry["schema"], base64.b64encode(schema_bytes(schema)).decode())
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
    manifest = read_manifest(loc) or new_manifest()
    out = []
    for rel in sorted(manifest["files"]):
        if table and not (rel == table or rel.startswith(table.rstrip("/") + "/")):
            continue
        if not table and rel.startswith("_"):
            continue
        out.append(loc.join(rel))
    return out
