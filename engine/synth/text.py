"""Feature text: CSV, JSON and JSON Lines payloads built in bulk from a fixed vocabulary of tokens (numpy gathers)."""

from __future__ import annotations

import logging
import math
from functools import lru_cache
from typing import Final, NamedTuple

import numpy as np
from numpy.typing import NDArray

from engine.synth.options import JSON_FEATURES

logger = logging.getLogger(__name__)

# --- feature text -----------------------------------------------------------------------------------------
#
# Every value printed is drawn from a fixed vocabulary of tokens (small integers, floats with one or two
# decimals), so a row of token ids can be rendered by gathering fixed-width byte rows from a table and
# dropping the zero padding: no per-value Python formatting.

_INT_N: Final = 1000
_FLOAT_INT_BASE: Final = _INT_N  # the same integers printed as floats ("39.0") for JSON features
_D1_BASE: Final = 2 * _INT_N
_D1_N: Final = 4000  # 0.0 .. 399.9
_D2_BASE: Final = _D1_BASE + _D1_N
_D2_N: Final = 8000  # 0.0 .. 79.99


@lru_cache(maxsize=1)
def _tokens() -> tuple[str, ...]:
    """The vocabulary, in Python's shortest float repr (k / 10 round-trips to its one-decimal string)."""
    ints = [str(v) for v in range(_INT_N)]
    float_ints = [repr(float(v)) for v in range(_INT_N)]
    tenths = [repr(k / 10) for k in range(_D1_N)]
    hundredths = [repr(k / 100) for k in range(_D2_N)]
    return (*ints, *float_ints, *tenths, *hundredths)


@lru_cache(maxsize=2)
def _token_table(terminator: bytes) -> NDArray[np.uint8]:
    """Token i as bytes + terminator, zero-padded to a common width, one row per token."""
    encoded = [t.encode("ascii") + terminator for t in _tokens()]
    width = max(map(len, encoded))
    return np.array(encoded, dtype=f"S{width}").view(np.uint8).reshape(len(encoded), width)


def _render_rows(ids: NDArray[np.int32]) -> list[str]:
    """Renders each row of token ids as comma-separated text."""
    rows = ids.shape[0]
    if rows == 0:
        return []
    body = _token_table(b",")[ids[:, :-1]].reshape(rows, -1)
    last = _token_table(b"\n")[ids[:, -1]]
    flat = np.concatenate((body, last), axis=1).ravel()
    text: str = flat[flat != 0].tobytes().decode("ascii")
    return text.split("\n")[:-1]


class _Column(NamedTuple):
    """One numeric churn column: how it is drawn and at which resolution it is printed."""

    kind: str  # "int" | "vmail" | "poisson" | "minutes" | "charge"
    mean: float
    sd: float = 0.0
    lo: float = 0.0
    hi: float = 0.0
    risk: float = 0.0  # correlation with the latent churn risk, so predictions and labels relate to features


# The numeric columns of the churn data set; charges are minutes times a tariff, as in the original data.
_CHURN_COLUMNS: Final = (
    _Column("int", 101.0, 40.0, 1, 243),  # account length
    _Column("vmail", 29.0, 8.0, 1, 51),  # voice-mail messages; most customers have none
    _Column("minutes", 180.0, 54.0, 0.0, 350.8, risk=0.5),  # day minutes
    _Column("int", 100.0, 20.0, 0, 165),  # day calls
    _Column("charge", 0.17),  # day charge
    _Column("minutes", 201.0, 51.0, 0.0, 363.7, risk=0.2),  # evening minutes
    _Column("int", 100.0, 20.0, 0, 170),  # evening calls
    _Column("charge", 0.085),  # evening charge
    _Column("minutes", 201.0, 51.0, 23.2, 395.0),  # night minutes
    _Column("int", 100.0, 20.0, 33, 175),  # night calls
    _Column("charge", 0.045),  # night charge
    _Column("minutes", 10.2, 2.8, 0.0, 20.0),  # international minutes
    _Column("poisson", 4.5, 0.0, 0, 20),  # international calls
    _Column("charge", 0.27),  # international charge
    _Column("poisson", 1.56, 0.0, 0, 9, risk=0.4),  # customer-service calls
)
# One-hot groups after the numeric columns: state, area code, international plan, voice-mail plan.
_CHURN_GROUPS: Final[tuple[tuple[int, tuple[float, ...] | None], ...]] = (
    (51, None),
    (3, (0.25, 0.5, 0.25)),
    (2, (0.9, 0.1)),
    (2, (0.72, 0.28)),
)
_MIN_NUMERIC: Final = 11  # the churn example: 11 numeric columns + 58 dummies = 69 features


