"""Column spec: the names and Arrow types of the decoded payload columns, from a user's JSON file.

Format (JSON Schema: `schemas/column-spec.schema.json`)::

    {
      "input":  {"columns": [{"name": "account_length", "type": "int64"}, ...], "header": false},
      "output": {"columns": [{"name": "score", "type": "float64"}], "prediction": "score", "probability": "score"},
      "arrays": "list"
    }

For CSV bodies the columns are positional; for JSON bodies they are field paths after flattening
(``parent.child``), and only the listed fields are kept. `arrays` says how JSON arrays of numbers
become columns: one list column (``list``, the default) or ``name_0..name_k`` columns (``expand``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import orjson
import pyarrow as pa

from engine.errors import OptionsError
from engine.schemas import arrow_type
from engine.storage import open_location, translate_errors

__all__ = ["ArrayMode", "ColumnSpec", "SideSpec", "load_column_spec"]

ArrayMode = Literal["list", "expand"]


@dataclass(frozen=True)
class SideSpec:
    """Columns of one side (input or output). Empty `columns` means: name and type by the default rule."""

    columns: tuple[tuple[str, pa.DataType], ...] = ()
    header: bool = False  # CSV: the first row of every body is a header, not a record
    prediction: str | None = None
    probability: str | None = None

    @property
    def names(self) -> list[str]:
        return [n for n, _ in self.columns]


@dataclass(frozen=True)
class ColumnSpec:
    """How payloads become columns. The default (no file) is `ColumnSpec()`."""

    input: SideSpec = SideSpec()
    output: SideSpec = SideSpec()
    arrays: ArrayMode = "list"

    def side(self, name: Literal["input", "output"]) -> SideSpec:
        return self.input if name == "input" else self.output


def _side(raw: Any, where: str) -> SideSpec:
    if raw is None:
        return SideSpec()
    if not isinstance(raw, dict):
        raise OptionsError(f"column spec {where}: expected an object")
    cols = []
    for i, c in enumerate(raw.get("columns", [])):
        if not isinstance(c, dict) or not isinstance(c.get("name"), str):
            raise OptionsError(f"column spec {where}.columns[{i}]: expected {{'name': ..., 'type': ...}}")
        try:
            cols.append((c["name"], arrow_type(str(c.get("type", "float64")))))
        except ValueError as exc:
            raise OptionsError(f"column spec {where}.columns[{i}]: {exc}") from None
    names = [n for n, _ in cols]
    if len(set(names)) != len(names):
        raise OptionsError(f"column spec {where}: duplicate column names")
    for key in ("prediction", "probability"):
        if raw.get(key) is not None and raw[key] not in names:
            raise OptionsError(f"column spec {where}.{key}: {raw[key]!r} is not one of its columns")
    return SideSpec(
        columns=tuple(cols),
        header=bool(raw.get("header", False)),
        prediction=raw.get("prediction"),
        probability=raw.get("probability"),
    )


def parse_column_spec(data: bytes | str | dict[str, Any], *, where: str = "column spec") -> ColumnSpec:
    """Parse a column spec from JSON text or an already-parsed dict."""
    try:
        raw = data if isinstance(data, dict) else orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise OptionsError(f"{where}: not valid JSON ({exc})") from None
    if not isinstance(raw, dict):
        raise OptionsError(f"{where}: expected a JSON object")
    arrays = raw.get("arrays", "list")
    if arrays not in ("list", "expand"):
        raise OptionsError(f"{where}: arrays must be 'list' or 'expand', got {arrays!r}")
    return ColumnSpec(input=_side(raw.get("input"), "input"), output=_side(raw.get("output"), "output"), arrays=arrays)


def load_column_spec(url: str, storage_options: dict[str, Any] | None = None) -> ColumnSpec:
    """Read a column spec file (local path or fsspec URL)."""
    loc = open_location(url, storage_options)
    with translate_errors(loc.uri(loc.root)):
        data = loc.fs.cat_file(loc.root)
    return parse_column_spec(data, where=f"column spec {url}")
