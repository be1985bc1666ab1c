"""What an operator looks at to decide whether to trust a fitted CLV model. Pure.

Four checks, each computed in closed form from the BG/NBD parameters (no simulation, so the
same data always gives the same figures and tests can compare them with another
implementation):

- holdout: fitted on a calibration period only, the model's expected repeat purchases in
  the holdout period against the actual ones, per bucket of calibration frequency;
- period transactions: how many buyers made 0, 1, 2, ... repeat purchases over their own
  age, against the model's expected count of buyers for each;
- the expected-purchases and P(alive) matrices over (frequency, recency);
- drift: how far each parameter moved from the previous published model.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import orjson
from numpy.typing import ArrayLike, NDArray

from stream.clv import model as clv
from stream.clv.split import CalibrationHoldout
from stream.core.changes import iso_ms

BUCKETS = 7  # calibration frequencies 0 .. 5 one by one, then 6 and more together
HISTOGRAM = 8  # repeat purchases 0 .. 6 one by one, then 7 and more together
MATRIX_FREQUENCIES = 30  # at most 0 .. 30 repeat purchases as columns
MATRIX_RECENCIES = 60  # at most 61 recency rows, evenly spaced up to the oldest age
NEXT_PERIOD_WEEKS = 90 / 7  # the expected-purchases matrix: the next 90 days, as predictions


def _labels(count: int) -> list[str]:
    return [str(k) for k in range(count - 1)] + [f"{count - 1}+"]


def _bucket(values: NDArray[np.float64], count: int) -> NDArray[np.int64]:
    return np.minimum(values, count - 1).astype(np.int64)


def _round(values: ArrayLike) -> list[float]:
    return [round(float(v), 6) for v in np.asarray(values, dtype=np.float64).ravel()]


@dataclass(frozen=True, slots=True)
class HoldoutBucket:
    label: str  # calibration repeat purchases: "0", "1", ..., "6+"
    customers: int
    expected: float  # mean expected repeat purchases per customer in the holdout
    actual: float  # mean actual repeat purchase days per customer in the holdout


@dataclass(frozen=True, slots=True)
class Holdout:
    calibration_end: int  # epoch ms; the cutoff's whole UTC day is calibration
    end: int  # epoch ms: the holdout period is (calibration day, end]
    weeks: float  # holdout length the expectation is over
    customers: int  # calibration customers the buckets hold
    unsplit: int  # customers whose order records no longer cover their purchases
    calibration_model: clv.BgNbd  # fitted on the calibration summaries only
    expected_total: float
    actual_total: int
    buckets: tuple[HoldoutBucket, ...]


def holdout_check(
    rows: Sequence[CalibrationHoldout], calibration_end: int, end: int, unsplit: int
) -> Holdout:
    """Fit on the calibration summaries and compare with what the holdout period held.

    Raises ``FitError`` when the calibration period alone cannot identify the model."""
    if not rows:
        raise clv.FitError("no customer bought in the calibration period")
    x = np.fromiter((r.x for r in rows), np.float64, len(rows))
    t_x = np.fromiter((r.t_x for r in rows), np.float64, len(rows))
    age = np.fromiter((r.T for r in rows), np.float64, len(rows))
    actual = np.fromiter((r.holdout for r in rows), np.float64, len(rows))
    weeks = (end - calibration_end) / clv.WEEK_MS
    m = clv.fit_bgnbd(x, clv.to_days(t_x), clv.to_days(age))
    expected = clv.expected_purchases(m, x, t_x, age, weeks)
    bucket = _bucket(x, BUCKETS)
    buckets = []
    for k, label in enumerate(_labels(BUCKETS)):
        members = bucket == k
        n = int(members.sum())
        if n:
            buckets.append(
                HoldoutBucket(
                    label,
                    n,
                    round(float(expected[members].mean()), 6),
                    round(float(actual[members].mean()), 6),
                )
            )
    return Holdout(
        calibration_end=calibration_end,
        end=end,
        weeks=weeks,
        customers=len(rows),
        unsplit=unsplit,
        calibration_model=m,
        expected_total=round(float(expected.sum()), 3),
        actual_total=int(actual.sum()),
        buckets=tuple(buckets),
    )


@dataclass(frozen=True, slots=True)
class PeriodTransactions:
    labels: tuple[str, ...]  # repeat purchases: "0", "1", ..., "7+"
    actual: tuple[int, ...]  # buyers with that many
    expected: tuple[float, ...]  # sum over buyers of P(X(T_i) = n) under the model


def period_transactions(m: clv.BgNbd, x: ArrayLike, T: ArrayLike) -> PeriodTransactions:
    """Each buyer's repeat purchases over its own age ``T`` against the model's distribution
    of that count at the same age: the expectation, summed over buyers, not a simulation."""
    xs = np.asarray(x, dtype=np.float64)
    ages, weight = np.unique(np.asarray(T, dtype=np.float64), return_counts=True)
    expected = [
        float(np.dot(weight, clv.purchases_probability(m, ages, n))) for n in range(HISTOGRAM - 1)
    ]
    expected.append(float(len(xs)) - sum(expected))  # the rest of each buyer's probability
    counts = np.bincount(_bucket(xs, HISTOGRAM), minlength=HISTOGRAM)
    return PeriodTransactions(
        tuple(_labels(HISTOGRAM)), tuple(int(c) for c in counts), tuple(_round(expected))
    )


@dataclass(frozen=True, slots=True)
class Matrix:
    """``values[i][j]``: a customer of age ``T`` whose last repeat purchase was at recency
    ``recencies[i]`` (weeks after the first) and who made ``frequencies[j]`` of them."""

    T: float
    frequencies: tuple[int, ...]
    recencies: tuple[float, ...]
    values: tuple[tuple[float, ...], ...]


def matrix_grid(max_x: float, max_T: float) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Frequencies 0 .. the largest seen (at most MATRIX_FREQUENCIES) and recencies from 0
    to the oldest whole-week age (at most MATRIX_RECENCIES + 1 rows, evenly stepped)."""
    top = max(int(max_T), 1)
    step = max(1, math.ceil(top / MATRIX_RECENCIES))
    recencies = np.arange(0, top + 1, step, dtype=np.float64)
    if recencies[-1] != top:
        recencies = np.append(recencies, float(top))
    frequencies = np.arange(0, min(int(max_x), MATRIX_FREQUENCIES) + 1, dtype=np.float64)
    return frequencies, recencies


