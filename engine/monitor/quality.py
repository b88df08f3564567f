"""Model quality: the metrics Model Monitor lists per problem type, from merged predictions and labels, in one pass.

Everything is an additive state, so memory is bounded by classes and score bins, not by rows:

- Regression: counts and sums of y, y^2, |e| and e^2 (mae, mse, rmse, r2).
- Classification: the confusion matrix (outer key: ground truth, inner key: prediction, the orientation that
  reproduces the documentation's example) and, for binary problems with a probability, the scores of each
  class in 10,000 equal bins over [0, 1] for the ROC and precision-recall curves and the AUC.
- Standard deviations: the documentation's "randomly sampling 80% of the data 5 times", done while
  streaming: each row joins each of 5 resamples with probability 0.8 (seeded), and every resample keeps its
  own state. Given only when at least 200 rows were seen, else "NaN" as in the analyzer's files.

Best constant classifier (documented values reproduced): binary, always the positive class; multiclass,
always the most frequent true class.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from engine.errors import OptionsError

__all__ = [
    "ProblemType",
    "QualityOptions",
    "QualityState",
    "model_quality",
    "quality_constraints",
    "quality_statistics",
    "quality_violations",
]

ProblemType = Literal["BinaryClassification", "MulticlassClassification", "Regression"]
RESAMPLES = 5
SHARE = 0.8
MIN_FOR_STD = 200
_BINS = 10_000
_KEY = {
    "BinaryClassification": "binary_classification",
    "MulticlassClassification": "multiclass_classification",
    "Regression": "regression",
}
# Metrics where a lower value is better: their suggested constraint fires above the baseline value.
_LOWER_IS_BETTER = {"mae", "mse", "rmse", "false_positive_rate", "false_negative_rate"}


@dataclass(frozen=True, kw_only=True)
class QualityOptions:
    """Which columns hold what, as Model Monitor's model-quality job names them."""

    problem_type: ProblemType
    inference_attribute: str | None = None
    probability_attribute: str | None = None
    probability_threshold: float = 0.5
    ground_truth_attribute: str = "label"
    positive_label: str = "1"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.problem_type not in _KEY:
            raise OptionsError(f"problem type must be one of {', '.join(_KEY)}, got {self.problem_type!r}")
        if self.inference_attribute is None and self.probability_attribute is None:
            raise OptionsError("give the inference attribute, the probability attribute, or both")
        if self.problem_type != "BinaryClassification" and self.inference_attribute is None:
            raise OptionsError(f"{self.problem_type} needs the inference attribute")


@dataclass
class _Part:
    """The additive state of one sample (all rows, or one resample)."""

    n: int = 0
    sums: np.ndarray = field(default_factory=lambda: np.zeros(5))  # y, y^2, |e|, e^2, yhat (regression)
    confusion: dict[tuple[str, str], int] = field(default_factory=dict)
    hist: np.ndarray = field(default_factory=lambda: np.zeros((2, _BINS), dtype=np.int64))  # negatives, positives

    def merge(self, other: _Part) -> None:
        self.n += other.n
        self.sums += other.sums
        for pair, count in other.confusion.items():
            self.confusion[pair] = self.confusion.get(pair, 0) + count
        self.hist += other.hist


