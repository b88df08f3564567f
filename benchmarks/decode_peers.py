"""The same job as ``capture-engine realtime SRC DEST --decode`` on CSV payloads, the way users write it elsewhere.

Run one tool per process, so its time and peak memory are its own::

    python -m benchmarks.decode_peers {duckdb,duckdb-natural,polars,polars-natural,engine} SRC DEST [--files-from LIST]

Every peer writes the engine's ``--decode`` output for CSV bodies (capture encoding ``CSV``): one row per payload
record, in hive folders ``endpoint=<e>/variant=<v>/year=YYYY/month=MM/day=DD/hour=HH`` (zero-padded, UTC hour of
inference_time), Parquet (zstd) files with the envelope columns of ``schemas/tables.json`` "capture" without the
raw bodies (event_id ... source_line), then ``record_index`` (int64, 0-based within the event), ``f0..f68``
(float64, the input CSV fields by position) and ``prediction`` (float64, the output CSV value of that record).

A body holds one record per ``\\n``-separated line; trailing newlines are not records (the body is right-trimmed
of ``\\n`` before splitting, which drops the empty trailing piece). Input and output records are paired by
position. source_line is numbered exactly as in :mod:`benchmarks.realtime_peers` (see ``duckdb_query`` there).

Known limits of the peers, none of which the CSV synth benchmark data exercises: they assume every body is plain
CSV with exactly 69 input fields and one output value per record, and a body that breaks that (a value that is
not a number, another field count, input and output record counts that differ, BASE64 or JSON bodies) stops
them or gives nulls, where the engine rejects that one event to ``_rejects`` and goes on. ``\\r\\n`` line ends
are not handled (the engine accepts them). The blank-line and invalid-JSON limits of the envelope peers apply.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Sequence
from typing import Any, Final

from benchmarks.realtime_peers import (
    _COLUMNS_SQL,
    _KEY_REGEX,
    _MAX_OBJECT_BYTES,
    PARTITION_KEYS,
    _files,
    _source_glob,
    _sql_string,
    run_engine_cli,
)
from engine.kernels.payload import ENVELOPE

__all__ = ["FEATURES", "TOOLS", "decoded_columns", "duckdb_decode_query", "main"]

FEATURES: Final = 69  # the synth CSV input width (SageMaker's XGBoost churn example)
# The engine's envelope columns of the decoded table (from schemas/tables.json), less the hive keys.
_ENVELOPE: Final = tuple(c for c in ENVELOPE if c not in ("endpoint", "variant"))


def decoded_columns(features: int = FEATURES) -> list[str]:
    """The file columns of the decoded table, in order (partition keys excluded)."""
    return [*_ENVELOPE, "record_index", *(f"f{i}" for i in range(features)), "prediction"]


# --- DuckDB -------------------------------------------------------------------------------------------------


def duckdb_decode_query(source: str, features: int = FEATURES, *, source_line: bool = True) -> str:
    """The SELECT producing the decoded table (partition keys included) from ``source``, a SQL glob or list.

    Envelope as in ``realtime_peers.duckdb_query``; then each body is split into its records with
    ``string_split`` and the input and output lists are unnested side by side (DuckDB zips several unnests in one
    SELECT by position), with ``range(len(...))`` unnested alongside as the 0-based record_index. Each input
    record is split on ',' once, the list is cast to DOUBLE[] in one go (as fast as or faster than 69 casts of
    ``f[i]`` on the 1 GB tree, same values) and its fields are taken by position. ``source_line=False`` is the
    query a user writes: no line numbers, so no window over the scan (the column is NULL).
    """
    nl = "chr(10)"
    line = "rn - min(rn) OVER (PARTITION BY filename) + 1" if source_line else "NULL::BIGINT"
    fields = ",\n    ".join(f"f[{i + 1}] AS f{i}" for i in range(features))
    return f"""
WITH raw AS (
    SELECT *{", row_number() OVER () AS rn" if source_line else ""}
    FROM read_json({source}, format = 'newline_delimited', columns = {_COLUMNS_SQL}, filename = true,
                   maximum_object_size = {_MAX_OBJECT_BYTES})
), events AS (
    SELECT
        regexp_extract(filename, '{_KEY_REGEX}', 1) AS endpoint,
        regexp_extract(filename, '{_KEY_REGEX}', 2) AS variant,
        eventMetadata.eventId AS event_id,
        eventMetadata.inferenceId AS inference_id,
        try_cast(eventMetadata.inferenceTime AS TIMESTAMPTZ) AS inference_time,
        eventVersion AS event_version,
        captureData.endpointInput.observedContentType AS input_content_type,
        captureData.endpointInput.encoding AS input_encoding,
        captureData.endpointOutput.observedContentType AS output_content_type,
        captureData.endpointOutput.encoding AS output_encoding,
        eventMetadata.customAttributes AS custom_attributes,
        'file://' || filename AS source_file,
        {line} AS source_line,
        -- A trailing newline ends the last record and is not one: trim it, so no empty trailing piece.
        string_split(rtrim(captureData.endpointInput.data, {nl}), {nl}) AS input_rows,
        string_split(rtrim(captureData.endpointOutput.data, {nl}), {nl}) AS output_rows
    FROM raw
), records AS (
    SELECT
        * EXCLUDE (input_rows, output_rows),
        unnest(range(len(input_rows))) AS record_index,
        unnest(input_rows) AS input_row,
        unnest(output_rows) AS output_row
    FROM events
    WHERE event_id IS NOT NULL AND event_id <> '' AND inference_time IS NOT NULL
), split AS (
    SELECT * EXCLUDE (input_row), CAST(string_split(input_row, ',') AS DOUBLE[]) AS f FROM records
)
SELECT
    {", ".join(_ENVELOPE)},
    record_index,
    {fields},
    CAST(output_row AS DOUBLE) AS prediction,
    strftime(inference_time, '%Y') AS year,
    strftime(inference_time, '%m') AS month,
    strftime(inference_time, '%d') AS day,
    strftime(inference_time, '%H') AS hour,
    endpoint,
    variant
