"""Cost of one schema per table: a commit that widens a table rewrites its narrower files (README figures).

    .venv/bin/python -m benchmarks.schema_unify [--hours 12] [--records 50000]

Writes a decoded dataset of `hours` partitions (JSON payloads with fields a, b), then re-runs one hour whose
records add a field c: every other partition's file is rewritten with the widened schema. Prints the commit
time of that run against a re-run that adds nothing, per partition and per MB rewritten.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

import orjson

from engine import RealtimeOptions, run_realtime


def _event(i: int, hour: int, body: dict[str, object]) -> bytes:
    return (
        orjson.dumps(
            {
                "captureData": {
                    "endpointInput": {
                        "observedContentType": "application/json",
                        "mode": "INPUT",
                        "data": orjson.dumps(body).decode(),
                        "encoding": "JSON",
                    },
                    "endpointOutput": {
                        "observedContentType": "application/json",
                        "mode": "OUTPUT",
                        "data": '{"score": 0.5}',
                        "encoding": "JSON",
                    },
                },
                "eventMetadata": {
                    "eventId": f"e{hour}-{i}",
                    "inferenceTime": f"2026-11-01T{hour:02d}:{i % 60:02d}:00Z",
                },
                "eventVersion": "0",
            }
        )
        + b"\n"
    )


def _write_hour(root: Path, hour: int, records: int, extra: bool) -> None:
    folder = root / "ep" / "AllTraffic" / f"2026/11/01/{hour:02d}"
    folder.mkdir(parents=True, exist_ok=True)
    body = b"".join(
        _event(i, hour, {"a": i, "b": f"s{i % 97}", **({"c": i * 0.5} if extra else {})}) for i in range(records)
    )
    (folder / "00-00-000-x.jsonl").write_bytes(body)


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--hours", type=int, default=12)
    p.add_argument("--records", type=int, default=50_000)
    a = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="schema-unify-"))
    try:
        capture, out = work / "capture", work / "out"
        for h in range(a.hours):
            _write_hour(capture, h, a.records, extra=False)
        run_realtime(str(capture), str(out), options=RealtimeOptions(decode=True))
        size = sum(f.stat().st_size for f in out.glob("endpoint=*/**/*.parquet"))
        last = f"2026-11-01T{a.hours - 1:02d}"
        end = f"2026-11-01T{a.hours:02d}"
        same = run_realtime(str(capture), str(out), options=RealtimeOptions(decode=True, start=last, end=end))
        _write_hour(capture, a.hours - 1, a.records, extra=True)
        wide = run_realtime(str(capture), str(out), options=RealtimeOptions(decode=True, start=last, end=end))
        rewrites = wide.counts.get("schema_rewrites", 0)
        extra = wide.stage_seconds["commit"] - same.stage_seconds["commit"]
        mb = size / 1e6 * rewrites / a.hours
        print(f"{a.hours} partitions of {a.records:,} decoded rows ({size / a.hours / 1e6:.1f} MB of Parquet each)")
        print(f"commit without widening: {same.stage_seconds['commit']:.2f}s")
        print(f"commit with widening:    {wide.stage_seconds['commit']:.2f}s ({rewrites} files rewritten)")
        print(f"cost: {extra / max(rewrites, 1):.3f}s per partition rewritten, {mb / max(extra, 1e-9):.0f} MB/s")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
