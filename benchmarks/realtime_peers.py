"""The same job as ``capture-engine realtime SRC DEST`` written the way users write it with other tools.

Run one tool per process, so its time and peak memory are its own::

    python -m benchmarks.realtime_peers {duckdb,polars,pandas,engine} SRC DEST [--files-from LIST]

Every peer writes the engine's output contract: hive folders
``endpoint=<e>/variant=<v>/year=YYYY/month=MM/day=DD/hour=HH`` (zero-padded, UTC hour of inference_time) holding
Parquet files (zstd) with the columns of ``schemas/tables.json`` "capture" minus the partition keys. Like the
engine, a record without an eventId or a parseable inferenceTime is dropped (the engine moves it to ``_rejects``;
the peers write no rejects table).

Known limits of the peers, none of which the synth benchmark data exercises: DuckDB and polars skip blank lines
without counting them, so ``source_line`` would shift after a blank line (the engine counts them), and a line
that is not valid JSON stops them (the engine rejects that line and goes on).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final

__all__ = ["NATURAL", "PARTITION_KEYS", "TOOLS", "main"]

PARTITION_KEYS: Final = ("endpoint", "variant", "year", "month", "day", "hour")
# SageMaker's key layout below the capture root: {endpoint}/{variant}/yyyy/mm/dd/hh/{object}.jsonl
_GLOB: Final = "*/*/*/*/*/*/*.jsonl"
_KEY_REGEX: Final = r"([^/]+)/([^/]+)/\d{4}/\d{2}/\d{2}/\d{2}/[^/]+$"
# The engine's --max-line-bytes default: DuckDB's own default (16 MB) would fail on the largest legal bodies.
_MAX_OBJECT_BYTES: Final = 32 * 2**20


def _files(src: str, files_from: str | None) -> list[str] | None:
    """Explicit input files (absolute, in the given order), or None to read every object under ``src``."""
    if files_from is None:
        return None
    return [os.path.abspath(line) for line in Path(files_from).read_text().splitlines() if line.strip()]


def _source_glob(src: str) -> str:
    # Absolute, because source_file must be the full file:// URI the engine writes.
    return f"{os.path.abspath(src).rstrip('/')}/{_GLOB}"


# --- DuckDB -------------------------------------------------------------------------------------------------

_PAYLOAD_SQL: Final = "STRUCT(observedContentType VARCHAR, mode VARCHAR, data VARCHAR, encoding VARCHAR)"
_COLUMNS_SQL: Final = (
    "{"
    f"'captureData': 'STRUCT(endpointInput {_PAYLOAD_SQL}, endpointOutput {_PAYLOAD_SQL})', "
    "'eventMetadata': 'STRUCT(eventId VARCHAR, inferenceId VARCHAR, inferenceTime VARCHAR, "
    "customAttributes VARCHAR)', "
    "'eventVersion': 'VARCHAR'"
    "}"
)


def _sql_string(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def duckdb_query(source: str, *, source_line: bool = True) -> str:
    """The SELECT producing the capture table (partition keys included) from ``source``, a SQL glob or list.

    source_line: read_json has no row-number column (file_row_number is Parquet-only), and
    ``row_number() OVER (PARTITION BY filename)`` numbers rows in an arbitrary order (229 of 35,349 lines
    wrong on the 20 MB tree). With preserve_insertion_order (the default) the scan emits files in list order and each
    file's lines in order, so a streaming ``row_number() OVER ()`` is a global line index and the line within a
    file is that index minus the file's first index plus one. The per-file MIN is a partitioned window, so
    DuckDB materialises (and may spill) the whole table before writing: that is the cost of this column.
    ``source_line=False`` writes it as NULL instead, only to measure that cost.
    """
    line = "rn - min(rn) OVER (PARTITION BY filename) + 1" if source_line else "NULL::BIGINT"
    return f"""
WITH raw AS (
    SELECT *{", row_number() OVER () AS rn" if source_line else ""}
    FROM read_json({source}, format = 'newline_delimited', columns = {_COLUMNS_SQL}, filename = true,
                   maximum_object_size = {_MAX_OBJECT_BYTES})
), capture AS (
    SELECT
        regexp_extract(filename, '{_KEY_REGEX}', 1) AS endpoint,
        regexp_extract(filename, '{_KEY_REGEX}', 2) AS variant,
        eventMetadata.eventId AS event_id,
        eventMetadata.inferenceId AS inference_id,
        -- The cast takes 'Z' with or without fractional seconds; the contract keeps microseconds.
        try_cast(eventMetadata.inferenceTime AS TIMESTAMPTZ) AS inference_time,
        eventVersion AS event_version,
        captureData.endpointInput.observedContentType AS input_content_type,
        captureData.endpointInput.encoding AS input_encoding,
        captureData.endpointInput.data AS input_data,
        captureData.endpointOutput.observedContentType AS output_content_type,
        captureData.endpointOutput.encoding AS output_encoding,
        captureData.endpointOutput.data AS output_data,
        eventMetadata.customAttributes AS custom_attributes,
        'file://' || filename AS source_file,
        {line} AS source_line
    FROM raw
)
SELECT
    *,
    -- Strings, so the folder names are zero-padded like the engine's (an integer hour would give hour=1).
    strftime(inference_time, '%Y') AS year,
    strftime(inference_time, '%m') AS month,
    strftime(inference_time, '%d') AS day,
    strftime(inference_time, '%H') AS hour
