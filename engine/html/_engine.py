"""The few names of the engine that the report uses, in one place (re-point them here if the engine moves)."""

from __future__ import annotations

from engine._version import __version__
from engine.errors import EngineError, OptionsError, SourceError
from engine.jobs.merge import run_merge
from engine.monitor.job import MonitorOptions, run_baseline, run_data_quality, run_model_quality
from engine.monitor.quality import QualityOptions
from engine.monitor.sources import envelope_columns
from engine.options import MergeOptions, RealtimeOptions
from engine.jobs.realtime import run_realtime
from engine.sinks.manifest import read_manifest, table_of
from engine.io.storage import Location, open_location, translate_errors
from engine.synth import SynthOptions, synth

__all__ = [
    "EngineError",
    "Location",
    "MergeOptions",
    "MonitorOptions",
    "OptionsError",
    "QualityOptions",
    "RealtimeOptions",
    "SourceError",
    "SynthOptions",
    "__version__",
    "envelope_columns",
    "open_location",
    "read_manifest",
    "run_baseline",
    "run_data_quality",
    "run_merge",
    "run_model_quality",
    "run_realtime",
    "synth",
    "table_of",
    "translate_errors",
]
