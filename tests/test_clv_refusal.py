"""A CLV model without a finite answer is never served (issue: the first hour of a new user).

The demo's failure, rebuilt: a shop of mostly one-time buyers whose repeat buyers' spend is
so heavy-tailed (Pareto, tail index 0.5) that the Gamma-Gamma fit finds q <= 1, a spend with
no finite mean. Through the real processor, Redis, refit and API: the fit publishes nothing,
the model before it stays, the API says why, and every one-time buyer's exported CLV is the
one ``lifetimes`` (an independent implementation) computes from that earlier model, within
the closed-form bound the model allows for x = 0: E[purchases over the horizon] times the
population mean spend p * gamma / (q - 1).
"""

from __future__ import annotations

import csv
import io
from decimal import Decimal

import numpy as np
import orjson
import pandas as pd
import pytest
from lifetimes import BetaGeoFitter, GammaGammaFitter

from stream.shell.processor import wall_ms
from tests.api_support import ApiServer, fit_model, order, score_events
from tests.conftest import Isolated

pytestmark = pytest.mark.integration

DAY = 86_400_000
WEEK = 7 * DAY
CONFIG = {"scoring": {"clock": "event"}}
HORIZON_MONTHS = 12  # the default prediction.horizon_months
MONTH_WEEKS = 365.25 / 12 / 7


