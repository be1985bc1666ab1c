"""CLV and churn through the real worker, Kafka and Redis (issue: predict CLV and churn risk).

The CDNOW sample's calibration purchases (1997-01-01 .. 1997-09-30) go in as order events;
the model is fitted from what the worker keeps in Redis, and the exported predictions and
the report's average CLV per segment are compared with ``lifetimes`` (an independent
implementation, a test dependency only), segments from ``tests.oracle``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pytest
import redis
from lifetimes import BetaGeoFitter, GammaGammaFitter
from lifetimes import datasets as lifetimes_data

from stream.clv import model as clv
from stream.clv.prediction import Model
from stream.kafka import ensure_topics
from stream.kafka.topics import Topics
from stream.schemes import load_scheme
from stream.store.keys import Keys
from tests import cdnow
from tests.api_support import ApiServer
from tests.conftest import Isolated
from tests.oracle import recompute
from tests.support import (
    WorkerProcess,
    changes_of,
    clock_swept,
    events_applied,
    produce,
    rfm,
    wait_for,
)

pytestmark = pytest.mark.integration

DATA = Path(lifetimes_data.__file__).parent
DAY = 86_400_000
CALIBRATION_END = int(datetime(1997, 9, 30, tzinfo=UTC).timestamp() * 1000)
PUBLISHED = {"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426}
CONFIG = cdnow.CONFIG


def calibration_orders() -> list[dict[str, Any]]:
    return cdnow.order_events(until=CALIBRATION_END)


def order(oid: str, cid: str, at: int, amount: str) -> dict[str, Any]:
    return {
        "event_id": f"e-{oid}",
        "type": "order_completed",
        "order_id": oid,
        "customer_id": cid,
        "amount": amount,
        "currency": "USD",
        "occurred_at": at,
    }


def tick(n: int, at: int) -> dict[str, Any]:
    """Someone else's interaction: moves the event clock without touching any buyer."""
    return {
        "event_id": f"tick{n}",
        "type": "interaction",
        "customer_id": "clock-ticker",
        "kind": "click",
        "channel": "web",
        "occurred_at": at,
    }


class Deployment:
    def __init__(self, iso: Isolated, worker: WorkerProcess) -> None:
        self.iso = iso
        self.worker = worker
        self.settings = iso.settings()
        self.topics = Topics(self.settings.topic_prefix)
        self.redis = redis.Redis.from_url(iso.infra.redis_url)
        self.sent = 0

    def send(self, orders: list[dict[str, Any]], interactions: list[dict[str, Any]]) -> None:
        produce(
            self.settings,
            [(self.topics.orders, o["customer_id"].encode(), orjson.dumps(o)) for o in orders]
            + [
                (self.topics.interactions, i["customer_id"].encode(), orjson.dumps(i))
                for i in interactions
            ],
        )
        self.sent += len(orders) + len(interactions)
        wait_for(
            lambda: self.applied() >= self.sent,
            timeout=180,
            what=f"{self.sent} events applied",
            diagnose=self.worker.tail,
        )
        wait_for(self.swept, timeout=60, what="the clock sweep", diagnose=self.worker.tail)

    def applied(self) -> int:
        return events_applied(self.redis, self.iso.name)

    def swept(self) -> bool:
        return clock_swept(self.redis, self.iso.name)

    def model(self) -> Model:
        version, raw = self.redis.hmget(f"{self.iso.name}:thresholds", ["mv", "model"])
        assert version and raw, "no model published"
        return Model.from_doc(int(version), raw)

    def changes(self, cid: str) -> list[dict[str, Any]]:
        return changes_of(self.settings, cid)

    def customer(self, cid: str) -> dict[bytes, bytes]:
        return self.redis.hgetall(f"{self.iso.name}:c:{cid}")


@pytest.fixture
def deploy(
    isolated: Isolated, start_worker: Callable[..., WorkerProcess]
) -> Iterator[Callable[..., Deployment]]:
    made: list[Deployment] = []

    def make(threshold: float, interval: str = "0s") -> Deployment:
        config = isolated.config_file(CONFIG.format(threshold=threshold, interval=interval))
        asyncio.run(ensure_topics(isolated.settings()))
        made.append(Deployment(isolated, start_worker(config)))
        return made[-1]

    yield make
    for d in made:
        d.redis.close()


