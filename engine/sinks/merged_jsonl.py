"""SageMaker's merged JSON Lines layout: merged rows rendered as the records SageMaker's own merge job writes.

Model Monitor's analyzers (model quality, Clarify bias) read the merge job's intermediate output (formats
reference 2.5)::

    {output}/merge/{endpoint}/{variant}/yyyy/mm/dd/hh/part-*.jsonl          real-time endpoints
    {output}/merge/[{schedule}/]yyyy/mm/dd/hh/part-*.jsonl                  batch transform

one record per matched prediction. `{output}` is ``DEST/_sagemaker``: beside the Parquet dataset's partitions
but under a name starting with ``_``, which every Parquet reader's discovery skips (pyarrow, pandas, Spark), so
that the JSON Lines never break ``ds.dataset(DEST)`` or ``pd.read_parquet(DEST)``.

Records are rendered for a whole batch at once with polars string
expressions (values JSON-escaped by polars' own encoder), never a ``json.dumps`` per row. Absent values are
left out, as SageMaker's Spark writer leaves out nulls. They are written by the engine's one partitioned writer
(`DatasetWriter`) in the `JsonLines` format and the `sagemaker_merged` layout.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from engine.io.storage import Location
from engine.sinks.dataset import DatasetWriter
from engine.sinks.formats import JsonLines
from engine.sinks.layout import sagemaker_merged

# The analyzers' "output" folder within DEST; a leading "_" keeps Parquet readers out of it.
SAGEMAKER_ROOT = "_sagemaker"

__all__ = ["SAGEMAKER_ROOT", "MergedJson", "merged_writer", "render_records", "required_columns"]

Kind = Literal["realtime", "batch"]
_REALTIME_COLUMNS = (
    "event_id",
    "inference_id",
    "inference_time",
    "event_version",
    "input_content_type",
    "input_encoding",
    "input_data",
    "output_content_type",
    "output_encoding",
    "output_data",
    "label_data",
    "label_encoding",
)
_BATCH_COLUMNS = ("inference_id", "output_encoding", "output_data", "label_data", "label_encoding")
# Rendered when the rows have them (a dataset written before the column existed lacks it): null otherwise.
_OPTIONAL_COLUMNS = {"realtime": ("custom_attributes",), "batch": ()}


def required_columns(kind: Kind) -> tuple[str, ...]:
    """The prediction and label columns the records are built from (raw, not decoded, predictions)."""
    return _REALTIME_COLUMNS if kind == "realtime" else _BATCH_COLUMNS


_RENDER_ROWS = 16_384  # rows rendered at once: the JSON text of a slice is a few times its raw bodies
# A member whose value is null: `"key":null` after a comma, first in its object, or alone in it. Inside a JSON
# string every quote is escaped, so `,"` and `{"` only ever start a member: no string content can match.
_NULL_AFTER_COMMA = r',"[A-Za-z]+":null'
_NULL_FIRST = r'\{"[A-Za-z]+":null,'
_NULL_ALONE = r'\{"[A-Za-z]+":null\}'


def _time(name: str) -> pl.Expr:
    # SageMaker writes whole seconds ("2023-01-19T06:04:56Z"); sub-second times keep their milliseconds.
    c = pl.col(name)
    whole = c.dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    return pl.when(c.dt.millisecond() == 0).then(whole).otherwise(c.dt.strftime("%Y-%m-%dT%H:%M:%S%.3fZ"))


def _side(prefix: str, mode: str) -> pl.Expr:
    """endpointInput / endpointOutput, in SageMaker's key order; null when that side was not captured."""
    c = pl.col
    fields = (f"{prefix}_data", f"{prefix}_encoding", f"{prefix}_content_type")
    captured = pl.any_horizontal([c(f).is_not_null() for f in fields])
    side = pl.struct(
        c(fields[0]).alias("data"),
        c(fields[1]).alias("encoding"),
        pl.lit(mode).alias("mode"),
        c(fields[2]).alias("observedContentType"),
    )
    return pl.when(captured).then(side)