def _csv_layout(features: int) -> tuple[int, tuple[tuple[int, tuple[float, ...] | None], ...]]:
    """Numeric column count and one-hot groups for ``features`` columns (69 gives the churn layout)."""
    left = features - min(features, _MIN_NUMERIC)
    groups = []
    for size, probs in _CHURN_GROUPS:
        if size <= left:
            groups.append((size, probs))
            left -= size
    return features - sum(size for size, _ in groups), tuple(groups)


def _numeric_ids(
    rng: np.random.Generator, risk: NDArray[np.float64], count: int, *, as_float: bool
) -> NDArray[np.int32]:
    """Token ids of ``count`` numeric churn columns (cycling the template) for each record."""
    rows = len(risk)
    out = np.empty((rows, count), dtype=np.int32)
    int_base = _FLOAT_INT_BASE if as_float else 0
    tenths = np.zeros(rows, dtype=np.int64)
    for j in range(count):
        col = _CHURN_COLUMNS[j % len(_CHURN_COLUMNS)]
        if col.kind == "charge":
            # Charge in cents = minutes (in tenths) * tariff * 10, like the data set's exact tariffs.
            out[:, j] = _D2_BASE + np.minimum(np.rint(tenths * (col.mean * 10)), _D2_N - 1)
            continue
        if col.kind == "poisson":
            lam = col.mean * np.exp(col.risk * risk - col.risk**2 / 2)
            out[:, j] = int_base + np.clip(rng.poisson(lam), col.lo, col.hi)
            continue
        noise = rng.standard_normal(rows)
        drawn = col.mean + col.sd * (col.risk * risk + math.sqrt(1 - col.risk**2) * noise)
        if col.kind == "minutes":
            tenths = np.clip(np.rint(drawn * 10), round(col.lo * 10), round(col.hi * 10)).astype(np.int64)
            out[:, j] = _D1_BASE + tenths
        else:
            values = np.clip(np.rint(drawn), col.lo, col.hi)
            if col.kind == "vmail":
                values = np.where(rng.random(rows) < 0.72, 0, values)
            out[:, j] = int_base + values
    return out


def _csv_ids(
    rng: np.random.Generator,
    risk: NDArray[np.float64],
    numeric: int,
    groups: tuple[tuple[int, tuple[float, ...] | None], ...],
) -> NDArray[np.int32]:
    """Token ids of full churn CSV rows: numeric columns, then 0/1 one-hot groups."""
    rows = len(risk)
    parts = [_numeric_ids(rng, risk, numeric, as_float=False)]
    for size, probs in groups:
        pick = rng.choice(size, size=rows, p=probs) if probs else rng.integers(0, size, size=rows)
        onehot = np.zeros((rows, size), dtype=np.int32)  # token 0 is "0", token 1 is "1"
        onehot[np.arange(rows), pick] = 1
        parts.append(onehot)
    return np.concatenate(parts, axis=1)


def _predictions(rng: np.random.Generator, risk: NDArray[np.float64]) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    """Model scores and true 0/1 labels for each record; higher risk means both are more often 1."""
    logit = -2.0 + 1.4 * risk  # roughly the churn base rate of ~14%
    truth = (rng.random(len(risk)) < 1 / (1 + np.exp(-logit))).astype(np.int64)
    # The model sees the risk through noise, so its quality metrics are good but not perfect.
    score = 1 / (1 + np.exp(-(logit + 0.6 * rng.standard_normal(len(risk)))))
    # Clipped so no score prints in exponent notation or rounds to exactly 0 or 1.
    return np.clip(score, 5e-4, 1 - 5e-4), truth


_CSV, _JSON, _JSONL = 0, 1, 2  # payload kinds; JSON is {"instances": ...}, JSONL is JSON Lines


class _Pool(NamedTuple):
    """Rendered payload records of one kind for a batch, consumed in order by the events."""

    rows: list[str]  # feature text of each record, comma-separated
    scores: list[str]  # the model's score for each record, as printed
    truth: list[int]  # the true 0/1 label of each record


def _float32_text(scores: NDArray[np.float64]) -> list[str]:
    """Scores as XGBoost prints them: float32 values widened to double ("0.036397725343704224")."""
    return [repr(s) for s in scores.astype(np.float32).astype(np.float64).tolist()]