def test_cdnow_through_the_pipeline_fits_the_published_model_and_exports_matching_predictions(
    isolated: Isolated, deploy: Callable[..., Deployment]
) -> None:
    d = deploy(0)
    orders, ticks = calibration_orders(), [tick(0, CALIBRATION_END)]
    d.send(orders, ticks)

    # Refreshed thresholds first, so the segments the fit sums CLV over are the oracle's.
    rfm(isolated, isolated.tmp / "rfm.toml", "refresh")
    out = rfm(isolated, isolated.tmp / "rfm.toml", "fit")
    assert "CLV model v1: 2357 buyers, 946 repeat" in out, out
    model = d.model()
    assert model.as_of == CALIBRATION_END
    history = d.redis.lrange(f"{isolated.name}:models", 0, -1)
    assert [h.split(b" ", 1)[0] for h in history] == [b"1"]
    for name, published in PUBLISHED.items():
        fitted = getattr(model.purchases, name)
        assert abs(fitted / published - 1) < 0.02, (name, fitted, published)

    exported = [
        orjson.loads(line)
        for line in rfm(isolated, isolated.tmp / "rfm.toml", "export").splitlines()
    ]
    ours = {r["customer_id"]: r["prediction"] for r in exported if r["prediction"]}
    assert len(ours) == 2357

    # The oracle fits the published summary on its own and predicts for the same customers.
    summary = pd.read_csv(DATA / "cdnow_customers_summary_with_transactions.csv")
    x, t_x, age, zbar = (summary[k].to_numpy(float) for k in ("x", "t_x", "T", "zbar"))
    bgf = BetaGeoFitter().fit(x, t_x, age)
    ggf = GammaGammaFitter().fit(x[x > 0], zbar[x > 0])
    alive = bgf.conditional_probability_alive(x, t_x, age)
    purchases = bgf.conditional_expected_number_of_purchases_up_to_time(90 / 7, x, t_x, age)
    value = ggf.customer_lifetime_value(
        bgf, *(pd.Series(v) for v in (x, t_x, age, zbar)), time=12, discount_rate=0.01, freq="W"
    ).to_numpy()
    ids = summary["ID"].astype(str)
    got = np.array([[ours[i]["p_alive"], ours[i]["expected_purchases_90d"]] for i in ids])
    np.testing.assert_allclose(got[:, 0], alive, rtol=0.01, atol=1e-6)
    np.testing.assert_allclose(got[:, 1], purchases, rtol=0.01, atol=1e-6)
    np.testing.assert_allclose([float(ours[i]["clv"]) for i in ids], value, rtol=0.01, atol=0.01)

    # The report's average predicted CLV per segment (as of the fit): lifetimes' CLV of the
    # customers the oracle puts in that segment, averaged.
    segment_of = {
        cid: want.segment
        for cid, want in recompute(
            [*orders, *ticks], load_scheme("rfm-classic", 5), window_days=0
        ).items()
    }
    members: dict[str, list[float]] = {}
    for cid, v in zip(ids, value.tolist(), strict=True):
        members.setdefault(segment_of[cid], []).append(v)
    assert len(members) >= 5, members.keys()
    assert {s: v.customers for s, v in model.segments.items()} == {
        s: len(vs) for s, vs in members.items()
    }
    with (
        ApiServer(isolated.process_env(isolated.tmp / "rfm.toml"), isolated.tmp / "api.log") as api,
        api.client() as http,
    ):
        report = http.get("/api/report").json()
    assert report["currency"] == "USD" and report["prediction"]["model_version"] == 1
    averages = {
        r["id"]: Decimal(r["predicted_clv_average"])
        for r in report["segments"]
        if r["predicted_clv_average"] is not None
    }
    assert set(averages) == set(members)
    for seg, vs in members.items():
        want = sum(vs) / len(vs)
        assert abs(float(averages[seg]) - want) <= 0.003 * want + 0.005, (seg, averages[seg], want)


