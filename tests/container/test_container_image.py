"""What the image does, checked without a container engine: the Dockerfile's promises, ``make image`` where
no engine runs, and the entry point run as the image runs it, from the built wheel in a fresh virtual
environment, as a user who may write only where the image lets it."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from container_layout import ROOT, local, message, opt_ml, read_json, run_entry

NOBODY = 65534


def _stages() -> list[list[str]]:
    """The Dockerfile's instructions (continuation lines joined, comments dropped), per stage."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    stages: list[list[str]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.upper().startswith("FROM "):
            stages.append([])
        if stages:
            stages[-1].append(line)
    return stages


def _entrypoint() -> list[str]:
    lines = [x for x in _stages()[-1] if x.upper().startswith("ENTRYPOINT ")]
    assert len(lines) == 1
    argv = json.loads(lines[0].split(None, 1)[1])  # exec form: a JSON array, no shell in between
    assert isinstance(argv, list) and all(isinstance(a, str) for a in argv)
    return argv


def test_dockerfile_keeps_its_promises() -> None:
    stages = _stages()
    assert len(stages) >= 2, "multi-stage: the build happens in a stage that is not shipped"
    final = stages[-1]
    assert re.fullmatch(r"FROM python:\$\{PYTHON_VERSION\}-slim", final[0])
    assert re.search(r'pip install .*"\$\(ls /dist/\*\.whl\)\[s3,report\]"', " ".join(stages[0]))
    users = [x.split()[1] for x in final if x.upper().startswith("USER ")]
    assert users and users[-1] not in ("root", "0")
    assert _entrypoint() == ["python", "-m", "engine"]
    shipped = " ".join(final)
    # No build tools in the shipped stage: nothing installed there, pip itself removed.
    assert "pip install" not in shipped and "apt-get install" not in shipped
    assert "pip uninstall --yes pip setuptools wheel" in shipped and "COPY --from=build" in shipped
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    assert ignored[1:2] == ["*"] and "!engine" in ignored and "!schemas" in ignored and "!.venv" not in ignored


def test_run_on_sagemaker_snippets_compile() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Run on SageMaker") :]
    section = section[: section.index("\n## ", 1)]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 3
    names: set[str] = set()
    for block in blocks:
        compile(block, "README.md", "exec")
        names |= set(re.findall(r'"([a-z_]+)": ', block))
    # The variables the snippets set are the ones the container reads.
    assert names >= {"dataset_format", "dataset_source", "output_path", "publish_cloudwatch_metrics"}
    assert '"sagemakerCaptureJson"' in section and "capture-engine container" in section


def test_make_image_without_a_container_engine() -> None:
    proc = subprocess.run(
        ["make", "--no-print-directory", "image", "CONTAINER_ENGINE="], cwd=ROOT, capture_output=True, text=True
    )
    assert proc.returncode != 0
    assert proc.stdout.strip() == "make image: no container engine (docker or podman) is installed here"


@pytest.fixture
def world_readable() -> Iterator[Path]:
    # pytest's temporary folders are private to their owner; the unprivileged user must read this one.
    base = Path(tempfile.mkdtemp(prefix="capture-engine-image-"))
    base.chmod(0o755)
    yield base
    shutil.rmtree(base, ignore_errors=True)


def _public(path: Path) -> bool:
    """Whether any user may run `path` (every folder above it searchable by others)."""
    real = path.resolve()
    return all(p.stat().st_mode & 0o001 for p in [real, *real.parents])


def _interpreter() -> tuple[str, bool]:
    """A base interpreter of this Python version for the fresh venv, and whether another user may run it."""
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    candidates = [getattr(sys, "_base_executable", sys.executable)]
    candidates += [p for d in ("/usr/local/bin", "/usr/bin") if (p := shutil.which(version, path=d))]
    for c in candidates:
        if _public(Path(c)):
            return c, True
    return candidates[0], False


def _as_user(path: Path) -> None:
    """Give `path` to the user the job runs as (root runs it as nobody; others as themselves)."""
    if os.geteuid() == 0:
        os.chown(path, NOBODY, NOBODY)
    path.chmod(0o755)