@dataclass
class QualityState:
    """The state of a model-quality pass: all rows, and each resample.

    `stream` picks the resamples' random stream (with the options' seed): states of parts of the data, each
    with a stream of its own, merge into the state of the whole.
    """

    options: QualityOptions
    whole: _Part = field(default_factory=_Part)
    resamples: list[_Part] = field(default_factory=lambda: [_Part() for _ in range(RESAMPLES)])
    has_scores: bool = False
    rng: np.random.Generator | None = None
    stream: int = 0

    def merge(self, other: QualityState) -> None:
        """Add the state of another part of the data."""
        self.whole.merge(other.whole)
        for mine, theirs in zip(self.resamples, other.resamples, strict=True):
            mine.merge(theirs)
        self.has_scores |= other.has_scores

    def add(self, batch: pa.RecordBatch | pa.Table) -> None:
        o = self.options
        if self.rng is None:
            self.rng = np.random.default_rng([o.seed, self.stream])
        truth_col = _column(batch, o.ground_truth_attribute)
        keep = _mask(pc.is_valid(truth_col))
        if o.problem_type == "Regression":
            y = _numbers(truth_col)
            yhat = _numbers(_column(batch, o.inference_attribute or ""))
            keep &= ~np.isnan(y) & ~np.isnan(yhat)
            y, yhat = y[keep], yhat[keep]
            member = self.rng.random((RESAMPLES, len(y))) < SHARE
            self._regression(self.whole, y, yhat)
            for part, m in zip(self.resamples, member, strict=True):
                self._regression(part, y[m], yhat[m])
            return
        truth = _labels(truth_col)
        scores = None
        if o.probability_attribute is not None:
            scores = _numbers(_column(batch, o.probability_attribute))
            keep &= ~np.isnan(scores)
            self.has_scores = True
        if o.inference_attribute is not None:
            pred_col = _column(batch, o.inference_attribute)
            keep &= _mask(pc.is_valid(pred_col))
            pred = _labels(pred_col)
        else:
            assert scores is not None
            pred = pc.if_else(pa.array(scores >= o.probability_threshold), o.positive_label, "0")
        rows = pa.array(keep)
        truth, pred = truth.filter(rows), pred.filter(rows)
        scores = scores[keep] if scores is not None else None
        # The (truth, prediction) pairs as codes of their distinct values: one hash pass, then counting.
        pairs = pc.dictionary_encode(pc.binary_join_element_wise(truth, pred, "\x1f"))
        codes = np.asarray(pairs.indices.to_numpy(zero_copy_only=False), dtype=np.int64)
        names = [tuple(p.split("\x1f", 1)) for p in pairs.dictionary.to_pylist()]
        positive = _mask(pc.equal(truth, o.positive_label))
        member = self.rng.random((RESAMPLES, len(codes))) < SHARE
        self._classes(self.whole, codes, names, positive, scores)
        for part, m in zip(self.resamples, member, strict=True):
            self._classes(part, codes[m], names, positive[m], scores[m] if scores is not None else None)

    @staticmethod
    def _regression(part: _Part, y: np.ndarray, yhat: np.ndarray) -> None:
        e = yhat - y
        part.n += len(y)
        part.sums += np.array(
            [y.sum(), np.einsum("i,i->", y, y), np.abs(e).sum(), np.einsum("i,i->", e, e), yhat.sum()]
        )

    @staticmethod
    def _classes(
        part: _Part, codes: np.ndarray, names: list[tuple[str, ...]], positive: np.ndarray, scores: np.ndarray | None
    ) -> None:
        part.n += len(codes)
        for (t, p), c in zip(names, np.bincount(codes, minlength=len(names)).tolist(), strict=True):
            if c:
                part.confusion[(t, p)] = part.confusion.get((t, p), 0) + int(c)
        if scores is not None and len(scores):
            bins = np.clip((scores * _BINS).astype(np.int64), 0, _BINS - 1)
            part.hist[0] += np.bincount(bins[~positive], minlength=_BINS)
            part.hist[1] += np.bincount(bins[positive], minlength=_BINS)


def _column(batch: pa.RecordBatch | pa.Table, name: str) -> pa.Array:
    if name not in batch.schema.names:
        raise OptionsError(f"no column {name!r} in the merged data (columns: {', '.join(batch.schema.names)})")
    col = batch.column(name)
    return col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col


def _mask(a: pa.Array | pa.ChunkedArray) -> np.ndarray:
    return np.asarray(pc.fill_null(a, False).to_numpy(zero_copy_only=False), dtype=bool)


def _numbers(col: pa.Array) -> np.ndarray:
    if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
        col = pc.cast(pc.utf8_trim_whitespace(col), pa.float64(), safe=False)  # non-numbers fail below
    values = col.cast(pa.float64())
    return np.asarray(values.fill_null(np.nan).to_numpy(zero_copy_only=False), dtype=np.float64)


def _labels(col: pa.Array) -> pa.Array:
    """Class labels as text; a whole number is its digits (1.0 and "1" are the same class)."""
    if pa.types.is_floating(col.type):
        whole = pc.and_(pc.is_finite(col), pc.equal(col, pc.floor(col)))
        digits = pc.cast(pc.cast(pc.if_else(whole, col, 0.0), pa.int64(), safe=False), pa.string())
        return pc.if_else(whole, digits, pc.cast(col, pa.string()))
    return pc.utf8_trim_whitespace(pc.cast(col, pa.string()))


# --- metrics -----------------------------------------------------------------------------------------------


def _fbeta(p: float, r: float, beta: float) -> float:
    b2 = beta * beta
    return (1 + b2) * p * r / (b2 * p + r) if (b2 * p + r) else 0.0


def _div(a: float, b: float) -> float:
    return a / b if b else 0.0


