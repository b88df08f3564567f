"""The same job as ``capture-engine batch SRC DEST`` on CSV batch transform output, the way users write it elsewhere.

Run one tool per process, so its time and peak memory are its own::

    python -m benchmarks.batch_peers {duckdb,polars,pandas} SRC DEST [--files-from LIST]

SRC is a batch data-capture destination: JSON manifests ``[{"prefix": ...}, "rel/key", ...]`` under
``SRC/input/yyyy/mm/dd/hh/`` and ``SRC/output/yyyy/mm/dd/hh/``, each entry resolving to ``prefix + rel``. The
output manifests list the transform's ``.out`` files; ``<name>.out`` answers the input ``<name>`` of the input
manifest of the same hour folder, line k of the output answering line k of the input. Every peer, per output line:

- splits the last two comma-separated fields off: ``inference_id`` (trimmed) and ``inference_time`` (trimmed,
  parsed with ``%Y-%m-%dT%H:%M:%SZ`` as UTC); ``output_data`` is the rest of the line;
- takes the input line with the same line number as ``input_data`` (gzip inputs, named ``*.gz``, decompressed);
- writes hive folders ``year=YYYY/month=MM/day=DD/hour=HH`` (zero-padded UTC hour of inference_time) of Parquet
  (zstd) with the columns ``output_file``, ``input_file`` (full ``file://`` URIs, as the manifests give them),
  ``line`` (1-based line in the ``.out``), ``inference_id``, ``inference_time``, ``input_data``, ``output_data``:
  the engine's table "batch" (``schemas/tables.json``) less its provenance and encoding columns
  (manifest_file, record_index, input_encoding, output_encoding, joined).

Like the engine, an output line without an ID or a parseable time is dropped (the engine moves it to
``_rejects``; the peers write no rejects table), and a listed ``.out`` that does not exist gives no rows.

``duckdb-natural`` and ``polars-natural`` are the query a user who wants the predictions writes: the ``.out``
files only, without line numbers and hence without pairing the inputs (columns ``output_file``,
``inference_id``, ``inference_time``, ``output_data``); the benchmark checks them on those columns.

Known limits of the peers, none of which the CSV synth benchmark data exercises: only local files
(``file://`` URIs or plain paths; the engine also reads S3 and maps prefixes); CSV output only (JSON Lines output
keeps its IDs inside the JSON); no inputs without an output manifest entry, and no two input manifests of one hour
naming the same file (they stop the peer); gzip is recognised by the ``.gz`` name, not the magic bytes; DuckDB and
polars skip blank lines without counting them, so ``line`` would shift after one (the engine counts and rejects
them); pandas' ``splitlines`` also splits on ``\\r``, ``\\x0b``, ``\\x1c``..``\\x1e``, ``\\x85``, ``\\u2028`` (the
engine only on ``\\n``, dropping a ``\\r`` before it).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final, NamedTuple

__all__ = [
    "COLUMNS",
    "NATURAL",
    "NATURAL_COLUMNS",
    "PARTITION_KEYS",
    "TOOLS",
    "TransformFile",
    "main",
    "transform_files",
]

PARTITION_KEYS: Final = ("year", "month", "day", "hour")
COLUMNS: Final = ("output_file", "input_file", "line", "inference_id", "inference_time", "input_data", "output_data")
TIME_FORMAT: Final = "%Y-%m-%dT%H:%M:%SZ"  # SageMakerInferenceTime as GenerateInferenceId writes it
# The last two comma-separated fields (the leftmost match of a pattern anchored at the end). Capturing the head too,
# ``^(.*),([^,]*),([^,]*)$``, is 7x slower in DuckDB (9.9 s against 1.4 s over the 1 GB tree's outputs), so the
# head is what the two fields leave.
_TAIL_REGEX: Final = r",([^,]*),([^,]*)$"
_MANIFEST_GLOB: Final = "*/*/*/*/*.json"  # {side}/yyyy/mm/dd/hh/{uuid}.json
_OUT: Final = ".out"


class TransformFile(NamedTuple):
    """One ``.out`` file and the input file it answers (None: not listed by an input manifest, or missing)."""

    output_file: str  # full URI, as written to the output_file column
    output_path: str  # local path
    input_file: str | None
    input_path: str | None


def _local(uri: str) -> tuple[str, str]:
    """(full ``file://`` URI, local path) of a manifest entry."""
    if uri.startswith("file://"):
        return uri, uri[len("file://") :]
    if "://" in uri:
        raise SystemExit(f"{uri}: the peers read local files only (file:// URIs or plain paths)")
    path = os.path.abspath(uri)
    return "file://" + path, path


def _manifests(src: str, side: str) -> list[tuple[str, list[str]]]:
    """(hour folder, entry URIs) of every manifest of one side, in path order."""
    root = os.path.join(os.path.abspath(src), side)
    found = []
    for path in sorted(glob.glob(os.path.join(root, _MANIFEST_GLOB))):
        doc = json.loads(Path(path).read_text())
        prefix = doc[0]["prefix"]
        found.append((os.path.dirname(os.path.relpath(path, root)), [prefix + rel for rel in doc[1:]]))
    return found


def transform_files(src: str, only: Sequence[str] | None = None) -> list[TransformFile]:
    """The ``.out`` files the output manifests under ``src`` list (that exist), each with its input file.

    ``only``: keep just these output files (URIs or paths), in manifest order.
    """
    inputs: dict[str, dict[str, str]] = {}  # hour folder -> input name -> URI
    for hour, uris in _manifests(src, "input"):
        names = inputs.setdefault(hour, {})
        for uri in uris:
            name = uri.rstrip("/").rsplit("/", 1)[-1]
            if name in names:
                raise SystemExit(f"two input manifests of hour {hour} name {name}: cannot pair their outputs")
            names[name] = uri
    keep = None if only is None else {_local(u)[0] for u in only}
    files = []
    for hour, uris in _manifests(src, "output"):
        for uri in uris:
            output_file, output_path = _local(uri)
            if (keep is not None and output_file not in keep) or not os.path.isfile(output_path):
                continue  # a failed input file has no .out: nothing was predicted, so there are no rows
            name = output_file.rsplit("/", 1)[-1]
            in_uri = inputs.get(hour, {}).get(name[: -len(_OUT)] if name.endswith(_OUT) else name)
            in_file, in_path = _local(in_uri) if in_uri is not None else (None, None)
            if in_path is not None and not os.path.isfile(in_path):
                in_path = None  # the URI is still provenance; its lines are null
            files.append(TransformFile(output_file, output_path, in_file, in_path))
    return files


def _sql_string(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


# --- DuckDB -------------------------------------------------------------------------------------------------


def duckdb_query(outputs: Sequence[str], inputs: Sequence[str]) -> str:
    """The SELECT producing the batch rows (partition keys included); ``pairs`` maps output paths to inputs.

    Files are read as one VARCHAR column (a delimiter that never occurs, no quotes or escapes), gzip by
    extension. read_csv has no per-file row number (``file_row_number`` is Parquet-only) and
    ``row_number() OVER (PARTITION BY filename)`` numbers rows in no guaranteed order; but DuckDB keeps the
    original row order through a single-table FROM, CTEs and windows with an empty ``OVER ()`` (documented in
    "Order Preservation", with ``preserve_insertion_order`` on, the default): the scan gives the files in list
    order and each file's lines in order, so ``row_number() OVER ()`` is a global line index and a file's line
    is that index minus the file's first index plus one. The per-file MIN is a partitioned window, so DuckDB
    materialises (and may spill) both sides before joining them on (file pair, line).
    """

    def lines(files: Sequence[str]) -> str:
        if not files:
            return "SELECT NULL::VARCHAR AS filename, NULL::VARCHAR AS text, NULL::BIGINT AS line WHERE false"
        listed = "[" + ", ".join(map(_sql_string, files)) + "]"
        return f"""
        SELECT filename, text, rn - min(rn) OVER (PARTITION BY filename) + 1 AS line
        FROM (
            SELECT filename, text, row_number() OVER () AS rn
            FROM read_csv({listed}, columns = {{'text': 'VARCHAR'}}, delim = chr(1), header = false, quote = '',
                          escape = '', filename = true, auto_detect = false)
        )"""

    return f"""
WITH out_lines AS ({lines(outputs)}
), in_lines AS ({lines(inputs)}
), parsed AS (
    SELECT
        p.output_file,
        p.input_file,
        o.line,
        o.text,
        regexp_extract(o.text, '{_TAIL_REGEX}', ['id', 'time']) AS f,
        i.text AS input_data
    FROM out_lines o
    JOIN pairs p ON p.output_path = o.filename
    LEFT JOIN in_lines i ON i.filename = p.input_path AND i.line = o.line
), batch AS (
    SELECT
        output_file,
        input_file,
        line,
        trim(f.id) AS inference_id,
        -- strptime gives a naive TIMESTAMP; with the session in UTC the cast makes it that UTC instant.
        try_strptime(trim(f.time), '{TIME_FORMAT}')::TIMESTAMPTZ AS inference_time,
        input_data,
        -- The rest of the line: what the ID and time fields and their two commas leave (lengths in characters).
        left(text, length(text) - length(f.id) - length(f.time) - 2) AS output_data
    FROM parsed
)
SELECT
    *,
    -- Strings, so the folder names are zero-padded like the engine's (an integer hour would give hour=1).
    strftime(inference_time, '%Y') AS year,
    strftime(inference_time, '%m') AS month,
    strftime(inference_time, '%d') AS day,
    strftime(inference_time, '%H') AS hour
FROM batch
WHERE inference_id <> '' AND inference_time IS NOT NULL
"""


def run_duckdb(src: str, dest: str, only: Sequence[str] | None) -> None:
    import duckdb

    files = transform_files(src, only)
    # An in-memory database spills to ./.tmp by default: keep spill files out of the working tree.
    spill = tempfile.mkdtemp(prefix="duckdb-spill-")
    try:
        con = duckdb.connect()
        # strftime and the TIMESTAMP -> TIMESTAMPTZ cast follow the session time zone: hours are UTC hours.
        con.execute("SET TimeZone = 'UTC'")
        con.execute(f"SET temp_directory = {_sql_string(spill)}")
        con.execute(
            "CREATE TEMP TABLE pairs AS SELECT unnest($1::VARCHAR[]) AS output_path, unnest($2::VARCHAR[]) AS "
            "input_path, unnest($3::VARCHAR[]) AS output_file, unnest($4::VARCHAR[]) AS input_file",
            [
                [f.output_path for f in files],
                [f.input_path for f in files],
                [f.output_file for f in files],
                [f.input_file for f in files],
            ],
        )
        inputs = [f.input_path for f in files if f.input_path is not None]
        query = duckdb_query([f.output_path for f in files], inputs)
        con.execute(
            f"COPY ({query}) TO {_sql_string(dest)} "
            f"(FORMAT parquet, PARTITION_BY ({', '.join(PARTITION_KEYS)}), COMPRESSION zstd)"
        )
        con.close()
    finally:
        shutil.rmtree(spill, ignore_errors=True)


# --- polars -------------------------------------------------------------------------------------------------


def polars_frame(files: Sequence[TransformFile]) -> Any:
    """The lazy batch table (partition keys included): per file pair, both sides scanned with a 1-based row
    index and joined on it, then all pairs concatenated (polars runs the pairs in parallel).

    A per-file ``scan_csv(row_index_name=...)`` numbers lines exactly, where one scan of every file would need
    a window over the file path (``rn - rn.min().over(path)``) to get back to lines within a file.
    """
    import polars as pl

    def lines(path: str, name: str) -> pl.LazyFrame:
        # One String column: a separator that never occurs, no quoting. Gzip is detected and decompressed.
        return pl.scan_csv(
            path,
            has_header=False,
            separator="\x01",
            quote_char=None,
            schema={name: pl.String},
            row_index_name="line",
            row_index_offset=1,
        )

    parts = []
    for f in files:
        frame = lines(f.output_path, "text")
        if f.input_path is not None:
            frame = frame.join(lines(f.input_path, "input_data"), on="line", how="left")
        else:
            frame = frame.with_columns(pl.lit(None, pl.String).alias("input_data"))
        parts.append(
            frame.with_columns(
                pl.lit(f.output_file).alias("output_file"), pl.lit(f.input_file, pl.String).alias("input_file")
            )
        )
    if not parts:
        empty = {"text": pl.String, "line": pl.UInt32, "input_data": pl.String}
        parts.append(pl.LazyFrame(schema={**empty, "output_file": pl.String, "input_file": pl.String}))
    text, tail = pl.col("text"), pl.col("tail").struct
    time = tail.field("2").str.strip_chars().str.strptime(pl.Datetime("us", "UTC"), TIME_FORMAT, strict=False)
    # The rest of the line: what the ID and time fields and their two commas leave (lengths in characters).
    head = text.str.len_chars() - tail.field("1").str.len_chars() - tail.field("2").str.len_chars() - 2
    frame = (
        pl.concat(parts)
        .with_columns(text.str.extract_groups(_TAIL_REGEX).alias("tail"))
        .select(
            "output_file",
            "input_file",
            pl.col("line").cast(pl.Int64),
            tail.field("1").str.strip_chars().alias("inference_id"),
            time.alias("inference_time"),
            "input_data",
            text.str.head(head).alias("output_data"),
        )
    )
    return frame.filter((pl.col("inference_id") != "") & pl.col("inference_time").is_not_null()).with_columns(
        pl.col("inference_time").dt.strftime("%Y").alias("year"),
        pl.col("inference_time").dt.strftime("%m").alias("month"),
        pl.col("inference_time").dt.strftime("%d").alias("day"),
        pl.col("inference_time").dt.strftime("%H").alias("hour"),
    )


def run_polars(src: str, dest: str, only: Sequence[str] | None) -> None:
    import polars as pl

    frame = polars_frame(transform_files(src, only))
    # PartitionBy names folders key=value (hive style) and, with include_key=False, keeps keys out of the files.
    frame.sink_parquet(
        pl.PartitionBy(dest, key=list(PARTITION_KEYS), include_key=False), compression="zstd", mkdir=True
    )


# --- natural variants: the predictions only -----------------------------------------------------------------

NATURAL_COLUMNS: Final = ("output_file", "inference_id", "inference_time", "output_data")


def duckdb_natural_query(outputs: Sequence[str]) -> str:
    """The query a user who wants the predictions writes: the ``.out`` files only, no line numbers and so no
    input pairing (pairing needs them): one ``read_csv`` of every file, the tail regex, the partition keys."""
    listed = "[" + ", ".join(map(_sql_string, outputs)) + "]"
    return f"""
WITH parsed AS (
    SELECT 'file://' || filename AS output_file, text, regexp_extract(text, '{_TAIL_REGEX}', ['id', 'time']) AS f
    FROM read_csv({listed}, columns = {{'text': 'VARCHAR'}}, delim = chr(1), header = false, quote = '',
                  escape = '', filename = true, auto_detect = false)
), batch AS (
    SELECT output_file, trim(f.id) AS inference_id,
           try_strptime(trim(f.time), '{TIME_FORMAT}')::TIMESTAMPTZ AS inference_time,
           left(text, length(text) - length(f.id) - length(f.time) - 2) AS output_data
    FROM parsed
)
SELECT *, strftime(inference_time, '%Y') AS year, strftime(inference_time, '%m') AS month,
       strftime(inference_time, '%d') AS day, strftime(inference_time, '%H') AS hour
FROM batch
WHERE inference_id <> '' AND inference_time IS NOT NULL
"""


def run_duckdb_natural(src: str, dest: str, only: Sequence[str] | None) -> None:
    import duckdb

    files = transform_files(src, only)
    if not files:
        raise SystemExit("duckdb-natural: no .out files listed")
    spill = tempfile.mkdtemp(prefix="duckdb-spill-")
    try:
        con = duckdb.connect()
        con.execute("SET TimeZone = 'UTC'")
        con.execute(f"SET temp_directory = {_sql_string(spill)}")
        query = duckdb_natural_query([f.output_path for f in files])
        con.execute(
            f"COPY ({query}) TO {_sql_string(dest)} "
            f"(FORMAT parquet, PARTITION_BY ({', '.join(PARTITION_KEYS)}), COMPRESSION zstd)"
        )
        con.close()
    finally:
        shutil.rmtree(spill, ignore_errors=True)


def run_polars_natural(src: str, dest: str, only: Sequence[str] | None) -> None:
    """The same for polars: one ``scan_csv`` of every ``.out`` with its path, no row index, no join."""
    import polars as pl

    files = transform_files(src, only)
    if not files:
        raise SystemExit("polars-natural: no .out files listed")
    frame = pl.scan_csv(
        [f.output_path for f in files],
        has_header=False,
        separator="\x01",
        quote_char=None,
        schema={"text": pl.String},
        include_file_paths="path",
    )
    text, tail = pl.col("text"), pl.col("tail").struct
    time = tail.field("2").str.strip_chars().str.strptime(pl.Datetime("us", "UTC"), TIME_FORMAT, strict=False)
    head = text.str.len_chars() - tail.field("1").str.len_chars() - tail.field("2").str.len_chars() - 2
    frame = (
        frame.with_columns(text.str.extract_groups(_TAIL_REGEX).alias("tail"))
        .select(
            ("file://" + pl.col("path")).alias("output_file"),
            tail.field("1").str.strip_chars().alias("inference_id"),
            time.alias("inference_time"),
            text.str.head(head).alias("output_data"),
        )
        .filter((pl.col("inference_id") != "") & pl.col("inference_time").is_not_null())
        .with_columns(
            pl.col("inference_time").dt.strftime("%Y").alias("year"),
            pl.col("inference_time").dt.strftime("%m").alias("month"),
            pl.col("inference_time").dt.strftime("%d").alias("day"),
            pl.col("inference_time").dt.strftime("%H").alias("hour"),
        )
    )
    frame.sink_parquet(
        pl.PartitionBy(dest, key=list(PARTITION_KEYS), include_key=False), compression="zstd", mkdir=True
    )


# --- pandas -------------------------------------------------------------------------------------------------


def run_pandas(src: str, dest: str, only: Sequence[str] | None) -> None:
    """The script most users write first: read each file whole, ``rsplit`` each line, one DataFrame, to_parquet."""
    import gzip

    import pandas as pd

    frames = []
    for f in transform_files(src, only):
        with open(f.output_path, encoding="utf-8") as fh:
            out_lines = fh.read().splitlines()
        in_lines: list[str] = []
        if f.input_path is not None:
            opener: Callable[..., Any] = gzip.open if f.input_path.endswith(".gz") else open
            with opener(f.input_path, "rt", encoding="utf-8") as fh:
                in_lines = fh.read().splitlines()
        df = pd.DataFrame(
            [line.rsplit(",", 2) for line in out_lines], columns=["output_data", "inference_id", "inference_time"]
        )
        df["input_data"] = in_lines[: len(df)] + [None] * (len(df) - len(in_lines))
        df["line"] = range(1, len(df) + 1)
        df["output_file"] = f.output_file
        df["input_file"] = f.input_file
        frames.append(df)
    cols = ["output_data", "inference_id", "inference_time", "input_data", "line", "output_file", "input_file"]
    df = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=cols)
    del frames
    df["inference_id"] = df["inference_id"].str.strip()
    times = pd.to_datetime(df["inference_time"].str.strip(), format=TIME_FORMAT, utc=True, errors="coerce")
    df["inference_time"] = times.dt.as_unit("us")
    df = df[df["inference_id"].notna() & (df["inference_id"] != "") & df["inference_time"].notna()]
    df = df.assign(
        line=df["line"].astype("int64"),
        year=df["inference_time"].dt.strftime("%Y"),
        month=df["inference_time"].dt.strftime("%m"),
        day=df["inference_time"].dt.strftime("%d"),
        hour=df["inference_time"].dt.strftime("%H"),
    )[[*COLUMNS, *PARTITION_KEYS]]
    # One file per hour folder. Not ``to_parquet(partition_cols=...)``: that goes through pyarrow's dataset
    # writer, and with pyarrow 26 the process then sometimes aborts at interpreter exit, after writing everything
    # ("terminate called without an active exception", exit -6; apache/arrow#36389): 6 of 100 runs on the 20 MB
    # tree, against none of 100 with this loop.
    for (year, month, day, hour), part in df.groupby(list(PARTITION_KEYS)):
        folder = os.path.join(dest, f"year={year}", f"month={month}", f"day={day}", f"hour={hour}")
        os.makedirs(folder, exist_ok=True)
        part.drop(columns=list(PARTITION_KEYS)).to_parquet(
            os.path.join(folder, "part-0.parquet"), engine="pyarrow", compression="zstd", index=False
        )


TOOLS: Final[dict[str, Callable[[str, str, Sequence[str] | None], None]]] = {
    "duckdb": run_duckdb,
    "duckdb-natural": run_duckdb_natural,
    "polars": run_polars,
    "polars-natural": run_polars_natural,
    "pandas": run_pandas,
}
# Tools that write the predictions only (no line, input_file, input_data): checked on NATURAL_COLUMNS.
NATURAL: Final = frozenset({"duckdb-natural", "polars-natural"})


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.batch_peers",
        description="Read CSV batch transform output listed by the data-capture manifests under SRC into "
        "hive-partitioned Parquet under DEST.",
    )
    parser.add_argument("tool", choices=sorted(TOOLS))
    parser.add_argument("src", help="batch data-capture destination: input/ and output/ manifests below it")
    parser.add_argument("dest", help="output dataset root (created)")
    parser.add_argument("--files-from", help="read only the .out files listed in this file (URIs or paths)")
    args = parser.parse_args(argv)
    only = None
    if args.files_from:
        only = [line.strip() for line in Path(args.files_from).read_text().splitlines() if line.strip()]
    TOOLS[args.tool](args.src, os.path.abspath(args.dest), only)
    return 0


if __name__ == "__main__":
    sys.exit(main())