def test_wheel_in_a_fresh_venv_runs_the_image_entrypoint(world_readable: Path) -> None:
    base = world_readable
    dist = base / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(dist), str(ROOT)],
        check=True,
        capture_output=True,
    )
    (wheel,) = dist.glob("capture_engine-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        meta = z.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert {"engine/container/entry.py", "engine/container/paths.py", "engine/schemas/tables.json"} <= names
    assert re.search(r"^Requires-Dist: s3fs.*extra == ['\"]s3['\"]", meta, re.M)

    venv = base / "venv"
    interpreter, public = _interpreter()
    subprocess.run([interpreter, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-deps", str(wheel)],
        check=True,
        capture_output=True,
    )
    # The dependencies come from this test run's environment (installing pyarrow and polars afresh takes
    # minutes on a shared machine); the engine itself comes only from the wheel, as checked below.
    site = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    (site / "_test_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    root = opt_ml(base)
    data = local(root, "/opt/ml/processing/input/baseline_dataset_input/train.csv")
    data.parent.mkdir(parents=True)
    data.write_text("churn,calls,minutes\n" + "".join(f"{i % 2},{i % 7},{i * 1.5}\n" for i in range(200)))
    for d in [*base.rglob("*")]:
        if d.is_dir():
            d.chmod(0o755)
    writable = [local(root, "/opt/ml/processing/output"), root / "output", base / "tmp", base / "home"]
    for d in writable:
        d.mkdir(exist_ok=True)
        _as_user(d)
    if os.geteuid() != 0:  # the same user then, with everything else read-only
        for d in (root / "config", local(root, "/opt/ml/processing/input"), root / "processing"):
            d.chmod(0o555)
    # As root, the job runs as nobody (which needs an interpreter outside root's home to start at all).
    user = NOBODY if os.geteuid() == 0 and public else None
    if user is not None:
        # The borrowed dependencies must be readable by that user too (a checkout under a private temporary
        # folder is not): else the job runs as this user, and the write-denied check is skipped as for root.
        deps = subprocess.run([str(python), "-c", "import numpy, pyarrow"], capture_output=True, user=user)
        user = user if deps.returncode == 0 else None
    image_env = {
        "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONPATH": "",  # the image has none: the engine must come from the wheel, whatever the caller's path
        "TMPDIR": str(base / "tmp"),
        "HOME": str(base / "home"),
    }
    try:
        probe = subprocess.run(
            ["python", "-c", f"open({str(local(root, '/opt/ml/processing/input/x'))!r}, 'w')"],
            env=os.environ | image_env,
            capture_output=True,
            text=True,
            user=user,
        )
        if user is not None or os.geteuid() != 0:
            assert probe.returncode != 0 and "PermissionError" in probe.stderr, "the sandbox must forbid other writes"
        where = subprocess.run(
            ["python", "-c", "import engine; print(engine.__file__)"],
            env=os.environ | image_env,
            capture_output=True,
            text=True,
            cwd=base,
            user=user,
        )
        assert where.stdout.strip().startswith(str(site)), where.stdout + where.stderr
        version = subprocess.run(
            [str(venv / "bin" / "capture-engine"), "--version"], capture_output=True, text=True, env=image_env
        )
        assert version.returncode == 0 and version.stdout.startswith("capture-engine ")

        env = {
            "dataset_format": '{"csv": {"header": true, "output_columns_position": "START"}}',
            "dataset_source": "/opt/ml/processing/input/baseline_dataset_input",
            "output_path": "/opt/ml/processing/output",
            "publish_cloudwatch_metrics": "Disabled",
        }
        entry = _entrypoint()
        proc = run_entry(root, env, python=entry[0], cwd=base, user=user, extra=image_env)
        assert entry[1:] == ["-m", "engine"]
        assert proc.returncode == 0, proc.stderr
        assert message(root) == "Completed: Job completed successfully with no violations."
        stats = read_json(local(root, "/opt/ml/processing/output/statistics.json"))
        assert stats["dataset"]["item_count"] == 200
        assert [f["name"] for f in stats["features"]] == ["churn", "calls", "minutes"]
        assert not list((base / "tmp").iterdir()), "the scratch folder is removed"
        if user is not None:  # the files are the unprivileged user's: it really ran as that user
            assert local(root, "/opt/ml/processing/output/statistics.json").stat().st_uid == NOBODY
    finally:
        for d in base.rglob("*"):
            if d.is_dir():
                d.chmod(0o755)
