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

import functools
import re
from dataclasses import dataclass
from typing import Any, Literal

import orjson
import pyarrow as pa

from engine.errors import OptionsError
from engine.io.storage import open_location, translate_errors
from engine.tables import _schemas_dir, arrow_type

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


@functools.cache
def _spec_schema() -> dict[str, Any]:
    schema: dict[str, Any] = orjson.loads((_schemas_dir() / "column-spec.schema.json").read_bytes())
    return schema


_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "boolean": (bool,),
}


def _check(value: Any, schema: dict[str, Any], path: str) -> str | None:
    """The first violation of `schema` by `value`, or None.

    Covers the part of JSON Schema that `schemas/column-spec.schema.json` uses (``$ref`` to ``$defs``,
    ``type``, ``enum``, ``pattern``, ``required``, ``properties``, ``additionalProperties: false``,
    ``items``, ``minLength``), so that the spec is checked against its own schema without a runtime dependency.
    """
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return _check(value, _spec_schema()["$defs"][name], path)
    where = path or "top level"
    kind = schema.get("type")
    if kind is not None and not isinstance(value, _JSON_TYPES[kind]):
        return f"{where}: expected {'an' if kind[0] in 'aeiou' else 'a'} {kind}, got {type(value).__name__}"
    if "enum" in schema and value not in schema["enum"]:
        return f"{where}: {value!r} is not one of {', '.join(map(str, schema['enum']))}"
    if isinstance(value, str) and len(value) < schema.get("minLength", 0):
        return f"{where}: must not be empty"
    if isinstance(value, str) and "pattern" in schema and not re.search(schema["pattern"], value):
        return f"{where}: {value!r} is not {schema.get('description') or 'of the form ' + schema['pattern']}"
    if isinstance(value, dict):
        props: dict[str, Any] = schema.get("properties", {})
        for key in schema.get("required", []):
            if key not in value:
                return f"{where}: missing key {key!r}"
        for key, item in value.items():
            inner = f"{path}.{key}" if path else key
            if key not in props:
                if schema.get("additionalProperties", True) is False:
                    return f"{where}: unknown key {key!r} (expected one of {', '.join(props)})"
                continue
            problem = _check(item, props[key], inner)
            if problem:
                return problem
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            problem = _check(item, schema["items"], f"{path}[{i}]")
            if problem:
                return problem
    return None


def parse_column_spec(data: bytes | str | dict[str, Any], *, where: str = "column spec") -> ColumnSpec:
    """Parse a column spec from JSON text or an already-parsed dict, validated against its JSON Schema.

    Raises:
        OptionsError: not JSON, or not what `schemas/column-spec.schema.json` allows (a misspelt key such as
            ``"ouput"``, an unknown type name): the message names `where` and the key at fault.
    """
    try:
        raw = data if isinstance(data, dict) else orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise OptionsError(f"{where}: not valid JSON ({exc})") from None
    if not isinstance(raw, dict):
        raise OptionsError(f"{where}: expected a JSON object")
    problem = _check(raw, _spec_schema(), "")
    if problem:
        raise OptionsError(f"{where}: {problem}")
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