def test_a_regular_buyer_who_goes_quiet_gets_exactly_one_churn_risk_event(
    isolated: Isolated, deploy: Callable[..., Deployment]
) -> None:
    d = deploy(0.5)
    first = CALIBRATION_END - 266 * DAY
    regular = [order(f"reg{n}", "regular", first + 14 * n * DAY, "20.00") for n in range(19)]
    d.send([*calibration_orders(), *regular], [tick(0, CALIBRATION_END)])
    rfm(isolated, isolated.tmp / "rfm.toml", "fit")
    model = d.model()
    assert b"cr" not in d.customer("regular")

    # Independently: the age at which lifetimes says P(alive) reaches 0.5 for this history.
    x, t_x = 18, (regular[-1]["occurred_at"] - first) / clv.WEEK_MS
    oracle = BetaGeoFitter()
    oracle.params_ = pd.Series(
        {
            "r": model.purchases.r,
            "alpha": model.purchases.alpha,
            "a": model.purchases.a,
            "b": model.purchases.b,
        }
    )
    lo, hi = t_x, t_x + 520.0
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if oracle.conditional_probability_alive(x, t_x, mid) > 0.5 else (lo, mid)
    crossing = first + hi * clv.WEEK_MS
    scheduled = d.redis.zscore(Keys(f"{isolated.name}:").due_of("regular"), "regular")
    assert scheduled is not None and abs(scheduled - crossing) < 60_000, (scheduled, crossing)
    assert crossing > CALIBRATION_END

    # A day before the crossing: still not at risk.
    d.send([], [tick(1, int(crossing) - DAY)])
    assert b"cr" not in d.customer("regular")
    # A day after: exactly one churn_risk event, the segment unchanged.
    d.send([], [tick(2, int(crossing) + DAY)])
    events = wait_for(
        lambda: [c for c in d.changes("regular") if c["cause"] == "churn_risk"] or None,
        timeout=30,
        what="the churn_risk event",
        diagnose=d.worker.tail,
    )
    assert len(events) == 1
    event = events[0]
    assert event["from"] == event["to"] and event["churn"]["at_risk"] is True
    assert 0.45 < event["churn"]["p_alive"] <= 0.5
    assert event["churn"]["model_version"] == model.version
    assert d.customer("regular")[b"cr"] == b"1"

    # More silence changes nothing more; a new purchase brings the customer back, once.
    d.send([], [tick(3, int(crossing) + 90 * DAY)])
    d.send([order("reg-back", "regular", int(crossing) + 91 * DAY, "20.00")], [])
    churn = wait_for(
        lambda: (
            found
            if len(found := [c for c in d.changes("regular") if c["cause"] == "churn_risk"]) > 1
            else None
        ),
        timeout=30,
        what="the recovery event",
        diagnose=d.worker.tail,
    )
    assert [c["churn"]["at_risk"] for c in churn] == [True, False]
    assert b"cr" not in d.customer("regular")
    seqs = [c["seq"] for c in d.changes("regular")]
    assert seqs == list(range(1, len(seqs) + 1))


def test_the_leader_refits_on_its_own_every_fit_interval(
    deploy: Callable[..., Deployment],
) -> None:
    d = deploy(0, interval="2s")
    start = CALIBRATION_END - 200 * DAY
    orders = [
        order(
            f"s{k}-{n}", f"shopper-{k}", start + (k % 7) * DAY + n * (k % 5 + 2) * 7 * DAY, "9.90"
        )
        for k in range(80)
        for n in range(k % 4 + 1)
    ]
    d.send(orders, [tick(0, CALIBRATION_END)])
    # No `rfm fit`: the worker's own timer publishes versions one interval apart.
    versions = wait_for(
        lambda: found if (found := d.redis.lrange(f"{d.iso.name}:models", 0, -1))[1:] else None,
        timeout=60,
        what="two automatic model fits",
        diagnose=d.worker.tail,
    )
    first, second = (
        Model.from_doc(int(v), raw) for v, _, raw in (h.partition(b" ") for h in versions[::-1][:2])
    )
    assert (first.version, second.version) == (1, 2)
    assert second.fitted_at - first.fitted_at >= 2000
    assert first.customers == second.customers == 80