def _regression_metrics(part: _Part) -> dict[str, float]:
    n = part.n
    if not n:
        return {}
    sy, sy2, sae, sse, _ = part.sums.tolist()
    mse = sse / n
    var = sy2 - sy * sy / n
    return {"mae": sae / n, "mse": mse, "rmse": math.sqrt(mse), "r2": 1 - sse / var if var else float("nan")}


def _binary_metrics(part: _Part, positive: str) -> dict[str, float]:
    cm = part.confusion
    tp = sum(c for (t, p), c in cm.items() if t == positive and p == positive)
    fp = sum(c for (t, p), c in cm.items() if t != positive and p == positive)
    fn = sum(c for (t, p), c in cm.items() if t == positive and p != positive)
    tn = sum(c for (t, p), c in cm.items() if t != positive and p != positive)
    n = tp + fp + fn + tn
    precision, recall = _div(tp, tp + fp), _div(tp, tp + fn)
    pos = _div(tp + fn, n)  # always-positive: precision = positive share, recall = 1
    return {
        "recall": recall,
        "precision": precision,
        "accuracy": _div(tp + tn, n),
        "recall_best_constant_classifier": 1.0 if tp + fn else 0.0,
        "precision_best_constant_classifier": pos,
        "accuracy_best_constant_classifier": pos,
        "true_positive_rate": recall,
        "true_negative_rate": _div(tn, tn + fp),
        "false_positive_rate": _div(fp, fp + tn),
        "false_negative_rate": _div(fn, fn + tp),
        "f0_5": _fbeta(precision, recall, 0.5),
        "f1": _fbeta(precision, recall, 1.0),
        "f2": _fbeta(precision, recall, 2.0),
        "f0_5_best_constant_classifier": _fbeta(pos, 1.0, 0.5) if tp + fn else 0.0,
        "f1_best_constant_classifier": _fbeta(pos, 1.0, 1.0) if tp + fn else 0.0,
        "f2_best_constant_classifier": _fbeta(pos, 1.0, 2.0) if tp + fn else 0.0,
    }


def _auc(part: _Part) -> float:
    fpr, tpr = _roc(part)
    return float(np.trapezoid(tpr, fpr)) if len(fpr) > 1 else float("nan")


def _roc(part: _Part) -> tuple[np.ndarray, np.ndarray]:
    neg, pos = part.hist[0][::-1].cumsum(), part.hist[1][::-1].cumsum()  # counts with score >= each bin, high first
    if not neg[-1] or not pos[-1]:
        return np.array([0.0]), np.array([0.0])
    return np.concatenate([[0.0], neg / neg[-1]]), np.concatenate([[0.0], pos / pos[-1]])


def _pr(part: _Part) -> tuple[np.ndarray, np.ndarray]:
    neg, pos = part.hist[0][::-1].cumsum(), part.hist[1][::-1].cumsum()
    called = neg + pos
    keep = called > 0
    precision = np.where(keep, pos / np.maximum(called, 1), 1.0)
    recall = pos / pos[-1] if pos[-1] else np.zeros_like(pos, dtype=np.float64)
    return precision[keep], recall[keep]


def _multiclass_metrics(part: _Part) -> dict[str, float]:
    cm = part.confusion
    classes = sorted({t for t, _ in cm} | {p for _, p in cm})
    n = sum(cm.values())
    support = {c: sum(v for (t, _), v in cm.items() if t == c) for c in classes}
    out: dict[str, float] = {"accuracy": _div(sum(v for (t, p), v in cm.items() if t == p), n)}
    for beta_name, beta in (("recall", None), ("precision", None), ("f0_5", 0.5), ("f1", 1.0), ("f2", 2.0)):
        total = 0.0
        for c in classes:
            tp = cm.get((c, c), 0)
            predicted = sum(v for (_, p), v in cm.items() if p == c)
            p_c, r_c = _div(tp, predicted), _div(tp, support[c])
            value = r_c if beta_name == "recall" else p_c if beta_name == "precision" else _fbeta(p_c, r_c, beta or 1.0)
            total += value * support[c]
        out[f"weighted_{beta_name}"] = _div(total, n)
    top = max(classes, key=lambda c: support[c]) if classes else None
    share = _div(support[top], n) if top is not None else 0.0
    # Always the most frequent class: its recall 1, precision = its share; weighted over the true classes.
    out["accuracy_best_constant_classifier"] = share
    out["weighted_recall_best_constant_classifier"] = share
    out["weighted_precision_best_constant_classifier"] = share * share
    for name, beta in (("f0_5", 0.5), ("f1", 1.0), ("f2", 2.0)):
        out[f"weighted_{name}_best_constant_classifier"] = share * _fbeta(share, 1.0, beta)
    return out