def _churn_pool(
    rng: np.random.Generator, count: int, numeric: int, groups: tuple[tuple[int, tuple[float, ...] | None], ...]
) -> _Pool:
    """Records of churn CSV rows (``numeric`` columns, then the one-hot ``groups``), float32 probabilities."""
    risk = rng.standard_normal(count)
    rows = _render_rows(_csv_ids(rng, risk, numeric, groups))
    scores, truth = _predictions(rng, risk)
    return _Pool(rows, _float32_text(scores), truth.tolist())


def _json_pool(rng: np.random.Generator, count: int) -> _Pool:
    """Records of ``{"instances": [{"features": [...]}]}`` bodies: 14 float features."""
    risk = rng.standard_normal(count)
    rows = _render_rows(_numeric_ids(rng, risk, JSON_FEATURES, as_float=True))
    scores, truth = _predictions(rng, risk)
    return _Pool(rows, _float32_text(scores), truth.tolist())


def _jsonl_pool(rng: np.random.Generator, count: int) -> _Pool:
    """Records of JSON Lines bodies: 14 integer adult-census features, scores with 15 significant digits."""
    risk = rng.standard_normal(count)
    features = _adult_features(rng, risk)
    rows = [",".join(map(str, row)) for row in features.tolist()]
    scores, truth = _predictions(rng, risk)
    # Like the linear-learner example's output ("0.989977359771728"); repr(float(..)) drops trailing zeros.
    return _Pool(rows, [repr(float(f"{s:.15g}")) for s in scores.tolist()], truth.tolist())


def _adult_features(rng: np.random.Generator, risk: NDArray[np.float64]) -> NDArray[np.int64]:
    """Label-encoded adult-census rows: age, workclass, fnlwgt, education, ..., hours-per-week, country."""
    rows = len(risk)
    cols = [
        np.clip(np.rint(38.6 + 13.6 * (0.4 * risk + 0.92 * rng.standard_normal(rows))), 17, 90),  # age
        rng.integers(0, 9, size=rows),  # workclass
        np.clip(np.rint(rng.lognormal(12.0, 0.55, size=rows)), 12_285, 1_484_705),  # fnlwgt
        rng.integers(0, 16, size=rows),  # education
        np.clip(np.rint(10.1 + 2.6 * (0.5 * risk + 0.87 * rng.standard_normal(rows))), 1, 16),  # education-num
        rng.integers(0, 7, size=rows),  # marital status
        rng.integers(0, 15, size=rows),  # occupation
        rng.integers(0, 6, size=rows),  # relationship
        rng.choice(5, size=rows, p=(0.01, 0.03, 0.1, 0.01, 0.85)),  # race
        (rng.random(rows) < 0.67).astype(np.int64),  # sex
        np.where(rng.random(rows) < 0.92, 0, rng.integers(114, 99_999, size=rows)),  # capital gain
        np.where(rng.random(rows) < 0.95, 0, rng.integers(155, 4_356, size=rows)),  # capital loss
        np.clip(np.rint(40.4 + 12.3 * rng.standard_normal(rows)), 1, 99),  # hours per week
        np.where(rng.random(rows) < 0.9, 37, rng.integers(0, 41, size=rows)),  # native country
    ]
    return np.stack(cols, axis=1).astype(np.int64)


_HEX: Final = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
_UUID_SLOTS: Final = ((0, 8, 0), (9, 13, 8), (14, 18, 12), (19, 23, 16), (24, 36, 20))


def _uuid4s(rng: np.random.Generator, count: int) -> list[str]:
    """``count`` random (version 4) UUID strings drawn from ``rng`` instead of the OS entropy pool."""
    raw = rng.integers(0, 256, size=(count, 16), dtype=np.uint8)
    raw[:, 6] = (raw[:, 6] & 0x0F) | 0x40
    raw[:, 8] = (raw[:, 8] & 0x3F) | 0x80
    nibbles = np.empty((count, 32), dtype=np.uint8)
    nibbles[:, 0::2] = raw >> 4
    nibbles[:, 1::2] = raw & 0x0F
    digits = _HEX[nibbles]
    text = np.full((count, 36), ord("-"), dtype=np.uint8)
    for lo, hi, src in _UUID_SLOTS:
        text[:, lo:hi] = digits[:, src : src + hi - lo]
    joined = text.tobytes().decode("ascii")
    return [joined[i : i + 36] for i in range(0, 36 * count, 36)]


_MMSS: Final = tuple(f"{s // 60:02d}:{s % 60:02d}" for s in range(3600))
