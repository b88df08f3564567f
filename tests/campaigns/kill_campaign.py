"""Kill and concurrency campaigns against the commit (run by hand; a seeded subset runs in tests/sinks/test_commit.py).

    python -m tests.campaigns.kill_campaign kill --trials 120 --seed 1
    python -m tests.campaigns.kill_campaign concurrency --trials 20 --seed 1

kill: each trial copies a committed dataset (input version 1), runs the CLI over version 2 and kills it:
SIGKILL at a named phase (every phase in turn, via CAPTURE_ENGINE_TEST_PHASE), SIGKILL at a random
instant, or SIGTERM at a named phase or a random instant. It then checks what a reader sees (the
manifest view is the old or the new commit exactly; the plain view is unchanged before any file
moved; `_SUCCESS` only with the new commit; the exit message says which) and that a re-run ends
equal to a clean run, with no temporary files left.

concurrency: each trial starts 2 or 3 runs over the same window at random offsets; at most one may
write at a time (the others fail with one line), and the dataset must end equal to a clean run.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from engine import run_realtime
from tests.commit_checks import (
    PHASES,
    TERM_COMMITS_FROM,
    check_killed,
    manifest_rows,
    manifest_run,
    plain_rows,
    success_run,
    write_tree,
)
from tests.conftest import ROOT


def _cmd(capture: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "engine", "realtime", str(capture), str(out), "--workers", "1"]


def kill_campaign(trials: int, seed: int, records: int) -> int:
    rng = random.Random(seed)
    work = Path(tempfile.mkdtemp(prefix="kill-campaign-"))
    capture, base, clean = work / "capture", work / "base", work / "clean"
    write_tree(capture, 2, records=records)
    run_realtime(str(capture), str(clean))
    new = plain_rows(clean)
    shutil.rmtree(capture)
    write_tree(capture, 1, records=records)
    run_realtime(str(capture), str(base))
    old = plain_rows(base)
    write_tree(capture, 2, records=records)
    kinds: Counter[str] = Counter()
    failures: list[str] = []
    t0 = time.monotonic()
    for n in range(trials):
        out = work / f"t{n}"
        shutil.copytree(base, out)
        mode = n % 4  # 0, 1: kill at a phase; 2: kill at a random instant; 3: SIGTERM at a phase or instant
        phase = PHASES[(n // 4 * 2 + mode) % len(PHASES)]
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "CAPTURE_ENGINE_"))}
        if mode in (0, 1):
            env["CAPTURE_ENGINE_TEST_PHASE"] = f"{phase}:kill"
            kind = f"SIGKILL at {phase}"
        elif mode == 3 and n % 8 == 3:
            env["CAPTURE_ENGINE_TEST_PHASE"] = f"{phase}:term"
            kind = f"SIGTERM at {phase}"
        else:
            kind = "SIGKILL at random" if mode == 2 else "SIGTERM at random"
        proc = subprocess.Popen(
            _cmd(capture, out), cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        if "random" in kind:
            time.sleep(rng.uniform(0.3, 4.0))
            proc.send_signal(signal.SIGKILL if mode == 2 else signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
        kinds[kind] += 1
        problems: list[str] = []
        if "Traceback" in err:
            problems.append("traceback")
        if kind.startswith("SIGKILL at ") and "random" not in kind:
            if proc.returncode != -signal.SIGKILL:
                problems.append(f"exit {proc.returncode}, not killed")
            problems += check_killed(out, phase, old, new)
        else:
            m = manifest_rows(out)
            if m not in (old, new):
                problems.append(f"manifest view of {len(m)} rows is neither commit")
            if proc.returncode == 0 or "after the run committed" in err:
                if m != new or plain_rows(out) != new or success_run(out) is None:
                    problems.append("exit says committed but the dataset is not the new commit")
            elif "nothing was committed" in err:
                if m != old or plain_rows(out) != old or success_run(out) not in (None, manifest_run(out)):
                    problems.append("exit says nothing committed but the dataset changed")
            elif proc.returncode == -signal.SIGKILL:
                if success_run(out) not in (None, manifest_run(out)):
                    problems.append("_SUCCESS describes another run than the last commit")
            else:
                problems.append(f"exit {proc.returncode}: {err.strip()[-200:]}")
            if kind.startswith("SIGTERM at ") and "random" not in kind:
                committed = PHASES.index(phase) >= TERM_COMMITS_FROM
                if proc.returncode != 130 or committed != ("after the run committed" in err):
                    problems.append(f"SIGTERM at {phase}: exit {proc.returncode}, {err.strip()[-160:]}")
        run_realtime(str(capture), str(out))
        if not (plain_rows(out) == manifest_rows(out) == new) or (out / "_temporary").exists():
            problems.append("the re-run does not equal a clean run")
        if problems:
            failures.append(f"trial {n} ({kind}): {'; '.join(problems)}")
        shutil.rmtree(out)
        print(f"trial {n:3d} {kind:32s} {'FAIL ' + '; '.join(problems) if problems else 'ok'}", flush=True)
    shutil.rmtree(work)
    print(f"\n{trials} trials in {time.monotonic() - t0:.0f}s, {len(failures)} failures")
    for kind, count in sorted(kinds.items()):
        print(f"  {count:3d}  {kind}")
    for f in failures:
        print("FAILURE", f)
    return 1 if failures else 0


def concurrency_campaign(trials: int, seed: int, records: int) -> int:
    rng = random.Random(seed)
    work = Path(tempfile.mkdtemp(prefix="concurrency-campaign-"))
    capture, clean = work / "capture", work / "clean"
    write_tree(capture, 1, records=records)
    run_realtime(str(capture), str(clean))
    expected = plain_rows(clean)
    failures: list[str] = []
    outcomes: Counter[str] = Counter()
    t0 = time.monotonic()
    for n in range(trials):
        out = work / f"t{n}"
        if n % 2:
            shutil.copytree(clean, out)  # also over a committed dataset
        procs = []
        for _ in range(rng.choice((2, 3))):
            procs.append(
                subprocess.Popen(
                    _cmd(capture, out), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
                )
            )
            time.sleep(rng.uniform(0.0, 1.5))
        results = [(p, p.communicate(timeout=180)[1]) for p in procs]
        codes = sorted(p.returncode for p, _ in results)
        outcomes[" ".join(map(str, codes))] += 1
        problems = []
        for p, err in results:
            if p.returncode == 1 and "another run is writing this destination" not in err:
                problems.append(f"exit 1: {err.strip()[-160:]}")
            elif p.returncode not in (0, 1):
                problems.append(f"exit {p.returncode}: {err.strip()[-160:]}")
        if 0 not in codes:
            problems.append("no run committed")
        rows = plain_rows(out)
        if rows != expected or manifest_rows(out) != expected:
            problems.append(f"{len(rows)} rows for {len(expected)} (duplicates: {len(rows) - len(set(rows))})")
        if problems:
            failures.append(f"trial {n}: {'; '.join(problems)}")
        print(f"trial {n:3d} exits {codes} {'FAIL ' + '; '.join(problems) if problems else 'ok'}", flush=True)
        shutil.rmtree(out)
    shutil.rmtree(work)
    print(f"\n{trials} trials in {time.monotonic() - t0:.0f}s, {len(failures)} failures; exit codes: {dict(outcomes)}")
    for f in failures:
        print("FAILURE", f)
    return 1 if failures else 0


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("campaign", choices=("kill", "concurrency"))
    p.add_argument("--trials", type=int, default=120)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--records", type=int, default=3000, help="records per endpoint and hour")
    args = p.parse_args()
    run = kill_campaign if args.campaign == "kill" else concurrency_campaign
    return run(args.trials, args.seed, args.records)


if __name__ == "__main__":
    sys.exit(main())
