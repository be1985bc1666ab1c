"""The CLV models against the published CDNOW results and an independent implementation.

CDNOW (a music store's 1997-98 purchases; the 2,357-customer sample Fader, Hardie and Lee
published) ships inside the ``lifetimes`` package, which is also the independent oracle:
it is a test dependency only, never imported by the scorer.
"""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lifetimes import BetaGeoFitter, GammaGammaFitter
from lifetimes import datasets as lifetimes_data

from stream.clv import model as clv
from stream.clv.prediction import Model, money, predict, prediction_doc, summary_of
from stream.config import PredictionSettings
from stream.core.customer import Customer, apply_order
from stream.core.events import OrderEvent
from tests import cdnow

DATA = Path(lifetimes_data.__file__).parent
PUBLISHED_BGNBD = {"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426}
PUBLISHED_GAMMA_GAMMA = {"p": 6.25, "q": 3.74, "gamma": 15.44}  # Fader, Hardie and Lee 2005b
CALIBRATION_END = datetime(1997, 9, 30, tzinfo=UTC)
HOLDOUT_WEEKS = 39.0  # 1997-10-01 .. 1998-06-30


def _ms(day: datetime) -> int:
    return int(day.timestamp() * 1000)


@pytest.fixture(scope="module")
def summary() -> pd.DataFrame:
    """The published calibration summary: x, t_x, T (weeks) and zbar (mean repeat spend)."""
    return pd.read_csv(DATA / "cdnow_customers_summary_with_transactions.csv")


@pytest.fixture(scope="module")
def transactions() -> pd.DataFrame:
    """The raw sample: one row per purchase (customer, date, CDs, dollars)."""
    return cdnow.transactions()


@pytest.fixture(scope="module")
def fitted(summary: pd.DataFrame) -> tuple[clv.BgNbd, clv.GammaGamma]:
    return (
        clv.fit_bgnbd(summary["x"], summary["t_x"], summary["T"]),
        clv.fit_gamma_gamma(summary["x"], summary["zbar"]),
    )


def _close(actual: float, expected: float, rel: float) -> bool:
    return abs(actual - expected) <= rel * abs(expected)


def test_bgnbd_fit_reproduces_the_published_cdnow_parameters(
    fitted: tuple[clv.BgNbd, clv.GammaGamma],
) -> None:
    m, _ = fitted
    for name, published in PUBLISHED_BGNBD.items():
        assert _close(getattr(m, name), published, 0.02), (name, getattr(m, name), published)


def test_a_buyer_whose_first_purchase_is_now_does_not_stop_the_fit(summary: pd.DataFrame) -> None:
    # under the event clock the newest buyer's age T is exactly 0
    x = np.append(summary["x"].to_numpy(float), 0.0)
    t_x = np.append(summary["t_x"].to_numpy(float), 0.0)
    age = np.append(summary["T"].to_numpy(float), 0.0)
    m = clv.fit_bgnbd(x, t_x, age)
    assert _close(m.r, PUBLISHED_BGNBD["r"], 0.02)
    assert float(clv.p_alive(m, 0, 0.0, 0.0)) == 1.0


def test_gamma_gamma_fit_reproduces_the_published_cdnow_parameters(
    fitted: tuple[clv.BgNbd, clv.GammaGamma],
) -> None:
    _, g = fitted
    for name, published in PUBLISHED_GAMMA_GAMMA.items():
        assert _close(getattr(g, name), published, 0.02), (name, getattr(g, name), published)


def test_per_customer_predictions_match_an_independent_implementation(
    summary: pd.DataFrame, fitted: tuple[clv.BgNbd, clv.GammaGamma]
) -> None:
    m, g = fitted
    x, t_x, age, zbar = (summary[k].to_numpy(float) for k in ("x", "t_x", "T", "zbar"))
    oracle = BetaGeoFitter().fit(x, t_x, age)  # fitted on its own, not fed our parameters
    spend_oracle = GammaGammaFitter().fit(x[x > 0], zbar[x > 0])

    ours_alive = clv.p_alive(m, x, t_x, age)
    theirs_alive = oracle.conditional_probability_alive(x, t_x, age)
    np.testing.assert_allclose(ours_alive, theirs_alive, rtol=0.01)

    for weeks in (HOLDOUT_WEEKS, 90 / 7):
        ours = clv.expected_purchases(m, x, t_x, age, weeks)
        theirs = oracle.conditional_expected_number_of_purchases_up_to_time(weeks, x, t_x, age)
        np.testing.assert_allclose(ours, theirs, rtol=0.01)

    ours_spend = clv.expected_spend(g, x, zbar)
    theirs_spend = spend_oracle.conditional_expected_average_profit(
        pd.Series(x), pd.Series(zbar)
    ).to_numpy()
    np.testing.assert_allclose(ours_spend, theirs_spend, rtol=0.01)

    ours_clv = clv.lifetime_value(m, g, x, t_x, age, zbar, 12, 0.01)
    theirs_clv = spend_oracle.customer_lifetime_value(
        oracle,
        pd.Series(x),
        pd.Series(t_x),
        pd.Series(age),
        pd.Series(zbar),
        time=12,
        discount_rate=0.01,
        freq="W",
    ).to_numpy()
    np.testing.assert_allclose(ours_clv, theirs_clv, rtol=0.01)


def _customers_from(transactions: pd.DataFrame, until: datetime) -> dict[int, Customer]:
    """Replay raw purchases through the scorer's own state transition, in shuffled order."""
    rows = transactions[transactions["day"] <= until].to_dict("records")
    random.Random(7).shuffle(rows)  # arrival order must not matter
    customers: dict[int, Customer] = {}
    for n, row in enumerate(rows):
        cid = int(row["id"])
        c = customers.setdefault(cid, Customer(customer_id=str(cid)))
        at = _ms(row["day"].to_pydatetime())
        cents = int(row["value"].replace(".", ""))
        event = OrderEvent(f"e{n}", str(cid), f"o{n}", refund=False, amount=cents, occurred_at=at)
        apply_order(c, event, window_ms=0, now=at)
    return customers


def test_streamed_aggregates_equal_the_published_summary(
    transactions: pd.DataFrame, summary: pd.DataFrame
) -> None:
    customers = _customers_from(transactions, CALIBRATION_END)
    now = _ms(CALIBRATION_END)
    assert len(customers) == len(summary) == 2357
    for row in summary.itertuples():
        s = summary_of(customers[int(row.ID)], now, decimals=2)
        assert s is not None
        assert s.x == row.x
        assert abs(s.t_x - row.t_x) < 0.006 and abs(s.T - row.T) < 0.006
        assert abs(s.zbar - row.zbar) < 0.006


def test_holdout_forecast_tracks_the_actual_repeat_purchases(
    transactions: pd.DataFrame, summary: pd.DataFrame, fitted: tuple[clv.BgNbd, clv.GammaGamma]
) -> None:
    m, _ = fitted
    x, t_x, age = (summary[k].to_numpy(float) for k in ("x", "t_x", "T"))
    predicted = float(clv.expected_purchases(m, x, t_x, age, HOLDOUT_WEEKS).sum())
    holdout = transactions[transactions["day"] > CALIBRATION_END]
    actual = int(holdout.groupby("id")["day"].nunique().sum())  # purchase days, as in x
    print(f"CDNOW 39-week holdout: predicted {predicted:.0f}, actual {actual}")
    assert actual == 1882
    assert abs(predicted / actual - 1) < 0.15


def test_prediction_doc_rounds_money_once_and_reports_the_churn_flag(
    fitted: tuple[clv.BgNbd, clv.GammaGamma],
) -> None:
    m, g = fitted
    model = Model(1, 0, 0, 2357, 1000, m, g)
    c = Customer(customer_id="c", purchase_days=3, spend=6708, first_day_spend=2933)
    c.first_order_at, c.last_order_at = 0, int(30.43 * clv.WEEK_MS)
    doc = prediction_doc(c, model, PredictionSettings(), int(38.86 * clv.WEEK_MS), 2)
    assert doc is not None
    assert doc["churn_risk"] is False and doc["model_version"] == 1
    assert isinstance(doc["clv"], str) and len(doc["clv"].split(".")[1]) == 2
    s = summary_of(c, int(38.86 * clv.WEEK_MS), 2)
    assert s is not None
    assert str(predict(model, s, PredictionSettings(), 2).clv) == doc["clv"]
    assert prediction_doc(Customer(customer_id="n"), model, PredictionSettings(), 0, 2) is None


params = st.builds(
    clv.BgNbd,
    r=st.floats(0.05, 5),
    alpha=st.floats(0.5, 50),
    a=st.floats(0.05, 5),
    b=st.floats(0.05, 10),
)


@settings(max_examples=300, deadline=None)
@given(
    m=params,
    x=st.integers(1, 60),
    t_x=st.floats(0, 200),
    threshold=st.floats(0.01, 0.99),
)
def test_churn_age_is_where_p_alive_reaches_the_threshold(
    m: clv.BgNbd, x: int, t_x: float, threshold: float
) -> None:
    age = clv.churn_age(m, x, t_x, threshold)
    assert age is not None
    if age >= t_x:
        assert math.isclose(float(clv.p_alive(m, x, t_x, age)), threshold, rel_tol=1e-6)
    later = max(age, t_x) + 1.0
    assert float(clv.p_alive(m, x, t_x, later)) < threshold  # and it keeps falling
    assert clv.churn_age(m, 0, 0.0, threshold) is None  # no repeat purchase: held alive


@settings(max_examples=200, deadline=None)
@given(
    orders=st.lists(
        st.tuples(st.integers(0, 40), st.integers(0, 86_399_999), st.integers(0, 50_000)),
        min_size=1,
        max_size=25,
    ),
    seed=st.integers(0, 1000),
)
def test_lifetime_aggregates_equal_a_batch_recount_in_any_arrival_order(
    orders: list[tuple[int, int, int]], seed: int
) -> None:
    shuffled = list(enumerate(orders))
    random.Random(seed).shuffle(shuffled)
    c = Customer(customer_id="c")
    for n, (day, ms, amount) in shuffled:
        at = day * 86_400_000 + ms
        event = OrderEvent(f"e{n}", "c", f"o{n}", refund=False, amount=amount, occurred_at=at)
        apply_order(c, event, 0, at)
    days = {d for d, _, _ in orders}
    first = min(days)
    assert c.purchase_days == len(days)
    assert c.spend == sum(a for _, _, a in orders)
    assert c.first_day_spend == sum(a for d, _, a in orders if d == first)


@pytest.mark.parametrize("value", [1e30, 1.7976931348623157e308, -3.5e45])
def test_a_huge_estimate_is_money_not_a_crash(value: float) -> None:
    """A model fitted near its edge can value a customer at 1e30; the default 28 digits cannot
    hold that to the cent, and the export crashed on it."""
    got = money(value, 2)
    assert got == Decimal(repr(value)) and got.as_tuple().exponent == -2


def test_an_estimate_that_is_not_a_number_is_zero() -> None:
    assert money(float("inf"), 2) == 0 and money(float("nan"), 0) == 0
