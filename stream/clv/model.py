"""Buy-till-you-die models: BG/NBD for purchases and dropout, Gamma-Gamma for spend. Pure.

The running aggregates the scorer keeps per customer (repeat purchases ``x``, time of the
last repeat ``t_x``, age ``T``, mean repeat spend ``zbar``) are exactly the sufficient
statistics of these models (Fader, Hardie and Lee 2005), so fitting needs no event log and
predictions are closed forms evaluated at read time. Time is in weeks throughout, so fitted
parameters compare directly with the published CDNOW values.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import optimize, special

WEEK_MS = 7 * 86_400_000
MONTH_WEEKS = 365.25 / 12 / 7  # one month in model time units


class FitError(ValueError):
    """The data cannot identify the model (too few repeat buyers, or no convergence)."""


@dataclass(frozen=True, slots=True)
class BgNbd:
    """Purchase rate ~ Gamma(r, alpha); dropout probability per purchase ~ Beta(a, b)."""

    r: float
    alpha: float
    a: float
    b: float


@dataclass(frozen=True, slots=True)
class GammaGamma:
    """Spend per purchase ~ Gamma(p, nu), with nu ~ Gamma(q, gamma) across customers."""

    p: float
    q: float
    gamma: float


def _grouped(*columns: ArrayLike) -> tuple[list[NDArray[np.float64]], NDArray[np.float64]]:
    """Distinct rows and their multiplicities: the likelihood only needs each pattern once."""
    stacked = np.column_stack([np.asarray(c, dtype=np.float64) for c in columns])
    rows, counts = np.unique(stacked, axis=0, return_counts=True)
    return [rows[:, k] for k in range(rows.shape[1])], counts.astype(np.float64)


def bgnbd_log_likelihood(
    params: BgNbd, x: NDArray[np.float64], t_x: NDArray[np.float64], T: NDArray[np.float64]
) -> NDArray[np.float64]:
    """Per-customer log-likelihood (Fader, Hardie and Lee 2005, equation 6)."""
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    head = special.gammaln(r + x) - special.gammaln(r) + r * math.log(alpha)
    beta_ab = special.betaln(a, b)
    alive = special.betaln(a, b + x) - beta_ab - (r + x) * np.log(alpha + T)
    repeat = x > 0
    safe_x = np.where(repeat, x, 1.0)
    dropped = special.betaln(a + 1, b + safe_x - 1) - beta_ab - (r + x) * np.log(alpha + t_x)
    dropped = np.where(repeat, dropped, -np.inf)
    return np.asarray(head + np.logaddexp(alive, dropped), dtype=np.float64)


def _minimise(nll: object, start: Sequence[float]) -> NDArray[np.float64]:
    result = optimize.minimize(
        nll,  # type: ignore[arg-type]
        np.log(np.asarray(start, dtype=np.float64)),
        method="Nelder-Mead",
        options={"xatol": 1e-9, "fatol": 1e-11, "maxiter": 20_000, "maxfev": 40_000},
    )
    # Not ``result.success``: on a ridge where a parameter runs off to infinity (spend
    # identical within each customer: p -> inf) the search stops at its evaluation limit,
    # yet the model it has reached predicts as its limit does. What must hold is a finite
    # optimum, positive finite parameters, and (checked by the callers) finite answers.
    if not np.all(np.isfinite(result.x)) or not np.isfinite(result.fun):
        raise FitError(f"the optimiser did not converge: {result.message}")
    params = np.asarray(np.exp(result.x), dtype=np.float64)
    if not np.all(np.isfinite(params)) or not np.all(params > 0):
        raise FitError(f"a parameter left the positive finite range: {params.tolist()}")
    return params


def fit_bgnbd(x: ArrayLike, t_x: ArrayLike, T: ArrayLike) -> BgNbd:
    """Maximum-likelihood BG/NBD parameters, optimised on a log scale (they are positive)."""
    (gx, gt, gT), weight = _grouped(x, t_x, T)
    if not np.any(gx > 0):
        raise FitError("no customer has a repeat purchase yet")
    if np.any(gt > gT) or np.any(gx < 0) or np.any(gt < 0):
        raise FitError("summaries must satisfy x >= 0 and 0 <= t_x <= T")
    total = float(weight.sum())

    def nll(log_params: NDArray[np.float64]) -> float:
        params = BgNbd(*np.exp(log_params))
        value = -float(np.dot(weight, bgnbd_log_likelihood(params, gx, gt, gT))) / total
        return value if math.isfinite(value) else 1e300

    r, alpha, a, b = _minimise(nll, (1.0, 1.0, 1.0, 1.0))
    return BgNbd(float(r), float(alpha), float(a), float(b))


def to_days(weeks: ArrayLike) -> NDArray[np.float64]:
    """Times rounded to whole days for fitting only: identical rows then collapse into one
    likelihood term, which keeps a large fit cheap."""
    return np.asarray(np.round(np.asarray(weeks, dtype=np.float64) * 7.0) / 7.0)


def fit_gamma_gamma(x: ArrayLike, zbar: ArrayLike) -> GammaGamma:
    """Spend parameters from repeat buyers with a positive mean repeat spend."""
    xs = np.asarray(x, dtype=np.float64)
    zs = np.asarray(zbar, dtype=np.float64)
    keep = (xs > 0) & (zs > 0)
    if int(keep.sum()) < 3:
        raise FitError("fewer than 3 repeat buyers with a positive spend")
    (gx, gz), weight = _grouped(xs[keep], zs[keep])
    total = float(weight.sum())

    def nll(log_params: NDArray[np.float64]) -> float:
        p, q, g = np.exp(log_params)
        px = p * gx
        ll = (
            special.gammaln(px + q)
            - special.gammaln(px)
            - special.gammaln(q)
            + q * np.log(g)
            + (px - 1) * np.log(gz)
            + px * np.log(gx)
            - (px + q) * np.log(g + gx * gz)
        )
        value = -float(np.dot(weight, ll)) / total
        return value if math.isfinite(value) else 1e300

    p, q, g = _minimise(nll, (1.0, 1.0, 1.0))
    if q <= 1:
        raise FitError(f"spend model has no finite mean (q = {q:.3f} <= 1)")
    return GammaGamma(float(p), float(q), float(g))


# ---- per-customer predictions -------------------------------------------------------------


# Each accepts scalars or numpy arrays (a page of customers at once) and broadcasts.


def _odds_dropped(m: BgNbd, x: ArrayLike, t_x: ArrayLike, T: ArrayLike) -> NDArray[np.float64]:
    """P(dropped) / P(alive) given the history; 0 for a customer with no repeat purchase."""
    xs = np.asarray(x, dtype=np.float64)
    repeat = xs > 0
    ratio = np.log((m.alpha + np.asarray(T, dtype=np.float64)) / (m.alpha + np.asarray(t_x)))
    odds = m.a / (m.b + np.where(repeat, xs, 1.0) - 1) * np.exp((m.r + xs) * ratio)
    return np.where(repeat, odds, 0.0)


def p_alive(m: BgNbd, x: ArrayLike, t_x: ArrayLike, T: ArrayLike) -> NDArray[np.float64]:
    return 1.0 / (1.0 + _odds_dropped(m, x, t_x, T))


def expected_purchases(
    m: BgNbd, x: ArrayLike, t_x: ArrayLike, T: ArrayLike, t: ArrayLike
) -> NDArray[np.float64]:
    """Expected repeat purchases in the next ``t`` weeks (Fader, Hardie and Lee 2005, eq. 10)."""
    r, alpha, a, b = m.r, m.alpha, m.a, m.b
    xs = np.asarray(x, dtype=np.float64)
    age = np.asarray(T, dtype=np.float64)
    ts = np.asarray(t, dtype=np.float64)
    hyp = special.hyp2f1(r + xs, b + xs, a + b + xs - 1, ts / (alpha + age + ts))
    body = (a + b + xs - 1) / (a - 1) * (1 - ((alpha + age) / (alpha + age + ts)) ** (r + xs) * hyp)
    return np.where(ts > 0, body / (1.0 + _odds_dropped(m, xs, t_x, age)), 0.0)


def purchases_probability(m: BgNbd, t: ArrayLike, n: int) -> NDArray[np.float64]:
    """P(X(t) = n): the chance of exactly ``n`` repeat purchases in ``t`` weeks from the first
    one (Fader, Hardie and Lee 2005, eq. 8), evaluated in logs so large ``n`` stays finite."""
    r, alpha, a, b = m.r, m.alpha, m.a, m.b
    ts = np.asarray(t, dtype=np.float64)
    log_stay = r * np.log(alpha / (alpha + ts))  # log (alpha / (alpha + t))^r
    with np.errstate(divide="ignore"):
        log_go = np.log(ts / (alpha + ts))  # -inf at t = 0, where only n = 0 is possible
    beta_ab = special.betaln(a, b)

    def nbd_term(j: int) -> NDArray[np.float64]:
        """Gamma(r + j) / (Gamma(r) j!) (alpha / (alpha + t))^r (t / (alpha + t))^j."""
        head = special.gammaln(r + j) - special.gammaln(r) - special.gammaln(j + 1)
        return np.asarray(np.exp(head + log_stay + (j * log_go if j else 0.0)))

    alive = np.exp(special.betaln(a, b + n) - beta_ab) * nbd_term(n)
    if n == 0:
        return np.asarray(alive)
    below = sum((nbd_term(j) for j in range(n)), np.zeros_like(ts))
    dropped = np.exp(special.betaln(a + 1, b + n - 1) - beta_ab) * np.maximum(1.0 - below, 0.0)
    return np.asarray(alive + dropped)


def expected_spend(g: GammaGamma, x: ArrayLike, zbar: ArrayLike) -> NDArray[np.float64]:
    """Expected mean spend per future purchase: shrinks the customer's own mean to the
    population's, the more so the fewer purchases it rests on."""
    xs = np.asarray(x, dtype=np.float64)
    return np.asarray(g.p * (g.gamma + xs * np.asarray(zbar)) / (g.p * xs + g.q - 1))


