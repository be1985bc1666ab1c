"""The demo's simulated shop (stream.demo_shop) and how the demo slices its clock
(stream.demo): the population it announces, valid events, and a shop that looks like one.

Segments and scores are checked with the batch oracle (tests/oracle.py), which shares no
code with the scorer; money with the closed-form mean of the spend model.
"""

from __future__ import annotations

import itertools
from collections import Counter
from decimal import Decimal

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream.config import StoreSettings
from stream.core.events import parse_interaction, parse_order
from stream.core.scoring import DAY_MS
from stream.demo import Plan, due, plan
from stream.demo_shop import Shop, ShopEvent, customer_id
from stream.schemes import load_scheme
from tests.oracle import epoch_ms, recompute

START = 1_790_000_000_000  # 2026-09-21: any fixed instant
TEN_DEMO_MINUTES = 600 * DAY_MS // 4  # at the default pace of 6 shop hours a second: 150 days
SCHEME = load_scheme("rfm-classic", 5)
# every rule a customer can land in: the catch-all `unscored` takes no one who exists
# (a customer exists by an order or an interaction, and then the grid or `interacting` holds it)
REACHABLE = {r.id for r in SCHEME.rules} - {"unscored"}


def until(shop: Shop, end: int) -> list[ShopEvent]:
    return list(itertools.takewhile(lambda e: e.at <= end, shop.timeline()))


@settings(max_examples=25, deadline=None)
@given(
    customers=st.integers(1, 300),
    seed=st.integers(0, 10_000),
    days=st.integers(0, 3 * 365),
)
def test_exactly_the_announced_population(customers: int, seed: int, days: int) -> None:
    shop = Shop(customers, START, seed=seed)
    events = until(shop, START + days * DAY_MS)
    history = {e.customer_id for e in events if e.at <= START}
    ever = {e.customer_id for e in events}
    announced = {f"c-{n:05d}" for n in range(customers)}
    assert history == announced  # every customer is known once the back-fill is in
    assert ever == announced  # and nobody else ever shows up
    assert all(e.at >= shop.history_start for e in events)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), customers=st.integers(1, 80))
def test_every_event_is_valid_and_refunds_follow_their_order(seed: int, customers: int) -> None:
    shop = Shop(customers, START, seed=seed)
    events = until(shop, START + 180 * DAY_MS)
    assert [(e.at, e.seq) for e in events] == sorted((e.at, e.seq) for e in events)
    store = StoreSettings()
    wall = START + 400 * DAY_MS
    completed: dict[str, int] = {}
    ids = Counter(e.doc["event_id"] for e in events)
    assert max(ids.values()) == 1, "event ids repeat"
    for e in events:
        raw = orjson.dumps(e.doc)
        assert epoch_ms(e.doc["occurred_at"]) == e.at
        if e.topic == "interactions":
            assert parse_interaction(raw, store, wall).customer_id == e.customer_id
            continue
        parsed = parse_order(raw, store, wall)
        if parsed.refund:
            placed = completed[parsed.order_id]  # an order of this customer, completed before
            assert parsed.order_id.startswith(e.customer_id + "-")
            assert placed < e.at <= placed + 14 * DAY_MS
        else:
            assert parsed.order_id not in completed
            completed[parsed.order_id] = e.at


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 1000),
    cuts=st.lists(st.integers(0, 60 * DAY_MS), min_size=1, max_size=12),
)
def test_the_demo_publishes_each_event_once_however_the_clock_is_sliced(
    seed: int, cuts: list[int]
) -> None:
    shop = Shop(40, START, seed=seed)
    end = START + 60 * DAY_MS
    whole = until(shop, end)
    timeline, pending = shop.timeline(), []
    sliced: list[ShopEvent] = []
    for clock in [START, *sorted(START + c for c in cuts), end]:
        sliced += due(timeline, pending, clock)
    assert sliced == whole


@given(
    pace=st.integers(1000, 7 * DAY_MS),
    duration=st.floats(1, 3600),
    later=st.floats(0, 10_000),
)
def test_the_shop_clock_never_runs_ahead_of_the_wall(
    pace: int, duration: float, later: float
) -> None:
    wall = START + 5 * 365 * DAY_MS
    run: Plan = plan(100, pace, duration, seed=1, wall=wall)
    assert run.shop.start + duration * run.pace_ms <= wall  # the whole run fits in the past
    elapsed = duration + later
    now = wall + int(elapsed * 1000)
    assert run.clock(elapsed, now) <= now
    assert run.clock(0, now) == run.shop.start


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_shop_of_2000_fills_every_segment_and_spreads_over_f(seed: int) -> None:
    """At the end of the back-fill and ten demo minutes later, by the oracle's scoring."""
    shop = Shop(2000, START, seed=seed)
    events = until(shop, START + TEN_DEMO_MINUTES)
    for now in (START, START + TEN_DEMO_MINUTES):
        expected = recompute([e.doc for e in events if e.at <= now], SCHEME, now=now)
        assert len(expected) == 2000
        segments = Counter(x.segment for x in expected.values())
        assert set(segments) == REACHABLE, f"empty at {now}: {REACHABLE - set(segments)}"
        buyers = [x for x in expected.values() if x.last_order_at is not None]
        # the R x F grid has at least four columns, and repeat buying is heterogeneous
        assert len({x.scores["f"] for x in buyers}) >= 4
        orders = Counter(x.orders for x in buyers)
        assert sum(n for f, n in orders.items() if f >= 2) >= 0.35 * len(buyers)
        assert max(orders) >= 10 and len(orders) >= 10
        assert orders[0] < 0.2 * len(buyers), "lapsed buyers would empty F's first quintile"


def test_money_and_rates_are_a_shops() -> None:
    shop = Shop(2000, START, seed=5)
    events = until(shop, START)
    completed = [e.doc for e in events if e.doc["type"] == "order_completed"]
    refunds = [e.doc for e in events if e.doc["type"] == "order_refunded"]
    interactions = [e for e in events if e.topic == "interactions"]
    # the spend model's closed-form mean, p * gamma / (q - 1), is what the orders average
    b = shop.behaviour
    mean = sum(Decimal(str(d["amount"])) for d in completed) / len(completed)
    assert abs(float(mean) / (b.spend_p * b.spend_gamma / (b.spend_q - 1)) - 1) < 0.1
    assert 0.02 <= len(refunds) / len(completed) <= 0.06
    assert 0.5 <= sum(1 for d in refunds if d["full"]) / len(refunds) <= 0.9
    years = shop.history_days / 365
    assert 1 <= len(completed) / 2000 / years <= 4  # orders per customer a year
    assert len(interactions) < 2 * len(completed)


def test_customer_ids_sort_like_their_numbers() -> None:
    assert [customer_id(n) for n in (0, 9, 10, 1999)] == [
        "c-00000",
        "c-00009",
        "c-00010",
        "c-01999",
    ]
