"""The environment layer of the options: ``CAPTURE_ENGINE_<FIELD>`` variables parsed by their field's type.

A processing container, a Spark executor or a scheduler configures a job through its environment, and a person
through flags; both must end in the same typed options. The command line takes these variables as the defaults
of its flags (a flag wins), `JobOptions.from_env` under explicit keywords (a keyword wins); the library never
reads the environment on its own.
"""

from __future__ import annotations

import os
import types
import typing
from collections.abc import Mapping
from dataclasses import fields
from datetime import datetime, timedelta
from typing import Any

import orjson

from engine.errors import OptionsError
from engine.options import parse_duration, parse_size, parse_time

__all__ = ["PREFIX", "environment_values", "variable"]

PREFIX = "CAPTURE_ENGINE_"
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}
# Fields whose values are byte counts take sizes such as 8MiB; the rest of the integers are counts.
_SIZES = {"unit_bytes", "max_line_bytes", "row_group_bytes", "join_memory"}
# Fields that name things the environment cannot carry (a column spec is a file: CAPTURE_ENGINE_COLUMNS is the
# container's path to one, read by the container).
_SKIP = {"columns"}


def variable(name: str) -> str:
    """The variable of option field `name`: ``unit_bytes`` -> ``CAPTURE_ENGINE_UNIT_BYTES``."""
    return PREFIX + name.upper()


def _bool(text: str) -> bool:
    low = text.strip().lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise ValueError(f"not a boolean (use true or false): {text!r}")


def _mapping(text: str) -> dict[str, Any]:
    value = orjson.loads(text)
    if not isinstance(value, dict):
        raise ValueError("not a JSON object")
    return value


def _parse(name: str, annotation: Any, text: str) -> Any:
    hint = annotation
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):  # X | None: the non-None member
        members = [a for a in args if a is not type(None)]
        if text.strip().lower() in ("", "none", "null"):
            return None
        hint = members[0]
    origin = typing.get_origin(hint) or hint
    if origin is typing.Literal:
        choices = typing.get_args(hint)
        if text not in choices:
            raise ValueError(f"choose one of {', '.join(map(str, choices))}")
        return text
    if hint is bool:
        return _bool(text)
    if hint is int:
        return parse_size(text) if name in _SIZES else int(text)
    if hint is float:
        return float(text)
    if hint is datetime:
        return parse_time(text)
    if hint is timedelta:
        return parse_duration(text)
    if origin in (Mapping, dict) or (isinstance(origin, type) and issubclass(origin, Mapping)):
        return _mapping(text)
    if hint is str:
        return text
    raise ValueError(f"cannot be set from the environment (type {hint})")


def environment_values(cls: type, environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The fields of options class `cls` that `environ` (default: the process's) sets, parsed.

    Raises:
        OptionsError: a value does not parse as its field's type (the message names the variable).
    """
    env = os.environ if environ is None else environ
    hints = typing.get_type_hints(cls)
    out: dict[str, Any] = {}
    for f in fields(cls):
        key = variable(f.name)
        if f.name in _SKIP or key not in env:
            continue
        try:
            out[f.name] = _parse(f.name, hints[f.name], env[key])
        except (ValueError, OptionsError, orjson.JSONDecodeError) as exc:
            raise OptionsError(f"{key}={env[key]!r}: {exc}") from None
    return out