FROM split
"""


def run_duckdb(src: str, dest: str, files: list[str] | None, *, source_line: bool = True) -> None:
    import duckdb

    source = _sql_string(_source_glob(src)) if files is None else "[" + ", ".join(map(_sql_string, files)) + "]"
    # An in-memory database spills to ./.tmp by default: keep spill files out of the working tree.
    spill = tempfile.mkdtemp(prefix="duckdb-spill-")
    try:
        con = duckdb.connect()
        # strftime and the TIMESTAMPTZ cast of zone-less text follow the session time zone: hours are UTC hours.
        con.execute("SET TimeZone = 'UTC'")
        con.execute(f"SET temp_directory = {_sql_string(spill)}")
        con.execute(
            f"COPY ({duckdb_decode_query(source, source_line=source_line)}) TO {_sql_string(dest)} "
            f"(FORMAT parquet, PARTITION_BY ({', '.join(PARTITION_KEYS)}), COMPRESSION zstd)"
        )
        con.close()
    finally:
        shutil.rmtree(spill, ignore_errors=True)


# --- polars -------------------------------------------------------------------------------------------------


def polars_decode_frame(source: str | list[str], features: int = FEATURES, *, source_line: bool = True) -> Any:
    """The lazy decoded table (partition keys included) of ``source``, a glob or a list of files.

    The envelope is ``realtime_peers.polars_frame``; bodies are split with ``str.split`` and the input rows,
    output rows and an ``int_ranges`` record index are exploded together (same lengths, or polars raises). Each
    input record is split on ',' once and the list is cast to Float64 in one go, then its fields are taken by
    position: on the 1 GB tree that is 10.8 s against 15.4 s for ``str.split_exact(...).struct.field(i)`` with a
    cast per field (the documented way to split into columns), same values. ``source_line=False``: no row index
    and no per-file window, as a user writes it.
    """
    import polars as pl

    from benchmarks.realtime_peers import polars_frame

    frame = polars_frame(source, source_line=source_line).with_columns(
        pl.col("input_data").str.strip_chars_end("\n").str.split("\n"),
        pl.col("output_data").str.strip_chars_end("\n").str.split("\n"),
    )
    frame = frame.with_columns(
        pl.int_ranges(0, pl.col("input_data").list.len(), dtype=pl.Int64).alias("record_index")
    ).explode(["record_index", "input_data", "output_data"])
    fields = pl.col("input_data").str.split(",").cast(pl.List(pl.Float64))
    return frame.with_columns(fields).select(
        *_ENVELOPE,
        "record_index",
        *(pl.col("input_data").list.get(i, null_on_oob=True).alias(f"f{i}") for i in range(features)),
        pl.col("output_data").cast(pl.Float64).alias("prediction"),
        *PARTITION_KEYS,
    )


def run_polars(src: str, dest: str, files: list[str] | None, *, source_line: bool = True) -> None:
    import polars as pl

    frame = polars_decode_frame(_source_glob(src) if files is None else files, source_line=source_line)
    frame.sink_parquet(
        pl.PartitionBy(dest, key=list(PARTITION_KEYS), include_key=False), compression="zstd", mkdir=True
    )


def run_duckdb_natural(src: str, dest: str, files: list[str] | None) -> None:
    """The decode query a user choosing DuckDB writes: ``string_split``/``unnest``/casts, no line numbers."""
    run_duckdb(src, dest, files, source_line=False)


def run_polars_natural(src: str, dest: str, files: list[str] | None) -> None:
    """The same for polars: no row index and no per-file window."""
    run_polars(src, dest, files, source_line=False)


# --- the engine ---------------------------------------------------------------------------------------------


def run_engine(src: str, dest: str, files: list[str] | None) -> None:
    run_engine_cli(src, dest, files, "--decode")


TOOLS: Final[dict[str, Callable[[str, str, list[str] | None], None]]] = {
    "duckdb": run_duckdb,
    "duckdb-natural": run_duckdb_natural,
    "polars": run_polars,
    "polars-natural": run_polars_natural,
    "engine": run_engine,
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.decode_peers",
        description="Decode the CSV payloads of SageMaker capture JSONL under SRC into hive-partitioned Parquet.",
    )
    parser.add_argument("tool", choices=sorted(TOOLS))
    parser.add_argument("src", help="capture root: {endpoint}/{variant}/yyyy/mm/dd/hh/*.jsonl below it")
    parser.add_argument("dest", help="output dataset root (created)")
    parser.add_argument("--files-from", help="read only the capture files listed in this file, one per line")
    args = parser.parse_args(argv)
    TOOLS[args.tool](args.src, os.path.abspath(args.dest), _files(args.src, args.files_from))
    return 0


if __name__ == "__main__":
    sys.exit(main())
