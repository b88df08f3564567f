"""Output table schemas, loaded once from `schemas/tables.json` (the single source of truth)."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa

__all__ = ["TableSpec", "capture_schema", "rejects_schema", "table_spec"]

_TIMESTAMP = re.compile(r"timestamp\[(s|ms|us|ns)(?:, tz=([^\]]+))?\]")
_SIMPLE: dict[str, pa.DataType] = {
    "string": pa.string(),
    "large_string": pa.large_string(),
    "binary": pa.binary(),
    "int64": pa.int64(),
    "int32": pa.int32(),
    "float64": pa.float64(),
    "float32": pa.float32(),
    "bool": pa.bool_(),
}


@dataclass(frozen=True)
class TableSpec:
    """One output table: its full Arrow schema and which columns are hive partition keys."""

    name: str
    schema: pa.Schema
    partition_by: tuple[str, ...]

    @property
    def file_schema(self) -> pa.Schema:
        """The schema stored in Parquet files: partition columns live in the directory names."""
        keep = [f for f in self.schema if f.name not in self.partition_by]
        return pa.schema(keep)


def arrow_type(name: str) -> pa.DataType:
    """Parse the Arrow type names used in `schemas/*.json` (``string``, ``timestamp[ms, tz=UTC]``...)."""
    if name in _SIMPLE:
        return _SIMPLE[name]
    m = _TIMESTAMP.fullmatch(name.strip())
    if m:
        return pa.timestamp(m.group(1), tz=m.group(2))
    raise ValueError(f"unknown Arrow type name {name!r} in schemas/tables.json")


def _schemas_dir() -> Path:
    # Installed wheels carry the folder as engine/schemas; an editable checkout reads the top-level one.
    packaged = resources.files("engine") / "schemas"
    if packaged.is_dir():
        return Path(str(packaged))
    return Path(__file__).resolve().parent.parent / "schemas"


@functools.cache
def _tables() -> dict[str, Any]:
    data: dict[str, Any] = orjson.loads((_schemas_dir() / "tables.json").read_bytes())
    return data


@functools.cache
def table_spec(name: str) -> TableSpec:
    """The spec of output table `name` (``capture``, ``rejects``)."""
    raw = _tables()[name]
    fields = [pa.field(c["name"], arrow_type(c["type"]), nullable=c["nullable"]) for c in raw["columns"]]
    return TableSpec(name=name, schema=pa.schema(fields), partition_by=tuple(raw.get("partition_by", [])))


def capture_schema() -> pa.Schema:
    """Arrow schema of the real-time capture table: one row per captured event (table "capture")."""
    return table_spec("capture").schema


def rejects_schema() -> pa.Schema:
    """Arrow schema of the `_rejects` table."""
    return table_spec("rejects").schema
