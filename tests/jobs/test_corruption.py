"""Corruption campaign in the suite: random damage to valid trees, then exact values and provenance of every
record the damage did not touch, and every line accounted for once, from the Parquet files themselves.

Each trial synthesizes a small tree (some objects gzip), runs the job on it clean, damages a third of its
objects in place (byte flips, truncation, garbage, NUL lines, merged and duplicated lines, invalid UTF-8,
deep nesting, blank lines, CRLF, BOM; for gzip objects also damage to the compressed bytes), runs the job
again and compares. Seeded; ``CORRUPTION_TRIALS`` sets the number of trials per job (CI runs a few).
"""

from __future__ import annotations

import os
import random
import shutil
from collections import defaultdict
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from engine import MergeOptions, RealtimeOptions, RunReport, read_ground_truth, run_merge, run_realtime
from engine.synth import SynthOptions, synth
from tests.corruption import GZIP_DAMAGE, LINE_DAMAGE, Damaged, damage_object, gzip_some

TRIALS = int(os.environ.get("CORRUPTION_TRIALS", "6"))
Key = tuple[str, int]


def _tree(tmp: Path, seed: int) -> Path:
    root = tmp / "tree"
    opts = SynthOptions(records=240, hours=2, endpoints=2, variants=1, seed=seed, records_per_file=30)
    synth(str(root), opts)
    rng = random.Random(seed)
    gzip_some(root / "capture", rng, 0.3)
    gzip_some(root / "ground-truth", rng, 0.3)
    return root


def _uri(path: Path) -> str:
    return path.resolve().as_uri()


def _read_rows(dest: Path, glob: str) -> list[dict[str, Any]]:
    """Every row of every part file, with its hive partition values (files may differ in schema)."""
    rows: list[dict[str, Any]] = []
    for f in sorted(dest.glob(glob)):
        parts = dict(p.split("=", 1) for p in f.relative_to(dest).parts[:-1] if "=" in p)
        rows.extend({**row, **parts} for row in pq.read_table(f).to_pylist())
    return rows


def _text(v: Any) -> str:
    """A value as text; a number as its float. A column's type follows its table: a damaged record may widen
    a number column to float or to text (documented), which changes how an intact record's number is held,
    not what it is."""
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return repr(float(v))
    if isinstance(v, str):
        try:
            return repr(float(v))
        except ValueError:
            return v
    return str(v)


def _by_line(rows: list[dict[str, Any]], file_col: str, line_col: str, *, as_text: bool) -> dict[Key, list[Any]]:
    out: dict[Key, list[Any]] = defaultdict(list)
    for r in rows:
        key = (str(r[file_col]), int(r[line_col]))
        # Null columns are left out: a damaged record may bring a new field, and with it a column that
        # is null in every other row of its table; that is the table's shape, not another record's value.
        values = {k: _text(v) if as_text else v for k, v in r.items() if k != line_col and v is not None}
        out[key].append(values)
    for v in out.values():
        v.sort(key=lambda d: str(d.get("record_index")))
    return dict(out)


def _damage(root: Path, rng: random.Random, share: float = 0.5) -> dict[str, Damaged]:
    objects = sorted(p for p in root.rglob("*") if p.is_file() and (p.suffix in (".jsonl", ".gz")))
    out: dict[str, Damaged] = {}
    for path in objects:
        if rng.random() < share:
            out[_uri(path)] = damage_object(path, rng, LINE_DAMAGE + GZIP_DAMAGE)
    return out


def _check(
    clean: dict[Key, list[Any]],
    got: dict[Key, list[Any]],
    rejects: list[dict[str, Any]],
    damaged: dict[str, Damaged],
    *,
    id_path: tuple[str, str],
    id_column: str,
) -> None:
    rejected: dict[str, set[int | None]] = defaultdict(set)
    for r in rejects:
        rejected[str(r["source_file"])].add(r["source_line"])
    files = {f for f, _ in clean} | {f for f, _ in got} | set(rejected)
    for uri in files:
        d = damaged.get(uri)
        rows_here = {line: v for (f, line), v in got.items() if f == uri}
        if d is None:  # untouched object: exactly the clean rows
            want_here = {line: v for (f, line), v in clean.items() if f == uri}
            assert rows_here == want_here, (uri, _diff(rows_here, want_here))
            continue
        if d.nonblank is None:  # a broken gzip stream: no row from beyond its verified members
            assert all(line <= d.verified_lines for line in rows_here), (uri, d.kind)
            assert {r["reason"] for r in rejects if r["source_file"] == uri} <= {"corrupt_gzip"}, (uri, d.kind)
            for new, old in d.intact.items():
                want = clean.get((uri, old))
                if want is not None:
                    assert rows_here.get(new) == want, (uri, d.kind, new, old)
            continue
        lines = rejected.get(uri, set())
        assert not set(rows_here) & lines, (uri, d.kind, "a line is both a row and a reject")
        accounted = set(rows_here) | {n for n in lines if n is not None}
        assert accounted == d.nonblank, (uri, d.kind, sorted(accounted ^ d.nonblank)[:5])
        for new, old in d.intact.items():
            want = clean.get((uri, old))
            if want is not None:
                assert rows_here.get(new) == want, (
                    uri,
                    d.kind,
                    new,
                    old,
                    _diff({0: rows_here.get(new) or []}, {0: want}),
                )
        for line, values in rows_here.items():
            if line in d.intact:
                continue
            # A damaged line that still decodes is a row of *its own* bytes, never another line's values.
            try:
                record = orjson.loads(d.lines[line - 1])
            except orjson.JSONDecodeError:
                continue
            meta = record.get(id_path[0]) if isinstance(record, dict) else None
            expected = meta.get(id_path[1]) if isinstance(meta, dict) else None
            if isinstance(expected, str):
                assert {v[id_column] for v in values} == {expected}, (uri, d.kind, line)


