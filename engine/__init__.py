"""capture-engine: Amazon SageMaker data capture to hour-partitioned Arrow and Parquet.

The public API is what `__all__` lists; everything else may change.
"""

from engine import interrupts as _interrupts  # noqa: F401  first: catches SIGTERM early in the CLI
from engine._version import __version__
from engine.batch import BatchOptions, read_batch, run_batch
from engine.errors import (
    DecodeError,
    EngineError,
    NoDataError,
    OptionsError,
    RejectLimitError,
    SinkError,
    SourceError,
)
from engine.labels import read_ground_truth
from engine.merge import run_merge
from engine.options import MergeOptions, RealtimeOptions
from engine.payload import ColumnSpec, decode_payloads, load_column_spec, parse_column_spec
from engine.realtime import read_capture, run_realtime
from engine.report import RunReport

__all__ = [
    "BatchOptions",
    "ColumnSpec",
    "DecodeError",
    "EngineError",
    "MergeOptions",
    "NoDataError",
    "OptionsError",
    "RealtimeOptions",
    "RejectLimitError",
    "RunReport",
    "SinkError",
    "SourceError",
    "__version__",
    "decode_payloads",
    "load_column_spec",
    "parse_column_spec",
    "read_batch",
    "read_capture",
    "read_ground_truth",
    "run_batch",
    "run_merge",
    "run_realtime",
]
