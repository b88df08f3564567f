"""The monitoring benchmark's peers: what a team would run instead of Model Monitor, written as a user would.

    python -m benchmarks.monitor_peers TOOL JOB DATA OUT

TOOL is ``pandas-scipy`` (pandas statistics, ``scipy.stats.ks_2samp`` per numeric feature, category shares;
scikit-learn for model quality), ``whylogs`` (``why.log`` profiles of the window; for model quality
``log_classification_metrics``) or ``evidently`` (a ``DataDriftPreset`` report of the window against the
baseline; for model quality a ``ClassificationPreset`` report). JOB is ``data-quality`` or ``model-quality``;
DATA is the folder ``benchmarks.monitor_bench`` generated. Each writes ``OUT/summary.json`` with what it
computed where it overlaps with the engine (per feature: mean, std, KS drift statistic; model metrics), so the
benchmark can check that the tools agree.

Deliberately plain: a user reads the window into pandas (``pd.read_parquet``), then calls the library. This
module imports only what the chosen tool needs, so it runs in a venv holding just that tool.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

__all__ = ["main"]


def _read(data: Path, name: str) -> Any:
    import pandas as pd

    return pd.read_parquet(data / name)


def _features(frame: Any) -> list[str]:
    return [c for c in frame.columns if c.startswith(("f", "c")) and c[1:].isdigit()]


def _pandas_scipy_dq(data: Path) -> dict[str, Any]:
    import numpy as np
    from scipy.stats import ks_2samp

    base, window = _read(data, "baseline.parquet"), _read(data, "window")
    out: dict[str, Any] = {}
    for name in _features(window):
        col, ref = window[name], base[name]
        entry: dict[str, Any] = {"missing": int(col.isna().sum())}
        if col.dtype.kind in "fi":
            values, ref_values = col.dropna().to_numpy(), ref.dropna().to_numpy()
            entry.update(
                mean=float(values.mean()),
                std=float(values.std()),
                min=float(values.min()),
                max=float(values.max()),
                quantiles=np.quantile(values, [0.25, 0.5, 0.75]).tolist(),
                drift=float(ks_2samp(ref_values, values).statistic),
            )
        else:
            p = col.value_counts(normalize=True)
            q = ref.value_counts(normalize=True)
            entry.update(distinct=int(col.nunique()), drift=float(p.sub(q, fill_value=0).abs().max()))
        out[name] = entry
    return {"features": out}


def _pandas_sklearn_mq(data: Path) -> dict[str, Any]:
    from sklearn import metrics

    frame = _read(data, "merged")
    y, pred, score = frame["label"], frame["prediction"], frame["score"]
    return {
        "metrics": {
            "accuracy": float(metrics.accuracy_score(y, pred)),
            "precision": float(metrics.precision_score(y, pred)),
            "recall": float(metrics.recall_score(y, pred)),
            "f1": float(metrics.f1_score(y, pred)),
            "auc": float(metrics.roc_auc_score(y, score)),
        },
        "confusion_matrix": metrics.confusion_matrix(y, pred).tolist(),
    }


def _whylogs_dq(data: Path) -> dict[str, Any]:
    import whylogs as why

    window = _read(data, "window")
    view = why.log(window[_features(window)]).view()
    summary = view.to_pandas()
    out: dict[str, Any] = {}
    for name in _features(window):
        row = summary.loc[name]
        entry: dict[str, Any] = {"missing": int(row.get("counts/null", 0))}
        if "distribution/mean" in row and row["distribution/mean"] == row["distribution/mean"]:
            entry.update(mean=float(row["distribution/mean"]), std_sample=float(row["distribution/stddev"]))
        out[name] = entry
    return {"features": out}


def _whylogs_mq(data: Path) -> dict[str, Any]:
    import whylogs as why

    frame = _read(data, "merged")
    results = why.log_classification_metrics(
        frame, target_column="label", prediction_column="prediction", score_column="score"
    )
    cm = results.performance_metrics.confusion_matrix
    return {"confusion_labels": [str(x) for x in cm.labels]}


def _evidently_dq(data: Path) -> dict[str, Any]:
    from evidently import Report
    from evidently.presets import DataDriftPreset

    base, window = _read(data, "baseline.parquet"), _read(data, "window")
    names = _features(window)
    snapshot = Report([DataDriftPreset()]).run(current_data=window[names], reference_data=base[names])
    out: dict[str, Any] = {}
    for metric in snapshot.dict()["metrics"]:
        # ValueDrift(column=f0,...): the column's drift score (Wasserstein / Jensen-Shannon above 1,000 rows).
        found = re.search(r"column=([^,)]+)", str(metric.get("metric_id", metric.get("metric_name", ""))))
        value = metric.get("value")
        if found and found.group(1) in names and isinstance(value, (int, float)):
            out[found.group(1)] = {"drift_score": float(value)}
    return {"features": out}


def _evidently_mq(data: Path) -> dict[str, Any]:
    from evidently import BinaryClassification, DataDefinition, Dataset, Report
    from evidently.presets import ClassificationPreset

    frame = _read(data, "merged")[["label", "prediction", "score"]]
    definition = DataDefinition(
        classification=[BinaryClassification(target="label", prediction_labels="prediction")],
    )
    dataset = Dataset.from_pandas(frame, data_definition=definition)
    snapshot = Report([ClassificationPreset()]).run(current_data=dataset)
    out: dict[str, Any] = {}
    for metric in snapshot.dict()["metrics"]:
        name = str(metric.get("metric_name", ""))
        value = metric.get("value")
        if isinstance(value, (int, float)):
            out[name] = float(value)
    return {"metrics": out}


_JOBS = {
    ("pandas-scipy", "data-quality"): _pandas_scipy_dq,
    ("pandas-scipy", "model-quality"): _pandas_sklearn_mq,
    ("whylogs", "data-quality"): _whylogs_dq,
    ("whylogs", "model-quality"): _whylogs_mq,
    ("evidently", "data-quality"): _evidently_dq,
    ("evidently", "model-quality"): _evidently_mq,
}


def main(argv: list[str] | None = None) -> int:
    tool, job, data, out = argv if argv is not None else sys.argv[1:]
    summary = _JOBS[(tool, job)](Path(data))
    Path(out).mkdir(parents=True, exist_ok=True)
    (Path(out) / "summary.json").write_text(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