def _diff(got: dict[int, list[Any]], want: dict[int, list[Any]]) -> list[tuple[Any, ...]]:
    """The first differing (line, column, got, want), for a readable failure."""
    out: list[tuple[Any, ...]] = []
    for line in sorted(set(got) | set(want)):
        g, w = got.get(line), want.get(line)
        if g is None or w is None or len(g) != len(w):
            out.append((line, "rows", len(g or []), len(w or [])))
            continue
        for gi, wi in zip(g, w, strict=True):
            out += [(line, k, gi.get(k), wi.get(k)) for k in sorted(set(gi) | set(wi)) if gi.get(k) != wi.get(k)]
    return out[:6]


def _run(capture: Path, dest: Path, decode: bool) -> RunReport:
    return run_realtime(
        str(capture),
        str(dest),
        options=RealtimeOptions(decode=decode, max_reject_ratio=1.0, unit_bytes=64 * 1024),
    )


@pytest.mark.parametrize("decode", [False, True], ids=["envelope", "decode"])
@pytest.mark.parametrize("seed", range(TRIALS))
def test_realtime_under_random_damage(tmp_path: Path, seed: int, decode: bool) -> None:
    root = _tree(tmp_path, seed)
    capture = root / "capture"
    clean_report = _run(capture, tmp_path / "clean", decode)
    assert clean_report.rejected == 0
    clean = _by_line(
        _read_rows(tmp_path / "clean", "endpoint=*/**/*.parquet"), "source_file", "source_line", as_text=decode
    )

    damaged = _damage(capture, random.Random(1000 + seed))
    report = _run(capture, tmp_path / "out", decode)
    out = tmp_path / "out"
    rows = _read_rows(out, "endpoint=*/**/*.parquet")
    rejects = _read_rows(out, "_rejects/**/*.parquet")
    got = _by_line(rows, "source_file", "source_line", as_text=decode)
    # The balance from the files themselves: events with rows + rejects = records.
    assert report.records == len(got) + len(rejects), report.to_dict()
    assert report.rows_written == len(rows) and report.rejected == len(rejects)
    _check(clean, got, rejects, damaged, id_path=("eventMetadata", "eventId"), id_column="event_id")


@pytest.mark.parametrize("seed", range(TRIALS))
def test_ground_truth_and_merge_under_random_damage(tmp_path: Path, seed: int) -> None:
    root = _tree(tmp_path, seed)
    labels_root = root / "ground-truth"

    def labels() -> tuple[dict[Key, list[Any]], list[dict[str, Any]]]:
        rejected: list[pa.RecordBatch] = []
        table = read_ground_truth(str(labels_root), on_rejects=rejected.append).read_all()
        rej = pa.Table.from_batches(rejected).to_pylist() if rejected else []
        return _by_line(table.to_pylist(), "label_file", "label_line", as_text=False), rej

    clean, clean_rejects = labels()
    assert not clean_rejects
    damaged = _damage(labels_root, random.Random(2000 + seed))
    got, rejects = labels()
    rejected_lines = {(str(r["source_file"]), r["source_line"]) for r in rejects}
    for key, values in got.items():
        assert key not in rejected_lines
        for v in values:  # label_file is the key; the rest are values
            v["source_file"] = v.pop("label_file")
    for values in clean.values():
        for v in values:
            v["source_file"] = v.pop("label_file")
    _check(clean, got, rejects, damaged, id_path=("eventMetadata", "eventId"), id_column="event_id")

    # The merge over the damaged labels: balanced, and every label it attached is its own line's.
    dest = tmp_path / "merged"
    report = run_merge(
        captures=str(root / "capture"),
        ground_truth=str(labels_root),
        dest=str(dest),
        options=MergeOptions(max_reject_ratio=1.0, how="left"),
    )
    assert report.balanced, report.to_dict()
    merged = _read_rows(dest, "endpoint=*/**/*.parquet")
    assert len(merged) == report.counts["predictions"]
    for row in merged:
        if row["label_file"] is None:
            continue
        uri, line = str(row["label_file"]), int(row["label_line"])
        d = damaged.get(uri)
        text = d.lines[line - 1] if d is not None else _plain_lines(Path(uri.removeprefix("file://")))[line - 1]
        record = orjson.loads(text.removeprefix(b"\xef\xbb\xbf"))  # a BOM inside a file is pyarrow's whitespace
        assert record["eventMetadata"]["eventId"] == (row["inference_id"] or row["event_id"])
        assert record["groundTruthData"]["data"] == row["label_data"]


