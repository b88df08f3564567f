"""The engine names the container uses, imported in one place (so a move inside the engine is one edit here)."""

from engine.jobs.batch import BatchOptions, iter_batch
from engine.errors import EngineError, NoDataError, OptionsError, RejectLimitError, SourceError
from engine.interrupts import check as check_interrupts
from engine.kernels.join import label_values
from engine.jobs.labels import read_ground_truth
from engine.monitor.job import MonitorOptions, run_baseline, run_data_quality, run_model_quality
from engine.monitor.quality import QualityOptions
from engine.monitor.sources import envelope_columns
from engine.options import RealtimeOptions, parse_time
from engine.kernels.payload import ColumnSpec, decode_payloads, load_column_spec
from engine.jobs.realtime import read_capture
from engine.io.storage import redact

__all__ = [
    "BatchOptions",
    "ColumnSpec",
    "EngineError",
    "MonitorOptions",
    "NoDataError",
    "OptionsError",
    "QualityOptions",
    "RealtimeOptions",
    "RejectLimitError",
    "SourceError",
    "check_interrupts",
    "decode_payloads",
    "envelope_columns",
    "iter_batch",
    "label_values",
    "load_column_spec",
    "parse_time",
    "read_capture",
    "read_ground_truth",
    "redact",
    "run_baseline",
    "run_data_quality",
    "run_model_quality",
]
