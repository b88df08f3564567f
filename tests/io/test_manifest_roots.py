"""Manifests come from outside: every object they name must lie under an allowed root (issue: manifest prefixes)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.jobs.test_batch import ID, Tree


@pytest.fixture
def tree(tmp_path: Path) -> Tree:
    return Tree(tmp_path / "job")


@pytest.fixture
def elsewhere(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("elsewhere")
    (folder / "secrets.csv.out").write_text(f"hunter2,{ID},2022-08-30T00:49:15Z\n")
    return folder


@pytest.mark.parametrize("form", ["url", "path", "dotdot"])
def test_a_prefix_outside_the_capture_area_is_refused(tree: Tree, elsewhere: Path, form: str) -> None:
    prefix = {
        "url": f"file://{elsewhere}/",
        "path": f"{elsewhere}/",
        "dotdot": f"{tree.outputs}/{'../' * len(tree.outputs.parts)}{str(elsewhere).lstrip('/')}/",
    }[form]
    tree.manifest("output", [{"prefix": prefix}, "secrets.csv.out"])
    report, rows, rejects = tree.run()
    assert rows.height == 0
    assert rejects["reason"].to_list() == ["outside_allowed_root"]
    assert "hunter2" not in str(rejects.to_dicts())
    assert report.balanced


def test_a_prefix_map_target_is_allowed(tree: Tree, elsewhere: Path) -> None:
    tree.manifest("output", [{"prefix": "s3://bucket/out/"}, "secrets.csv.out"])
    _, rows, rejects = tree.run(prefix_map={"s3://bucket/out/": f"{elsewhere}/"})
    assert rejects.height == 0
    assert rows.height == 1


def test_objects_beside_the_capture_root_are_allowed(tree: Tree) -> None:
    tree.job({"a.csv": ("1,2\n", f"0.5,{ID},2022-08-30T00:49:15Z\n")})
    _, rows, rejects = tree.run()
    assert rejects.height == 0 and rows.height == 1
