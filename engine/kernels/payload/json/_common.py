"""What the JSON decoder's parts share: side and column types, container keys, value kinds, scanner tables."""

from __future__ import annotations

import logging
from typing import Final, Literal

import numpy as np
import polars as pl

logger = logging.getLogger(__name__)

logger = logging.getLogger(__name__)

Side = Literal["input", "output"]
Columns = dict[str, pl.Series]
Failures = dict[int, tuple[str, str]]

# Container keys in the order each side prefers them.
_CONTAINERS: Final[dict[str, tuple[str, ...]]] = {
    "input": ("instances", "inputs", "predictions", "outputs"),
    "output": ("predictions", "outputs", "instances", "inputs"),
}
_WS: Final = " \t\r\n"  # JSON whitespace; str.strip_chars() alone would also strip Unicode spaces
_DETAIL_MAX: Final = 200

# Kinds of JSON values, from the first character of their (stripped) text.
_OBJ, _ARR, _STR, _BOOL, _NULL, _INT, _FLOAT = range(7)
_FIRST_CHAR_KIND: Final = {"{": _OBJ, "[": _ARR, '"': _STR, "t": _BOOL, "f": _BOOL, "n": _NULL}
# Valid JSON texts made of these characters only hold numbers and null, so this matches numeric arrays.
_NUMERIC_ARRAY: Final = r"^\[[\s0-9eE+\-.,nul]*\]$"

# Member spans found by the scanner.
_KEY, _VALUE, _ITEM = 0, 1, 2

_TOKEN = np.zeros(256, dtype=np.bool_)
_TOKEN[list(b"{}[],:")] = True
_DEPTH = np.zeros(256, dtype=np.int64)
_DEPTH[list(b"{[")] = 1
_DEPTH[list(b"}]")] = -1
_CLOSE = np.zeros(256, dtype=np.bool_)
_CLOSE[list(b"}]")] = True


class _Unsupported(Exception):
    """The fast path produced a type the column rules do not allow; decode the level key by key instead."""


def _clip(text: str) -> str:
    """A detail string no longer than _DETAIL_MAX characters."""
    return text if len(text) <= _DETAIL_MAX else text[: _DETAIL_MAX - 3] + "..."
