"""The policy of a run's end (`verdict`), on its own: what the reject limit and `require_data` decide."""

from __future__ import annotations

import pytest

from engine.jobs.run import verdict
from engine.options import RealtimeOptions
from engine.report import RunReport


def _report(records: int, rejected: int) -> RunReport:
    return RunReport(command="realtime", source="s", dest="d", options={}, records=records, rejected=rejected)


@pytest.mark.parametrize(
    ("records", "rejected", "max_ratio", "require", "expected"),
    [
        (100, 1, 0.01, False, "commit"),  # at the limit: not above it
        (100, 2, 0.01, False, "reject_limit"),
        (100, 100, 1.0, False, "commit"),  # a limit of 1 never fails
        (1, 1, 0.0, True, "reject_limit"),  # the reject limit comes first
        (0, 0, 0.0, False, "commit"),  # an empty window commits (an empty report)
        (0, 0, 0.0, True, "no_data"),
    ],
)
def test_verdict(records: int, rejected: int, max_ratio: float, require: bool, expected: str) -> None:
    options = RealtimeOptions(max_reject_ratio=max_ratio, require_data=require)
    assert verdict(_report(records, rejected), options) == expected
