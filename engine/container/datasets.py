"""What a monitoring job's ``dataset_source`` holds, turned into what the monitoring jobs read.

- ``sagemakerCaptureJson``: endpoint capture (``{endpoint}/{variant}/yyyy/mm/dd/hh/*.jsonl``), decoded into
  feature columns, only the records with ``inferenceTime`` in [start_time, end_time) (SageMaker "sometimes
  downloads more than the window").
- ``sagemakerMergeJson``: SageMaker's merged JSON Lines (a capture record plus ``groundTruthData`` per line):
  the capture side decoded as above, the label of the same line beside it (``label``).
- ``csv`` / ``json`` / ``parquet``: files read as they are, or, when the folder is a batch transform's
  data-capture destination (``input/`` and ``output/`` manifests), the transform records it names, decoded
  and windowed on their inference time.

Decoded rows are written as Parquet files into a scratch folder that the monitoring jobs then read (their
provenance columns are not features). Positional payloads (CSV bodies: ``f0..`` and ``prediction``) take the
names of the baseline's features in order, the model's outputs first (``output_columns_position`` START, as the
analyzer lines capture up with a training CSV whose first column is the label); without a baseline they are
``_c0..``, Spark's names, as the analyzer's.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from engine.container.config import ContainerConfig
from engine.errors import NoDataError, RejectLimitError, SourceError
from engine.interrupts import check as check_interrupts
from engine.jobs.batch import BatchOptions, iter_batch
from engine.jobs.labels import read_ground_truth
from engine.jobs.realtime import read_capture
from engine.kernels.join import label_values
from engine.kernels.payload import ColumnSpec, decode_payloads, load_column_spec
from engine.monitor.sources import envelope_columns
from engine.options import RealtimeOptions

__all__ = ["Prepared", "prepare_dataset"]

logger = logging.getLogger(__name__)

_INPUT = re.compile(r"f(\d+)")
_OUTPUT = re.compile(r"prediction(?:_(\d+))?")
_MANIFEST_SIDES = ("input", "output")


@dataclass(frozen=True)
class Prepared:
    """A source the monitoring jobs read: a path, its format and whether a CSV has a header; records counted."""

    source: str
    format: str
    header: bool = False
    rows: int = -1
    rejected: int = 0
    windowed: bool = False  # the monitoring job applies [start_time, end_time) on inference_time itself


def _positional_names(names: list[str], position: str) -> list[str] | None:
    """Payload columns in analyzer order (outputs, then inputs for START), if every one is positional."""
    inputs = [n for n in names if _INPUT.fullmatch(n)]
    outputs = [n for n in names if _OUTPUT.fullmatch(n)]
    if not inputs or len(inputs) + len(outputs) != len(names):
        return None
    inputs.sort(key=lambda n: int(n[1:]))
    outputs.sort(key=lambda n: int(m.group(1) or 0) if (m := _OUTPUT.fullmatch(n)) else 0)
    return outputs + inputs if position == "START" else inputs + outputs


def _same(a: pa.Array, b: pa.Array) -> bool:
    """`a` holds `b`'s values (in `b`'s type: the decoder's copy of an integer label is float64)."""
    try:
        return bool(a.cast(b.type).equals(b))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return False


