"""Batch capture kept exact on real files and under corruption (issue "Exact on real files and under corruption")."""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from tests.conftest import QUOTED_CSV
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


def _gt_line(key: str, data: str = "1", encoding: str = "CSV") -> str:
    return json.dumps({"groundTruthData": {"data": data, "encoding": encoding}, "eventMetadata": {"eventId": key}})


def test_sagemaker_format_keeps_custom_attributes(tmp_path: Path, run_cli: Callable[..., Any]) -> None:
    # Item 20: eventMetadata.customAttributes of the capture is kept in SageMaker's merged record (when set).
    with_attrs = json.loads(QUOTED_CSV)
    with_attrs["eventMetadata"]["customAttributes"] = 'trace=abc; segment="gold"'
    without = json.loads(QUOTED_CSV)
    without["eventMetadata"].update(eventId="11111111-1111-4111-8111-111111111111", inferenceId="60")
    capture = tmp_path / "capture" / "ep" / "AllTraffic" / "2021" / "05" / "18" / "00" / "28-04-146-x.jsonl"
    capture.parent.mkdir(parents=True)
    capture.write_text(json.dumps(with_attrs) + "\n" + json.dumps(without) + "\n")
    truth = tmp_path / "gt" / "2021" / "05" / "18" / "01" / "labels.jsonl"
    truth.parent.mkdir(parents=True)
    truth.write_text(_gt_line("59") + "\n" + _gt_line("60", "0") + "\n")
    dest = tmp_path / "out"
    proc = run_cli(
        "merge",
        "--captures",
        str(tmp_path / "capture"),
        "--ground-truth",
        str(tmp_path / "gt"),
        str(dest),
        "--format",
        "sagemaker",
        "-q",
    )
    assert proc.returncode == 0, proc.stderr
    (path,) = (dest / "merge").rglob("*.jsonl")
    got = {r["eventMetadata"]["inferenceId"]: r for r in map(json.loads, path.read_text().splitlines())}
    assert got["59"]["eventMetadata"] == {
        "eventId": "09e668ab-172a-4ef1-9dc3-696d52879010",
        "inferenceId": "59",
        "inferenceTime": "2021-05-18T00:29:04Z",
        "customAttributes": 'trace=abc; segment="gold"',
    }
    assert "customAttributes" not in got["60"]["eventMetadata"]
    assert got["59"]["captureData"] == with_attrs["captureData"]