FROM capture
WHERE event_id IS NOT NULL AND event_id <> '' AND inference_time IS NOT NULL
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
            f"COPY ({duckdb_query(source, source_line=source_line)}) TO {_sql_string(dest)} "
            f"(FORMAT parquet, PARTITION_BY ({', '.join(PARTITION_KEYS)}), COMPRESSION zstd)"
        )
        con.close()
    finally:
        shutil.rmtree(spill, ignore_errors=True)


# --- polars -------------------------------------------------------------------------------------------------


def polars_frame(source: str | list[str], *, source_line: bool = True) -> Any:
    """The lazy capture table (partition keys included) of ``source``, a glob or a list of files.

    ``source_line=False`` writes that column as null, only to measure what the per-file window costs.
    """
    import polars as pl

    payload = pl.Struct({"observedContentType": pl.String, "mode": pl.String, "data": pl.String, "encoding": pl.String})
    schema: dict[str, pl.DataType] = {
        "captureData": pl.Struct({"endpointInput": payload, "endpointOutput": payload}),
        "eventMetadata": pl.Struct(
            {
                "eventId": pl.String,
                "inferenceId": pl.String,
                "inferenceTime": pl.String,
                "customAttributes": pl.String,
            }
        ),
        "eventVersion": pl.String(),
    }
    lf = pl.scan_ndjson(source, schema=schema, include_file_paths="path", row_index_name="rn" if source_line else None)
    meta = pl.col("eventMetadata").struct
    inp = pl.col("captureData").struct.field("endpointInput").struct
    out = pl.col("captureData").struct.field("endpointOutput").struct
    key = pl.col("path").str.extract_groups(_KEY_REGEX).struct
    # %.f also matches no fraction at all, so one format takes "...:05Z" and "...:05.123Z".
    time = meta.field("inferenceTime").str.strptime(pl.Datetime("us", "UTC"), "%Y-%m-%dT%H:%M:%S%.fZ", strict=False)
    frame = lf.select(
        key.field("1").alias("endpoint"),
        key.field("2").alias("variant"),
        meta.field("eventId").alias("event_id"),
        meta.field("inferenceId").alias("inference_id"),
        time.alias("inference_time"),
        pl.col("eventVersion").alias("event_version"),
        inp.field("observedContentType").alias("input_content_type"),
        inp.field("encoding").alias("input_encoding"),
        inp.field("data").alias("input_data"),
        out.field("observedContentType").alias("output_content_type"),
        out.field("encoding").alias("output_encoding"),
        out.field("data").alias("output_data"),
        meta.field("customAttributes").alias("custom_attributes"),
        ("file://" + pl.col("path")).alias("source_file"),
        # The row index runs over all files in order; a file's lines start at its first index.
        (
            (pl.col("rn") - pl.col("rn").min().over("path") + 1).cast(pl.Int64)
            if source_line
            else pl.lit(None, pl.Int64)
        ).alias("source_line"),
    )
    return frame.filter(
        pl.col("event_id").is_not_null() & (pl.col("event_id") != "") & pl.col("inference_time").is_not_null()
    ).with_columns(
        pl.col("inference_time").dt.strftime("%Y").alias("year"),
        pl.col("inference_time").dt.strftime("%m").alias("month"),
        pl.col("inference_time").dt.strftime("%d").alias("day"),
        pl.col("inference_time").dt.strftime("%H").alias("hour"),
    )


def run_polars(src: str, dest: str, files: list[str] | None, *, source_line: bool = True) -> None:
    import polars as pl

    frame = polars_frame(_source_glob(src) if files is None else files, source_line=source_line)
    # PartitionBy names folders key=value (hive style) and, with include_key=False, keeps keys out of the files.
    frame.sink_parquet(
        pl.PartitionBy(dest, key=list(PARTITION_KEYS), include_key=False), compression="zstd", mkdir=True
    )


# --- pandas -------------------------------------------------------------------------------------------------