def _plain_lines(path: Path) -> list[bytes]:
    import gzip

    raw = path.read_bytes()
    data = gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
    return data.split(b"\n")


def test_the_damage_oracle_itself(tmp_path: Path) -> None:
    """The oracle must not call a damaged line intact: each kind, on a known object, checked by hand."""
    originals = [b'{"a":%d}' % i for i in range(5)]
    for kind in LINE_DAMAGE:
        path = tmp_path / f"{kind}.jsonl"
        path.write_bytes(b"".join(line + b"\n" for line in originals))
        d = damage_object(path, random.Random(7), (kind,))
        for new, old in d.intact.items():
            assert d.lines[new - 1].rstrip(b"\r") == originals[old - 1], kind
        assert d.nonblank is not None and set(d.intact) <= d.nonblank, kind
    shutil.rmtree(tmp_path)


def _batch_tree(tmp: Path, seed: int) -> Any:
    from engine.synth import BatchSynthOptions, synth_batch

    opts = BatchSynthOptions(jobs=2, files_per_job=3, records_per_file=400, seed=seed, features=8, gzip_share=0.5)
    return synth_batch(str(tmp / "batch"), opts)


def _run_batch(capture: str, dest: Path) -> RunReport:
    from engine import BatchOptions, run_batch

    return run_batch(capture, str(dest), options=BatchOptions(max_reject_ratio=1.0, unit_bytes=4096))


def _batch_rows(dest: Path) -> dict[Key, list[Any]]:
    rows = _read_rows(dest, "year=*/**/*.parquet")
    return _by_line(rows, "output_file", "line", as_text=False)


@pytest.mark.parametrize("seed", range(TRIALS))
def test_batch_under_random_damage(tmp_path: Path, seed: int) -> None:
    summary = _batch_tree(tmp_path, seed)
    clean_report = _run_batch(summary.capture_root, tmp_path / "clean")
    clean = _batch_rows(tmp_path / "clean")
    assert clean_report.balanced
    rng = random.Random(3000 + seed)
    outputs = sorted(Path(summary.transform_output_root).rglob("*.out"))
    inputs = {p.resolve().as_uri(): p for p in Path(summary.transform_input_root).rglob("*") if p.is_file()}
    damaged_out: dict[str, Damaged] = {}
    damaged_in: dict[str, Damaged] = {}
    for out in outputs:
        if rng.random() < 0.5:
            damaged_out[_uri(out)] = damage_object(out, rng, LINE_DAMAGE)
    for uri, path in inputs.items():
        if rng.random() < 0.4:
            damaged_in[uri] = damage_object(path, rng, LINE_DAMAGE + GZIP_DAMAGE)

    report = _run_batch(summary.capture_root, tmp_path / "out")
    out = tmp_path / "out"
    rows = _read_rows(out, "year=*/**/*.parquet")
    rejects = _read_rows(out, "_rejects/**/*.parquet")
    got = _by_line(rows, "output_file", "line", as_text=False)
    assert report.balanced, report.to_dict()
    # Balance from the files: output lines with rows + rejects (+ outside the window, none here).
    assert report.rows_written == len(rows) and report.rejected == len(rejects)
    rejected = {(str(r["source_file"]), r["source_line"]) for r in rejects}
    for (uri, line), values in got.items():
        assert (uri, line) not in rejected, (uri, line)
        input_uri = values[0]["input_file"]
        if uri not in damaged_out and input_uri not in damaged_in:
            assert values == clean.get((uri, line)), (uri, line, _diff({0: values}, {0: clean.get((uri, line), [])}))
        d_in = damaged_in.get(input_uri)
        if d_in is not None:
            # Nothing from an input whose gzip stream is broken; else line k of the output carries line k of
            # the input as the reader sees it (SageMaker pairs by position).
            assert d_in.nonblank is not None, (input_uri, d_in.kind, line)
            for v in values:
                if v["input_data"] is not None and len(values) == 1 and line <= len(d_in.lines):
                    own = d_in.lines[line - 1].rstrip(b"\r").decode(errors="replace")
                    assert v["input_data"] in (own, own.strip()), (input_uri, d_in.kind, line)
    for uri, d in damaged_out.items():
        here = {line for f, line in got if f == uri}
        assert d.nonblank is not None
        lines_rejected = {line for f, line in rejected if f == uri}
        # Every non-blank output line is a row or a reject (a blank one is an `empty_record` reject);
        # a whole-document output is one record, numbered 1.
        accounted = here | {n for n in lines_rejected if n is not None}
        every = set(range(1, len(d.lines) + 1))
        assert accounted <= every | {1}, (uri, d.kind)
        assert d.nonblank <= accounted or accounted == {1}, (uri, d.kind, sorted(d.nonblank - accounted)[:5])
        for line in here:
            # A row's output comes from its own output line.
            text = d.lines[line - 1].decode(errors="replace")
            for v in got[(uri, line)]:
                if v.get("inference_id"):
                    assert v["inference_id"] in text, (uri, d.kind, line)