def lifetime_value(
    m: BgNbd,
    g: GammaGamma,
    x: ArrayLike,
    t_x: ArrayLike,
    T: ArrayLike,
    zbar: ArrayLike,
    months: int,
    monthly_discount: float,
) -> NDArray[np.float64]:
    """Discounted value of the purchases expected month by month over the horizon."""
    spend = expected_spend(g, x, zbar)
    total = np.zeros_like(spend)
    before = np.zeros_like(spend)
    for month in range(1, months + 1):
        upto = expected_purchases(m, x, t_x, T, month * MONTH_WEEKS)
        total = total + (upto - before) * spend / (1 + monthly_discount) ** month
        before = upto
    return total


def churn_age(m: BgNbd, x: float, t_x: float, threshold: float) -> float | None:
    """The age T (weeks) at which P(alive) falls to ``threshold`` if no purchase comes first.

    P(alive) only decreases with T between purchases, so "at risk" is simply "age >= this";
    comparing times rather than probabilities keeps the flag free of rounding flicker.
    None: never (no repeat purchase, so BG/NBD holds the customer alive).
    """
    if x <= 0 or not 0 < threshold < 1:
        return None
    odds = (1 / threshold - 1) * (m.b + x - 1) / m.a
    return (m.alpha + t_x) * math.exp(math.log(odds) / (m.r + x)) - m.alpha