def _matrix(
    values: NDArray[np.float64], T: float, f: NDArray[np.float64], r: NDArray[np.float64]
) -> Matrix:
    return Matrix(
        T=T,
        frequencies=tuple(int(v) for v in f),
        recencies=tuple(float(v) for v in r),
        values=tuple(tuple(_round(row)) for row in values),
    )


def matrices(m: clv.BgNbd, max_x: float, max_T: float) -> tuple[Matrix, Matrix]:
    """(expected purchases in the next NEXT_PERIOD_WEEKS, P(alive)) for customers as old as
    the grid's last recency, laid out as ``lifetimes``' plotting module lays them out."""
    f, r = matrix_grid(max_x, max_T)
    T = float(r[-1])
    freq, rec = np.meshgrid(f, r)  # rows: recency, columns: frequency
    expected = clv.expected_purchases(m, freq, rec, T, NEXT_PERIOD_WEEKS)
    alive = clv.p_alive(m, freq, rec, T)
    return _matrix(expected, T, f, r), _matrix(alive, T, f, r)


@dataclass(frozen=True, slots=True)
class Drift:
    share: float  # the configured bound (prediction.drift_share)
    previous_version: int | None  # the model compared with; None for the first fit
    moves: Mapping[str, float]  # parameter -> |new - old| / old
    flagged: bool  # some move is larger than ``share``


def drift(
    share: float,
    previous_version: int | None,
    before: Mapping[str, float] | None,
    after: Mapping[str, float],
) -> Drift:
    """Relative move of every parameter both models have (the spend ones only when both
    fitted a spend model). Shown, never refused: a real change in customers moves them too."""
    if before is None:
        return Drift(share, None, {}, False)
    moves = {
        k: round(abs(after[k] - before[k]) / before[k], 6)
        for k in after
        if k in before and before[k] > 0
    }
    return Drift(share, previous_version, moves, any(v > share for v in moves.values()))


def parameters(purchases: clv.BgNbd, spend: clv.GammaGamma | None) -> dict[str, float]:
    """The parameters drift compares, by name (r, alpha, a, b, and p, q, gamma if fitted)."""
    out = {"r": purchases.r, "alpha": purchases.alpha, "a": purchases.a, "b": purchases.b}
    if spend is not None:
        out.update(p=spend.p, q=spend.q, gamma=spend.gamma)
    return out


@dataclass(frozen=True)
class Checks:
    """Everything above for one fit; stored beside its parameters in the same step."""

    period: PeriodTransactions
    expected: Matrix
    alive: Matrix
    drift: Drift
    holdout: Holdout | None = None  # only when the fit was asked for one (``--holdout``)
    holdout_unavailable: str | None = None  # asked for, but it could not be computed

    def doc(self) -> bytes:
        h = self.holdout
        return orjson.dumps(
            {
                "period_transactions": asdict(self.period),
                "expected_purchases": {
                    "next_weeks": round(NEXT_PERIOD_WEEKS, 6),
                    **asdict(self.expected),
                },
                "p_alive": asdict(self.alive),
                "drift": asdict(self.drift),
                "holdout": None
                if h is None
                else {
                    **asdict(h),
                    "calibration_end": iso_ms(h.calibration_end),
                    "end": iso_ms(h.end),
                    "weeks": round(h.weeks, 6),
                    "bucketing": f"calibration repeat purchases 0 .. {BUCKETS - 2}, "
                    f"then {BUCKETS - 1} or more",
                },
                "holdout_unavailable": self.holdout_unavailable,
            }
        )


def compute(
    purchases: clv.BgNbd,
    spend: clv.GammaGamma | None,
    summaries: tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]],
    drift_share: float,
    previous: tuple[int, Mapping[str, float]] | None,
    holdout: Holdout | None = None,
    holdout_unavailable: str | None = None,
) -> Checks:
    """The checks of a model fitted on ``summaries`` (x, t_x, T of every buyer)."""
    x, _, age = summaries
    expected, alive = matrices(purchases, float(x.max(initial=0)), float(age.max(initial=0)))
    return Checks(
        # ages to whole days, as the fit takes them: a few thousand distinct ages to
        # evaluate instead of one per buyer
        period=period_transactions(purchases, x, clv.to_days(age)),
        expected=expected,
        alive=alive,
        drift=drift(
            drift_share,
            None if previous is None else previous[0],
            None if previous is None else previous[1],
            parameters(purchases, spend),
        ),
        holdout=holdout,
        holdout_unavailable=holdout_unavailable,
    )


def describe(version: int, raw: bytes) -> dict[str, object]:
    """The stored checks as the API shows them, with the model version they belong to."""
    return {"model_version": version, **orjson.loads(raw)}
