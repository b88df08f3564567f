"""Batch capture kept exact on real files and under corruption (issue "Exact on real files and under corruption")."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import polars as pl
import pytest

from tests.test_batch import HOUR, ID, Tree

T_TEXT = "2022-08-30T00:49:15Z"


@pytest.fixture
def tree(tmp_path: Path) -> Tree:
    return Tree(tmp_path)


@pytest.mark.parametrize("name", ["m.json", "m.jsonl"])
def test_manifest_with_utf8_bom_is_read(tree: Tree, name: str) -> None:
    # Item 18: a manifest written by an editor or a Windows tool may start with a UTF-8 BOM.
    tree.file(tree.inputs, "a.csv", "1,2\n3,4\n")
    tree.file(tree.outputs, "a.csv.out", f"0,{ID},{T_TEXT}\n1,{ID},{T_TEXT}\n")
    bom = b"\xef\xbb\xbf"
    tree.file(
        tree.capture / "input" / HOUR, "in-" + name, bom + json.dumps([{"prefix": f"{tree.inputs}/"}, "a.csv"]).encode()
    )
    tree.file(
        tree.capture / "output" / HOUR, name, bom + json.dumps([{"prefix": f"{tree.outputs}/"}, "a.csv.out"]).encode()
    )
    report, rows, rejects = tree.run()
    assert rejects.height == 0, rejects.to_dicts()
    assert rows.select("line", "input_data", "output_data").rows() == [(1, "1,2", "0"), (2, "3,4", "1")]
    assert rows["manifest_file"].to_list() == [f"file://{tree.capture}/output/{HOUR}/{name}"] * 2
    assert report.records == 2 and report.events_written == 2