def run_pandas(src: str, dest: str, files: list[str] | None) -> None:
    """The script most users write first: json.loads per line, a list of dicts, one DataFrame, to_parquet."""
    import glob
    import json
    import re

    import pandas as pd

    paths = sorted(glob.glob(_source_glob(src))) if files is None else files
    key = re.compile(_KEY_REGEX)
    rows: list[dict[str, Any]] = []
    for path in paths:
        m = key.search(path)
        endpoint, variant = (m.group(1), m.group(2)) if m else (None, None)
        with open(path, encoding="utf-8") as f:
            for line_no, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                rec = json.loads(line)
                meta = rec.get("eventMetadata") or {}
                cap = rec.get("captureData") or {}
                inp = cap.get("endpointInput") or {}
                out = cap.get("endpointOutput") or {}
                rows.append(
                    {
                        "endpoint": endpoint,
                        "variant": variant,
                        "event_id": meta.get("eventId"),
                        "inference_id": meta.get("inferenceId"),
                        "inference_time": meta.get("inferenceTime"),
                        "event_version": rec.get("eventVersion"),
                        "input_content_type": inp.get("observedContentType"),
                        "input_encoding": inp.get("encoding"),
                        "input_data": inp.get("data"),
                        "output_content_type": out.get("observedContentType"),
                        "output_encoding": out.get("encoding"),
                        "output_data": out.get("data"),
                        "custom_attributes": meta.get("customAttributes"),
                        "source_file": "file://" + path,
                        "source_line": line_no,
                    }
                )
    df = pd.DataFrame(rows)
    del rows
    times = pd.to_datetime(df["inference_time"], utc=True, format="ISO8601", errors="coerce")
    df["inference_time"] = times.dt.as_unit("us")
    df = df[df["event_id"].notna() & (df["event_id"] != "") & df["inference_time"].notna()]
    df = df.assign(
        source_line=df["source_line"].astype("int64"),
        year=df["inference_time"].dt.strftime("%Y"),
        month=df["inference_time"].dt.strftime("%m"),
        day=df["inference_time"].dt.strftime("%d"),
        hour=df["inference_time"].dt.strftime("%H"),
    )
    df.to_parquet(dest, engine="pyarrow", compression="zstd", index=False, partition_cols=list(PARTITION_KEYS))


# --- the engine ---------------------------------------------------------------------------------------------


def run_engine_cli(src: str, dest: str, files: list[str] | None, *flags: str) -> None:
    """The engine's own command line in this process (the runner already gives every tool its own process)."""
    if files is not None:
        raise SystemExit("engine: --files-from is not supported; give the capture root (or a folder of it)")
    from engine.cli import main as engine_main

    code = engine_main(["realtime", src, dest, "--quiet", *flags])
    if code:
        raise SystemExit(code)


def run_engine(src: str, dest: str, files: list[str] | None) -> None:
    run_engine_cli(src, dest, files)


def run_duckdb_natural(src: str, dest: str, files: list[str] | None) -> None:
    """The query a user choosing DuckDB writes: the same columns, but no line numbers (source_line NULL)."""
    run_duckdb(src, dest, files, source_line=False)


def run_polars_natural(src: str, dest: str, files: list[str] | None) -> None:
    """The same for polars: no row index and no per-file window."""
    run_polars(src, dest, files, source_line=False)


TOOLS: Final[dict[str, Callable[[str, str, list[str] | None], None]]] = {
    "duckdb": run_duckdb,
    "duckdb-natural": run_duckdb_natural,
    "polars": run_polars,
    "polars-natural": run_polars_natural,
    "pandas": run_pandas,
    "engine": run_engine,
}
# Tools whose output has no source_line: checked on every other column.
NATURAL: Final = frozenset({"duckdb-natural", "polars-natural"})


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.realtime_peers",
        description="Decode SageMaker capture JSONL under SRC into hive-partitioned Parquet under DEST.",
    )
    parser.add_argument("tool", choices=sorted(TOOLS))
    parser.add_argument("src", help="capture root: {endpoint}/{variant}/yyyy/mm/dd/hh/*.jsonl below it")
    parser.add_argument("dest", help="output dataset root (created)")
    parser.add_argument("--files-from", help="read only the capture files listed in this file, one per line")
    parser.add_argument(
        "--no-source-line",
        action="store_true",
        help="duckdb, polars: write source_line as NULL, to measure what numbering lines per file costs "
        "(the output then fails the benchmark's check)",
    )
    args = parser.parse_args(argv)
    dest = os.path.abspath(args.dest)
    files = _files(args.src, args.files_from)
    if args.no_source_line:
        if args.tool not in ("duckdb", "polars"):
            parser.error("--no-source-line applies to duckdb and polars only")
        (run_duckdb if args.tool == "duckdb" else run_polars)(args.src, dest, files, source_line=False)
    else:
        TOOLS[args.tool](args.src, dest, files)
    return 0


if __name__ == "__main__":
    sys.exit(main())