def _record(kind: Kind) -> pl.Expr:
    c = pl.col
    truth = pl.struct(c("label_data").alias("data"), c("label_encoding").alias("encoding")).alias("groundTruthData")
    if kind == "realtime":
        return pl.struct(
            pl.coalesce(c("event_version"), pl.lit("0")).alias("eventVersion"),
            truth,
            pl.struct(
                _side("input", "INPUT").alias("endpointInput"), _side("output", "OUTPUT").alias("endpointOutput")
            ).alias("captureData"),
            pl.struct(
                c("event_id").alias("eventId"),
                c("inference_id").alias("inferenceId"),
                _time("inference_time").alias("inferenceTime"),
                # SageMaker's inference_record carries it in eventMetadata; left out when null, like the rest.
                c("custom_attributes").alias("customAttributes"),
            ).alias("eventMetadata"),
        )
    # SageMaker's batch records: eventId is the SageMakerInferenceId; data is the output record as the transform
    # wrote it, without the appended ID and time.
    output = pl.struct(c("output_data").alias("data"), c("output_encoding").alias("encoding"))
    return pl.struct(
        pl.struct(c("inference_id").alias("eventId")).alias("eventMetadata"),
        pl.lit("0").alias("eventVersion"),
        truth,
        pl.struct(output.alias("batchTransformOutput")).alias("captureData"),
    )


def render_records(batch: pa.RecordBatch, kind: Kind) -> pa.Array:
    """One SageMaker merged record per row of `batch` (matched merged rows), each ending in a newline.

    Each record is one struct encoded by polars (key order = field order), then its null members are cut
    out, as SageMaker's Spark writer leaves nulls out. Slices of `_RENDER_ROWS` bound the memory it takes.
    """
    names = required_columns(kind)
    record = _record(kind).struct.json_encode().str.replace_all(_NULL_AFTER_COMMA, "").str.replace_all(
        _NULL_FIRST, "{"
    ).str.replace_all(_NULL_ALONE, "{}") + pl.lit("\n")
    parts = []
    for start in range(0, batch.num_rows, _RENDER_ROWS):
        rows = batch.slice(start, _RENDER_ROWS)
        columns = {n: rows.column(n) for n in names}
        for n in _OPTIONAL_COLUMNS[kind]:
            columns[n] = rows.column(n) if n in rows.schema.names else pa.nulls(rows.num_rows, pa.string())
        frame = pl.from_arrow(pa.table(columns))
        assert isinstance(frame, pl.DataFrame)
        lines = frame.select(record.alias("line")).get_column("line")
        parts.append(lines.to_arrow(compat_level=pl.CompatLevel.oldest()).cast(pa.string()))
    return pa.concat_arrays(parts) if parts else pa.array([], pa.string())


def merged_writer(
    loc: Location,
    *,
    run_id: str,
    kind: Kind,
    schedule_name: str | None = None,
    buffer_bytes: int = 16 * 2**20,
) -> DatasetWriter:
    """The writer of rendered records: ``part-<run>-<n>.jsonl`` files per hour folder under ``_temporary/<run>/``.

    Each flush writes a whole new part file (object stores cannot append), at `buffer_bytes` of text per
    folder, the largest folder first when all buffers exceed twice that; written in the caller's thread.
    Committed with the run (`JobRun.track`), which replaces the folders it wrote.
    """
    return DatasetWriter(
        loc,
        spec=None,
        time_column="inference_time",
        run_id=run_id,
        prefix=SAGEMAKER_ROOT,
        row_group_bytes=buffer_bytes,
        write_threads=0,
        file_format=JsonLines("line"),
        layout=sagemaker_merged(kind, schedule_name),
    )


@dataclass(frozen=True)
class MergedJson:
    """A merge's SageMaker records: rendered on the join's threads (`render`), written by `writer` in one."""

    kind: Kind
    writer: DatasetWriter

    def render(self, merged: pa.RecordBatch) -> pa.RecordBatch | None:
        """The records of the matched rows of `merged` with their partition columns (unmatched rows have no
        label); thread-safe."""
        matched = pc.is_valid(merged.column("label_file"))
        if not pc.any(matched).as_py():
            return None
        if not pc.all(matched).as_py():
            merged = merged.filter(matched)
        cols = {"inference_time": merged.column("inference_time"), "line": render_records(merged, self.kind)}
        if self.kind == "realtime":
            cols = {"endpoint": merged.column("endpoint"), "variant": merged.column("variant"), **cols}
        return pa.RecordBatch.from_pydict(cols)

    def write(self, rendered: pa.RecordBatch | None) -> None:
        """Buffer records `render` made, by hour folder; full buffers become part files."""
        if rendered is not None:
            self.writer.write(rendered)
