"""The few engine names the emulators use, imported in one place (so a move inside the engine is one edit here)."""

from engine.errors import OptionsError
from engine.io.storage import Location, open_location, redact

__all__ = ["Location", "OptionsError", "open_location", "redact"]
