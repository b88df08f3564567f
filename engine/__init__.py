"""capture-engine: Amazon SageMaker data capture to hour-partitioned Arrow and Parquet.

Jobs (write a dataset, return its RunReport): run_realtime, run_batch, run_merge.
Streams (nothing written): read_capture (raw events, a RecordBatchReader), iter_capture (also decoded
payload records, per endpoint and variant), read_batch, read_ground_truth, iter_merge / read_merge
(merged rows, batches or one polars DataFrame).
Options: RealtimeOptions, BatchOptions, MergeOptions (frozen, keyword-only). Payloads: decode_payloads,
ColumnSpec, load_column_spec, parse_column_spec. Errors derive from EngineError.

The public API is what `__all__` lists; everything else may change. README.md has the details.
"""

from engine import interrupts as _interrupts  # noqa: F401  first: catches SIGTERM early in the CLI
from engine._version import __version__
from engine.errors import (
    DecodeError,
    EngineError,
    NoDataError,
    OptionsError,
    RejectLimitError,
    SinkError,
    SourceError,
)
from engine.jobs.batch import BatchOptions, read_batch, run_batch
from engine.jobs.labels import read_ground_truth
from engine.jobs.merge import iter_merge, read_merge, run_merge
from engine.jobs.realtime import iter_capture, read_capture, run_realtime
from engine.kernels.payload import ColumnSpec, decode_payloads, load_column_spec, parse_column_spec
from engine.options import MergeOptions, RealtimeOptions
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
    "iter_capture",
    "iter_merge",
    "load_column_spec",
    "parse_column_spec",
    "read_batch",
    "read_capture",
    "read_ground_truth",
    "read_merge",
    "run_batch",
    "run_merge",
    "run_realtime",
]
