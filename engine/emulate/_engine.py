"""The few names the emulators take from the rest of the engine, in one place (re-pointed here if modules move)."""

from engine.errors import EngineError, OptionsError, SinkError, SourceError
from engine.io.fetch import ordered_map
from engine.interrupts import check as check_interrupt
from engine.io.storage import Location, open_location, translate_errors

__all__ = [
    "EngineError",
    "Location",
    "OptionsError",
    "SinkError",
    "SourceError",
    "check_interrupt",
    "open_location",
    "ordered_map",
    "translate_errors",
]