class _Renamer:
    """Drops the derived ``prediction`` copy and names positional columns as the baseline does."""

    def __init__(self, baseline: list[str], position: str, sides: tuple[str, ...]) -> None:
        self.baseline = baseline
        self.position = position
        self.sides = sides
        self.skip = envelope_columns()

    def __call__(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        features = [n for n in batch.schema.names if n not in self.skip]
        if "prediction" in features:
            pred = batch.column("prediction")
            # The decoder adds `prediction` beside a JSON output's own fields: profiled once, not twice.
            duplicate = any(_same(batch.column(n), pred) for n in features if n != "prediction")
            if duplicate or "endpointOutput" not in self.sides or pred.null_count == batch.num_rows:
                batch = batch.drop_columns(["prediction"])
                features.remove("prediction")
        order = _positional_names(features, self.position)
        if order is None:
            return batch
        # Provenance first, then the features in the analyzer's order under the baseline's names.
        kept = [n for n in batch.schema.names if n not in features]
        names = kept + [self.baseline[i] if i < len(self.baseline) else f"_c{i}" for i in range(len(order))]
        return pa.RecordBatch.from_arrays([batch.column(n) for n in kept + order], names=names)


def _only_sides(batch: pa.RecordBatch, sides: tuple[str, ...]) -> pa.RecordBatch:
    """The capture rows with the sides ``captureIndexNames`` leaves out emptied (so they give no columns)."""
    for side, prefix in (("endpointInput", "input"), ("endpointOutput", "output")):
        if side not in sides:
            for suffix in ("data", "encoding", "content_type"):
                name = f"{prefix}_{suffix}"
                i = batch.schema.get_field_index(name)
                batch = batch.set_column(i, name, pa.nulls(batch.num_rows, batch.schema.field(name).type))
    return batch


class _Scratch:
    """Parquet files of prepared batches, one per batch (decoded batches may differ in schema)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.rows = 0
        self.files = 0

    def write(self, batches: Iterable[pa.RecordBatch]) -> None:
        for batch in batches:
            check_interrupts()  # SageMaker stops a job with SIGTERM: between batches is a safe point
            if not batch.num_rows:
                continue
            pq.write_table(pa.Table.from_batches([batch]), self.folder / f"part-{self.files:05d}.parquet")
            self.files += 1
            self.rows += batch.num_rows


class _Rejects:
    def __init__(self) -> None:
        self.count = 0

    def __call__(self, batch: pa.RecordBatch) -> None:
        self.count += batch.num_rows


def _decoded_capture(
    source: str, config: ContainerConfig, rejects: _Rejects, storage: dict[str, object], spec: ColumnSpec | None
) -> Iterator[pa.RecordBatch]:
    options = RealtimeOptions.from_env(start=config.start, end=config.end, storage_options=storage)
    sides = config.dataset_format.capture_index_names
    for rows in read_capture(source, options=options, on_rejects=rejects):
        decoded, failed = decode_payloads(_only_sides(rows, sides), spec)
        rejects.count += sum(len(f) for _, f in failed)
        yield from decoded


def _labels_by_line(source: str, storage: dict[str, object]) -> pl.DataFrame:
    """The ``groundTruthData`` of each merged line: its object, its line, its label values."""
    table = read_ground_truth(source, options=RealtimeOptions.from_env(storage_options=storage)).read_all()
    values = label_values(table.column("label_data"), table.column("label_encoding"))
    frame = pl.from_arrow(table.select(["label_file", "label_line", "label_data", "label_encoding"]))
    assert isinstance(frame, pl.DataFrame)
    return frame.with_columns(values.alias("label_values"))


def _merged(
    source: str, config: ContainerConfig, rejects: _Rejects, storage: dict[str, object], spec: ColumnSpec | None
) -> Iterator[pa.RecordBatch]:
    labels = _labels_by_line(source, storage)
    for batch in _decoded_capture(source, config, rejects, storage, spec):
        frame = pl.from_arrow(batch)
        assert isinstance(frame, pl.DataFrame)
        joined = frame.join(
            labels, left_on=["source_file", "source_line"], right_on=["label_file", "label_line"], how="left"
        )
        index = pl.col("record_index") if "record_index" in joined.columns else pl.lit(0)
        joined = joined.with_columns(pl.col("label_values").list.get(index, null_on_oob=True).alias("label"))
        joined = joined.drop("label_values").filter(pl.col("label").is_not_null())
        out = joined.to_arrow(compat_level=pl.CompatLevel.oldest())
        yield from out.to_batches()


def _has_manifests(root: Path) -> bool:
    return any((root / side).is_dir() and any((root / side).rglob("*.json*")) for side in _MANIFEST_SIDES)


def _has_times(source: str) -> bool:
    root = Path(source)
    if root.is_file():
        files: Iterable[Path] = [root]
    else:  # not the rejects, not a temporary folder: the dataset's own files
        files = (p for p in root.rglob("*.parquet") if not any(x[0] in "_." for x in p.relative_to(root).parts))
    first = next(iter(files), None)
    return first is not None and "inference_time" in pq.read_schema(first).names


def _decoded_batch(
    source: str, config: ContainerConfig, rejects: _Rejects, spec: ColumnSpec | None
) -> Iterator[pa.RecordBatch]:
    options = BatchOptions.from_env(
        start=config.start, end=config.end, decode=True, columns=spec, prefix_map=config.prefix_map
    )
    for batch in iter_batch(source, options=options, on_rejects=rejects):
        drop = [n for n in ("input_encoding", "output_encoding", "joined") if n in batch.schema.names]
        yield batch.drop_columns(drop)


def prepare_dataset(
    config: ContainerConfig, scratch: Path, *, baseline_features: list[str] | None, positional: bool = True
) -> Prepared:
    """What the monitoring job should read for `config`'s dataset (decoded into `scratch` where needed).

    `positional`: name positional payload columns as the baseline's features (data quality); model quality keeps
    the decoder's names (``prediction``, ``prediction_0``...), which its attributes are mapped to.

    Raises:
        SourceError: ``dataset_source`` does not exist or cannot be read.
        NoDataError: capture, merged or batch records exist but none lies in the window.
    """
    fmt = config.dataset_format
    source = config.dataset_source
    if "://" not in source and not Path(source).exists():
        raise SourceError("dataset_source does not exist", uri=source)
    storage: dict[str, object] = {}
    spec = load_column_spec(config.columns) if config.columns else None
    rejects = _Rejects()
    rename = _Renamer(list(baseline_features or []), fmt.output_columns_position, fmt.capture_index_names)
    batches: Iterator[pa.RecordBatch]
    if fmt.kind == "capture":
        batches = _decoded_capture(source, config, rejects, storage, spec)
    elif fmt.kind == "merged":
        batches = _merged(source, config, rejects, storage, spec)
    elif "://" not in source and Path(source).is_dir() and _has_manifests(Path(source)):
        batches = _decoded_batch(source, config, rejects, spec)
    else:
        # Data files as they are; a Parquet dataset with the engine's inference_time (one `realtime --decode` or
        # `merge` wrote) is windowed like capture.
        timed = fmt.kind == "parquet" and (config.start or config.end) is not None and _has_times(source)
        return Prepared(source=source, format=fmt.kind, header=fmt.header, windowed=timed)
    out = _Scratch(scratch / "dataset")
    out.write(rename(b) if positional else b for b in batches)
    if rejects.count:
        logger.warning("%d records of %s could not be decoded and are not in the analysis", rejects.count, source)
        share = rejects.count / (rejects.count + out.rows)
        if share > config.max_reject_ratio:
            raise RejectLimitError(
                f"{rejects.count} of {rejects.count + out.rows} records under {source} could not be decoded "
                f"({share:.1%}, above CAPTURE_ENGINE_MAX_REJECT_RATIO {config.max_reject_ratio:g})"
            )
    if not out.rows:
        window = f" in [{_stamp(config.start)}, {_stamp(config.end)})" if config.start or config.end else ""
        raise NoDataError(f"no records{window} under {source} (dataset_format {fmt.kind})")
    logger.info("%d records of %s decoded for analysis", out.rows, source)
    return Prepared(source=str(out.folder), format="parquet", rows=out.rows, rejected=rejects.count)


def _stamp(t: datetime | None) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ") if t is not None else "..."