def shop(rng: np.random.Generator, now: int, tag: str, repeat: int, once: int, tail: float | None):
    """Orders of ``repeat`` repeat buyers (2-4 purchase days each, amounts around the buyer's
    own mean) and ``once`` one-time buyers (one order of 400-1,700 TWD). Own means are
    Gamma-distributed, or Pareto with index ``tail`` (heavy: q <= 1 when tail < 1)."""
    events: list[tuple[str, dict[str, object]]] = []
    n = 0

    def add(cid: str, minor: int, at: int) -> None:
        nonlocal n
        n += 1
        events.append(("orders", order(n + 10_000 * len(tag), cid, max(100, minor), at)))

    for k in range(repeat):
        if tail is None:
            mean = rng.gamma(3.0, 300.0)
        else:
            mean = min(1_000_000.0, 400.0 * (1.0 - rng.random()) ** (-1.0 / tail))
        first = now - int(rng.integers(60, 360)) * DAY
        days = sorted(rng.choice(np.arange(1, (now - first) // DAY), 1 + k % 3, replace=False))
        for at in [first, *(first + int(d) * DAY for d in days)]:
            add(f"{tag}-r{k}", round(mean * rng.gamma(4.0, 0.25) * 100), at)
    for k in range(once):
        add(
            f"{tag}-o{k}",
            int(rng.integers(400, 1_700)) * 100,
            now - int(rng.integers(1, 300)) * DAY,
        )
    return events


def api_of(isolated: Isolated) -> ApiServer:
    """`rfm api` over the test's namespace, on the event clock as the scorer was."""
    config = isolated.config_file('[scoring]\nclock = "event"\n')
    return ApiServer(isolated.process_env(config), isolated.tmp / "api.log")


def test_a_spend_fit_without_a_finite_mean_publishes_nothing_and_the_earlier_model_stays(
    isolated: Isolated,
) -> None:
    settings = isolated.settings(CONFIG)
    prefix = settings.topic_prefix
    rng = np.random.default_rng(20261206)
    now = wall_ms() - DAY

    # A healthy shop first: the fit publishes v1.
    healthy = shop(rng, now, "h", repeat=60, once=60, tail=None)
    score_events(settings, [(prefix + t, e) for t, e in healthy], then_refresh=True)
    first = fit_model(settings)
    assert first.model is not None and first.model.version == 1, first.reason
    v1 = first.model
    assert v1.spend is not None

    # Then the demo's crowd: mostly one-time buyers, repeat buyers with heavy-tailed spend.
    crowd = shop(rng, now, "d", repeat=240, once=600, tail=0.5)
    score_events(settings, [(prefix + t, e) for t, e in crowd], then_refresh=True)
    before = wall_ms()
    second = fit_model(settings)
    assert second.model is None, "a model with no finite spend mean was published"
    assert "no finite mean" in second.reason and "q = " in second.reason, second.reason

    with api_of(isolated) as api, api.client() as http:
        shown = http.get("/api/model").json()
        # the earlier model is still the one served, unchanged, and the reason is beside it
        assert shown["model"]["version"] == 1 and [h["version"] for h in shown["history"]] == [1]
        assert shown["model"]["gamma_gamma"] == {
            "p": v1.spend.p,
            "q": v1.spend.q,
            "gamma": v1.spend.gamma,
        }
        stale = shown["model_not_updated"]
        assert stale["reason"] == second.reason
        assert stale["message"] == f"model not updated: {second.reason}"
        at = pd.Timestamp(stale["at"]).value // 1_000_000
        assert before - 1_000 <= at <= wall_ms(), (stale["at"], before)
        assert http.get("/api/report").json()["model_not_updated"] == stale

        lines = [orjson.loads(x) for x in http.get("/api/export").content.splitlines()]
        table = list(csv.DictReader(io.StringIO(http.get("/api/export?format=csv").text)))
    assert {r["prediction"]["model_version"] for r in lines if r["prediction"]} == {1}

    # The oracle: lifetimes with v1's parameters, for every one-time buyer of both crowds.
    once = [r for r in lines if r["customer_id"].split("-")[1].startswith("o")]
    assert len(once) == 660
    clock = max(e["occurred_at"] for _, e in healthy + crowd)
    now_ms = pd.Timestamp(clock).value // 1_000_000
    first_at = {
        e["customer_id"]: pd.Timestamp(e["occurred_at"]).value // 1_000_000
        for _, e in healthy + crowd
    }
    age = np.array([(now_ms - first_at[r["customer_id"]]) / WEEK for r in once])
    zeros = np.zeros(len(once))
    bgf = BetaGeoFitter()
    bgf.params_ = pd.Series(
        {"r": v1.purchases.r, "alpha": v1.purchases.alpha, "a": v1.purchases.a, "b": v1.purchases.b}
    )
    bgf.predict = bgf.conditional_expected_number_of_purchases_up_to_time  # set by fit()
    ggf = GammaGammaFitter()
    ggf.params_ = pd.Series({"p": v1.spend.p, "q": v1.spend.q, "v": v1.spend.gamma})
    want = ggf.customer_lifetime_value(
        bgf,
        *(pd.Series(v) for v in (zeros, zeros, age, zeros)),
        time=HORIZON_MONTHS,
        discount_rate=0.01,
        freq="W",
    ).to_numpy()
    got = np.array([float(r["prediction"]["clv"]) for r in once])
    np.testing.assert_allclose(got, want, rtol=0.01, atol=0.01)
    # The bound for x = 0, from the models' closed forms: no more purchases than BG/NBD
    # expects over the horizon, each worth the population mean (undiscounted).
    mean = v1.spend.p * v1.spend.gamma / (v1.spend.q - 1)
    purchases = bgf.conditional_expected_number_of_purchases_up_to_time(
        HORIZON_MONTHS * MONTH_WEEKS, zeros, zeros, age
    )
    assert np.all(got <= purchases * mean + 0.01), (got - purchases * mean).max()
    assert float(
        ggf.conditional_expected_average_profit(pd.Series([0]), pd.Series([0.0]))[0]
    ) == pytest.approx(mean)
    # What the demo showed: CLV of one-time buyers dozens of times their first order.
    first_spend = {r["customer_id"]: Decimal(r["metrics"]["monetary"]) for r in once}
    assert max(Decimal(r["prediction"]["clv"]) / first_spend[r["customer_id"]] for r in once) < 20

    # CSV: the same predictions, booleans written as JSONL writes them.
    rows = {r["customer_id"]: r for r in table}
    assert {rows[r["customer_id"]]["churn_risk"] for r in lines if r["prediction"]} == {"false"}
    assert all(rows[r["customer_id"]]["clv"] == r["prediction"]["clv"] for r in once)


def test_before_any_model_lookups_say_why_there_is_no_clv(isolated: Isolated) -> None:
    settings = isolated.settings(CONFIG)
    prefix = settings.topic_prefix
    rng = np.random.default_rng(7)
    crowd = shop(rng, wall_ms() - DAY, "d", repeat=240, once=300, tail=0.5)
    score_events(settings, [(prefix + t, e) for t, e in crowd], then_refresh=True)
    report = fit_model(settings)
    assert report.model is None and "no finite mean" in report.reason, report.reason

    with api_of(isolated) as api, api.client() as http:
        shown = http.get("/api/model").json()
        assert shown["model"] is None and shown["history"] == []
        assert shown["model_not_updated"]["message"] == f"model not updated: {report.reason}"
        looked = http.get("/api/customers/d-o0").json()
        assert looked["prediction"] is None
        assert looked["model_not_updated"]["reason"] == report.reason
        line = orjson.loads(http.get("/api/export").content.splitlines()[0])
        assert line["prediction"] is None
