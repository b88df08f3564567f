"""Peak memory of the real-time job on adversarial input shapes (the README's table comes from this).

    .venv/bin/python -m benchmarks.adversarial [--scale 1.0] [--only NAME]

Each case writes one capture object, runs ``python -m engine realtime`` on it in a child process and
reports the child's peak RSS (``ru_maxrss`` from ``wait4``) and wall time. The claim under test:
memory is bounded by the unit size and the worker count, never by the input's size or shape.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LINE = (
    b'{"captureData":{"endpointInput":{"observedContentType":"text/csv","mode":"INPUT","data":"1,2,3",'
    b'"encoding":"CSV"},"endpointOutput":{"observedContentType":"text/csv","mode":"OUTPUT","data":"0.5",'
    b'"encoding":"CSV"}},"eventMetadata":{"eventId":"e","inferenceTime":"2026-11-01T10:00:00Z"},"eventVersion":"0"}\n'
)


def _gzip_stream(path: Path, block: bytes, repeats: int) -> None:
    c = zlib.compressobj(6, zlib.DEFLATED, 31)
    with open(path, "wb") as f:
        for _ in range(repeats):
            f.write(c.compress(block))
        f.write(c.flush())


def zeros_gzip(path: Path, scale: float) -> str:
    gb = max(1, round(5 * scale))
    _gzip_stream(path.with_suffix(".jsonl.gz"), bytes(2**20), gb * 1024)
    return f"gzip of zeros, {gb} GB uncompressed, no newline"


def repeated_lines_gzip(path: Path, scale: float) -> str:
    n = int(6_000_000 * scale)
    block = LINE * 10_000
    _gzip_stream(path.with_suffix(".jsonl.gz"), block, n // 10_000)
    return f"gzip of {n:,} repeated valid lines ({n * len(LINE) / 1e9:.1f} GB uncompressed)"


def tiny_invalid_lines(path: Path, scale: float) -> str:
    n = int(1_000_000 * scale)
    path.with_suffix(".jsonl").write_bytes(b"x\n" * n)
    return f"{n:,} tiny invalid lines"


def one_long_line(path: Path, scale: float) -> str:
    mb = int(1024 * scale)
    with open(path.with_suffix(".jsonl"), "wb") as f:
        for _ in range(mb):
            f.write(b"a" * 2**20)
    return f"one {mb:,} MiB line without a newline"


CASES: dict[str, Callable[[Path, float], str]] = {
    "zeros_gzip": zeros_gzip,
    "repeated_lines_gzip": repeated_lines_gzip,
    "tiny_invalid_lines": tiny_invalid_lines,
    "one_long_line": one_long_line,
}


def measure(args: list[str]) -> tuple[int, float, int, str]:
    t0 = time.perf_counter()
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    _, status, usage = os.wait4(proc.pid, 0)
    err = proc.stderr.read().decode(errors="replace")
    proc.stderr.close()
    proc.returncode = os.waitstatus_to_exitcode(status)
    last = err.strip().splitlines()[-1] if err.strip() else ""
    return usage.ru_maxrss * 1024, time.perf_counter() - t0, proc.returncode, last


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--scale", type=float, default=1.0)
    p.add_argument("--only", action="append", choices=sorted(CASES))
    p.add_argument("--extra", action="append", default=[], help="extra CLI option, e.g. --extra=--unit-size=1MiB")
    a = p.parse_args()
    print("| input | unit size | peak RSS | wall | exit |")
    print("|---|---|---|---|---|")
    for name in a.only or list(CASES):
        work = Path(tempfile.mkdtemp(prefix=f"adversarial-{name}-"))
        try:
            folder = work / "capture" / "ep" / "AllTraffic" / "2026" / "11" / "01" / "10"
            folder.mkdir(parents=True)
            what = CASES[name](folder / "00-00-000-x", a.scale)
            cmd = [sys.executable, "-m", "engine", "realtime", str(work / "capture"), str(work / "out")]
            cmd += ["--max-reject-ratio", "1", "--quiet", *a.extra]
            rss, wall, code, last = measure(cmd)
            unit = next((x.split("=", 1)[1] for x in a.extra if x.startswith("--unit-size")), "8MiB")
            print(f"| {what} | {unit} | {rss / 2**20:,.0f} MiB | {wall:,.1f} s | {code} {last[:60]} |", flush=True)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
