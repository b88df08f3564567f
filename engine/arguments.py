"""What every command's arguments share: argparse types that give one-line errors, and ``--storage-option``.

The CLI, the monitoring, report and transform commands and the container entry all read options this way, so
``--storage-option client_kwargs.region_name=eu-west-1`` means the same nested fsspec option everywhere.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from engine.errors import OptionsError
from engine.options import parse_duration, parse_size, parse_time

__all__ = ["argument_type", "duration", "interval", "positive_int", "ratio", "size", "storage_options", "time"]

T = TypeVar("T")


def storage_options(pairs: Sequence[str]) -> dict[str, Any]:
    """``KEY=VALUE`` pairs as fsspec options: dotted keys nest (``client_kwargs.region_name=...``), true/false
    become booleans.

    Raises:
        OptionsError: a pair without ``=`` or without a key.
    """
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise OptionsError(f"--storage-option takes KEY=VALUE, got {pair!r}")
        node = out
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        low = value.lower()
        node[leaf] = True if low == "true" else False if low == "false" else value
    return out


def argument_type(parse: Callable[[str], T]) -> Callable[[str], T]:
    """An argparse type from one of the options' parsers: its OptionsError becomes argparse's one-line error."""

    def convert(text: str) -> T:
        try:
            return parse(text)
        except OptionsError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = parse.__name__
    return convert


time = argument_type(parse_time)
size = argument_type(parse_size)
duration = argument_type(parse_duration)


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected at least 1, got {value}")
    return value


def ratio(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number within 0..1, got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number within 0..1, got {text!r}")
    return value


def interval(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected at least 0 seconds, got {text!r}")
    return value