def _confusion_doc(part: _Part) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for (t, p), c in sorted(part.confusion.items()):
        out.setdefault(t, {})[p] = c
    return out


def _metrics(state: QualityState, part: _Part) -> dict[str, float]:
    o = state.options
    if o.problem_type == "Regression":
        return _regression_metrics(part)
    if o.problem_type == "BinaryClassification":
        m = _binary_metrics(part, o.positive_label)
        if state.has_scores:
            m["auc"] = _auc(part)
        return m
    return _multiclass_metrics(part)


def quality_statistics(state: QualityState, *, evaluation_time: datetime | None = None) -> dict[str, Any]:
    """The model-quality statistics document: ``{"version", "dataset", "<problem>_metrics"}``."""
    whole = _metrics(state, state.whole)
    spread = [_metrics(state, p) for p in state.resamples]
    metrics: dict[str, Any] = {}
    for name, value in whole.items():
        std: float | str = "NaN"
        if state.whole.n >= MIN_FOR_STD:
            values = [s[name] for s in spread if name in s and not math.isnan(s[name])]
            std = float(np.std(values)) if len(values) == RESAMPLES else "NaN"
        # NaN (an r2 of constant labels, an AUC of one class) is written "NaN", as the analyzer writes it.
        metrics[name] = {"value": "NaN" if math.isnan(value) else value, "standard_deviation": std}
    if state.options.problem_type != "Regression":
        metrics["confusion_matrix"] = _confusion_doc(state.whole)
    if state.options.problem_type == "BinaryClassification" and state.has_scores:
        fpr, tpr = _roc(state.whole)
        precision, recall = _pr(state.whole)
        step = max(1, len(fpr) // 200)  # curves thinned to about 200 points: plots, not rows
        metrics["receiver_operating_characteristic_curve"] = {
            "false_positive_rates": fpr[::step].tolist(),
            "true_positive_rates": tpr[::step].tolist(),
        }
        metrics["precision_recall_curve"] = {
            "precisions": precision[::step].tolist(),
            "recalls": recall[::step].tolist(),
        }
    when = (evaluation_time or datetime.now(timezone.utc)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return {
        "version": 0.0,
        "dataset": {"item_count": state.whole.n, "evaluation_time": when},
        f"{_KEY[state.options.problem_type]}_metrics": metrics,
    }


def quality_constraints(statistics: dict[str, Any]) -> dict[str, Any]:
    """Suggested constraints: each scalar metric's baseline value as a threshold, in the better direction."""
    key = next(k for k in statistics if k.endswith("_metrics"))
    problem = key.removesuffix("_metrics")
    out: dict[str, Any] = {}
    for name, metric in statistics[key].items():
        if not isinstance(metric, dict) or "value" not in metric or name.endswith("_best_constant_classifier"):
            continue
        if not isinstance(metric["value"], float) or math.isnan(metric["value"]):
            continue  # "NaN": no threshold to suggest
        op = "GreaterThanThreshold" if name in _LOWER_IS_BETTER else "LessThanThreshold"
        out[name] = {"threshold": metric["value"], "comparison_operator": op}
    return {"version": 0.0, f"{problem}_constraints": out}


def quality_violations(statistics: dict[str, Any], constraints: dict[str, Any]) -> dict[str, Any]:
    """Violations of a window's metrics against constraints (``metric_name``, the operator, a description)."""
    key = next(k for k in statistics if k.endswith("_metrics"))
    wanted = constraints.get(f"{key.removesuffix('_metrics')}_constraints", {})
    out = []
    for name, rule in wanted.items():
        metric = statistics[key].get(name)
        if not isinstance(metric, dict):
            continue
        value, threshold, op = float(metric["value"]), float(rule["threshold"]), rule["comparison_operator"]
        if math.isnan(value):
            continue  # no value this window (one class only): nothing to compare
        broken = {
            "GreaterThanThreshold": value > threshold,
            "GreaterThanOrEqualToThreshold": value >= threshold,
            "LessThanThreshold": value < threshold,
            "LessThanOrEqualToThreshold": value <= threshold,
        }.get(op)
        if broken is None:
            raise OptionsError(f"unknown comparison_operator {op!r} for {name}")
        if broken:
            out.append(
                {
                    "metric_name": name,
                    "constraint_check_type": op,
                    "description": f"Metric {name} with {value!r} was {op} {threshold!r}",
                }
            )
    return {"violations": out}


def model_quality(batches: Iterable[pa.RecordBatch], options: QualityOptions) -> QualityState:
    """One pass of model-quality state over merged batches."""
    state = QualityState(options)
    for batch in batches:
        state.add(batch)
    return state
