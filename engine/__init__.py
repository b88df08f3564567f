"""capture-engine: Amazon SageMaker data capture to hour-partitioned Arrow and Parquet.

Jobs (write a dataset, return its RunReport): run_realtime, run_batch, run_merge.
Streams (nothing written; each takes a report for its counts): read_capture (raw events, a RecordBatchReader),
iter_capture (also decoded payload records, per endpoint and variant), read_batch / iter_batch,
read_ground_truth, iter_merge / read_merge (merged rows, batches or one polars DataFrame); committed_files (a
dataset's files as of its last commit). Options: RealtimeOptions, BatchOptions, MergeOptions (frozen,
keyword-only). Payloads: decode_payloads, ColumnSpec, load_column_spec, parse_column_spec. Errors derive from
EngineError. The public API is what `__all__` lists; README.md has the details. Importing the package is cheap:
names are imported on first use (PEP 562), so a worker that only decodes never imports the merge.
"""

import importlib as _importlib
import typing as _typing

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

if _typing.TYPE_CHECKING:
    from engine.jobs.batch import BatchOptions, iter_batch, read_batch, run_batch
    from engine.jobs.labels import read_ground_truth
    from engine.jobs.merge import iter_merge, read_merge, run_merge
    from engine.jobs.realtime import iter_capture, read_capture, run_realtime
    from engine.kernels.payload import ColumnSpec, decode_payloads, load_column_spec, parse_column_spec
    from engine.options import MergeOptions, RealtimeOptions
    from engine.report import RunReport
    from engine.sinks.manifest import committed_files

# Where each lazily imported name lives.
_LAZY = {
    "BatchOptions": "engine.options",
    "iter_batch": "engine.jobs.batch",
    "read_batch": "engine.jobs.batch",
    "run_batch": "engine.jobs.batch",
    "read_ground_truth": "engine.jobs.labels",
    "iter_merge": "engine.jobs.merge",
    "read_merge": "engine.jobs.merge",
    "run_merge": "engine.jobs.merge",
    "iter_capture": "engine.jobs.realtime",
    "read_capture": "engine.jobs.realtime",
    "run_realtime": "engine.jobs.realtime",
    "ColumnSpec": "engine.kernels.payload",
    "decode_payloads": "engine.kernels.payload",
    "load_column_spec": "engine.kernels.payload",
    "parse_column_spec": "engine.kernels.payload",
    "MergeOptions": "engine.options",
    "RealtimeOptions": "engine.options",
    "RunReport": "engine.report",
    "committed_files": "engine.sinks.manifest",
}


def __getattr__(name: str) -> _typing.Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'engine' has no attribute {name!r}")
    value = getattr(_importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


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
    "committed_files",
    "decode_payloads",
    "iter_batch",
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
