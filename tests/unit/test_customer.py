"""Per-customer state (SPEC section 3) and how order/interaction events change it."""

from __future__ import annotations

import copy
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream.config import settings_from
from stream.core.customer import (
    Customer,
    Duplicate,
    apply_interaction,
    apply_order,
    expire,
    metrics,
    next_due,
)
from stream.core.events import InteractionEvent, OrderEvent, Rejected
from stream.core.rescore import ScoringContext, rescore
from stream.core.scoring import DAY_MS, Thresholds
from stream.schemes import load_scheme

FAST = settings(max_examples=150, deadline=None)
NOW = 1_795_140_900_000
WINDOW = 365 * DAY_MS
_n = iter(range(10**9))


def completed(order_id: str = "o1", amount: int = 5990, at: int = NOW, **kw: Any) -> OrderEvent:
    return OrderEvent(
        event_id=kw.pop("event_id", f"e{next(_n)}"),
        customer_id="c-42",
        order_id=order_id,
        refund=False,
        amount=amount,
        occurred_at=at,
        **kw,
    )


def refund(order_id: str = "o1", amount: int = 1000, full: bool = False, **kw: Any) -> OrderEvent:
    return OrderEvent(
        event_id=kw.pop("event_id", f"e{next(_n)}"),
        customer_id="c-42",
        order_id=order_id,
        refund=True,
        amount=amount,
        occurred_at=kw.pop("at", NOW),
        full=full,
        **kw,
    )


def liked(at: int = NOW, **kw: Any) -> InteractionEvent:
    return InteractionEvent(
        event_id=kw.pop("event_id", f"e{next(_n)}"),
        customer_id="c-42",
        kind=kw.pop("kind", "like"),
        occurred_at=at,
        **kw,
    )


def fresh() -> Customer:
    return Customer("c-42")


def state(c: Customer, now: int = NOW, window: int = WINDOW) -> tuple[int, int, int | None]:
    m = metrics(c, window, now)
    return m.orders, m.monetary, m.last_order_at


def test_first_order() -> None:
    c = fresh()
    apply_order(c, completed(at=NOW - 1000, channel="pos"), WINDOW, NOW)
    m = metrics(c, WINDOW, NOW)
    assert (m.orders, m.monetary) == (1, 5990)
    assert m.first_order_at == m.last_order_at == NOW - 1000
    assert c.has_orders and not c.has_interactions and c.exists
    assert c.channels == {"pos"}


def test_free_order_counts_for_r_and_f() -> None:
    c = fresh()
    apply_order(c, completed(amount=0), WINDOW, NOW)
    assert state(c) == (1, 0, NOW)


def test_several_orders_aggregate() -> None:
    c = fresh()
    apply_order(c, completed("o1", 100, NOW - 3 * DAY_MS), WINDOW, NOW)
    apply_order(c, completed("o2", 250, NOW - 1 * DAY_MS, channel="online"), WINDOW, NOW)
    apply_order(c, completed("o3", 50, NOW - 9 * DAY_MS, channel="app"), WINDOW, NOW)
    m = metrics(c, WINDOW, NOW)
    assert (m.orders, m.monetary) == (3, 400)
    assert m.first_order_at == NOW - 9 * DAY_MS
    assert m.last_order_at == NOW - 1 * DAY_MS  # late arrivals do not move it back
    assert c.channels == {"online", "app"}


# -- duplicates change nothing ----------------------------------------------------------------


def test_duplicate_order_id_changes_nothing() -> None:
    c = fresh()
    apply_order(c, completed("o1", 5990), WINDOW, NOW)
    before = copy.deepcopy(c)
    with pytest.raises(Duplicate):
        apply_order(c, completed("o1", 9999, NOW - DAY_MS), WINDOW, NOW)  # new event_id
    assert c == before


def test_duplicate_event_id_changes_nothing() -> None:
    c = fresh()
    first = completed("o1", event_id="evt-1")
    apply_order(c, first, WINDOW, NOW)
    before = copy.deepcopy(c)
    with pytest.raises(Duplicate):
        apply_order(c, first, WINDOW, NOW)
    with pytest.raises(Duplicate):
        apply_order(c, completed("o2", event_id="evt-1"), WINDOW, NOW)
    assert c == before


def test_duplicate_refund_changes_nothing() -> None:
    c = fresh()
    apply_order(c, completed("o1", 5990), WINDOW, NOW)
    r = refund("o1", 1000, event_id="ref-1")
    apply_order(c, r, WINDOW, NOW)
    before = copy.deepcopy(c)
    with pytest.raises(Duplicate):
        apply_order(c, r, WINDOW, NOW)
    assert c == before
    assert state(c)[:2] == (1, 4990)


def test_duplicate_interaction_changes_nothing() -> None:
    c = fresh()
    ev = liked(event_id="i-1")
    apply_interaction(c, ev, 1, WINDOW, NOW)
    before = copy.deepcopy(c)
    with pytest.raises(Duplicate):
        apply_interaction(c, ev, 1, WINDOW, NOW)
    assert c == before


def test_completion_after_full_refund_is_still_a_duplicate() -> None:
    c = fresh()
    apply_order(c, completed("o1", 5990), WINDOW, NOW)
    apply_order(c, refund("o1", 5990, full=True), WINDOW, NOW)
    with pytest.raises(Duplicate):
        apply_order(c, completed("o1", 5990), WINDOW, NOW)
    assert state(c)[:2] == (0, 0)


# -- refunds ----------------------------------------------------------------------------------


def test_partial_refund_reduces_m_keeps_f() -> None:
    c = fresh()
    apply_order(c, completed("o1", 5990), WINDOW, NOW)
    apply_order(c, refund("o1", 1990), WINDOW, NOW)
    assert state(c) == (1, 4000, NOW)


def test_full_refund_removes_from_f() -> None:
    c = fresh()
    apply_order(c, completed("o1", 5990), WINDOW, NOW)
    apply_order(c, completed("o2", 1000), WINDOW, NOW)
    apply_order(c, refund("o1", 5990, full=True), WINDOW, NOW)
    assert state(c) == (1, 1000, NOW)
    # recency uses last_order_at (ever): a refund does not erase that a purchase happened
    assert c.has_orders


def test_full_flag_with_partial_amount_still_removes_from_f() -> None:
    c = fresh()
    apply_order(c, completed("o1", 5990), WINDOW, NOW)
    apply_order(c, refund("o1", 990, full=True), WINDOW, NOW)
    assert state(c)[:2] == (0, 5000)


def test_refunds_never_push_monetary_below_zero() -> None:
    c = fresh()
    apply_order(c, completed("o1", 1000), WINDOW, NOW)
    apply_order(c, completed("o2", 500), WINDOW, NOW)
    apply_order(c, refund("o1", 800), WINDOW, NOW)
    apply_order(c, refund("o1", 800), WINDOW, NOW)  # total 1600 > 1000: capped per order
    m = metrics(c, WINDOW, NOW)
    assert m.monetary == 500  # o2 is untouched by o1's over-refund
    assert m.orders == 2


@pytest.mark.parametrize("order_id", ["never-seen", "O1", "o1 "])
def test_refund_of_unknown_order_rejected_and_changes_nothing(order_id: str) -> None:
    c = fresh()
    apply_order(c, completed("o1", 1000), WINDOW, NOW)
    before = copy.deepcopy(c)
    with pytest.raises(Rejected) as info:
        apply_order(c, refund(order_id, 100), WINDOW, NOW)
    assert "\n" not in str(info.value) and "order" in str(info.value)
    assert c == before


def test_refund_on_empty_customer_rejected() -> None:
    c = fresh()
    with pytest.raises(Rejected):
        apply_order(c, refund("o1", 100), WINDOW, NOW)
    assert not c.exists and c.seen_events == set()


_ops = st.lists(
    st.one_of(
        st.tuples(st.just("order"), st.integers(0, 9), st.integers(0, 100_000)),
        st.tuples(st.just("refund"), st.integers(0, 9), st.integers(1, 100_000)),
        st.tuples(st.just("full"), st.integers(0, 9), st.integers(1, 100_000)),
    ),
    max_size=40,
)


@FAST
@given(ops=_ops)
def test_orders_and_refunds_against_a_model(ops: list[tuple[str, int, int]]) -> None:
    """F = completed orders not fully refunded; M = sum of max(0, amount - refunds) >= 0."""
    c = fresh()
    amount: dict[str, int] = {}
    refunded: dict[str, int] = {}
    full: set[str] = set()
    for kind, n, value in ops:
        oid = f"o{n}"
        if kind == "order":
            if oid in amount:
                with pytest.raises(Duplicate):
                    apply_order(c, completed(oid, value), WINDOW, NOW)
            else:
                apply_order(c, completed(oid, value), WINDOW, NOW)
                amount[oid] = value
        else:
            ev = refund(oid, value, full=kind == "full")
            if oid not in amount:
                with pytest.raises(Rejected):
                    apply_order(c, ev, WINDOW, NOW)
            else:
                apply_order(c, ev, WINDOW, NOW)
                refunded[oid] = refunded.get(oid, 0) + value
                if kind == "full":
                    full.add(oid)
        m = metrics(c, WINDOW, NOW)
        assert m.monetary >= 0
        assert m.orders == len(set(amount) - full)
        assert m.monetary == sum(max(0, a - refunded.get(o, 0)) for o, a in amount.items())


# -- the window -------------------------------------------------------------------------------


def test_window_is_half_open() -> None:
    """(now - window_days, now]: an order exactly window old no longer counts."""
    c = fresh()
    t = NOW - 10 * DAY_MS
    apply_order(c, completed("o1", 700, t), WINDOW, NOW)
    assert state(c, now=t + WINDOW - 1)[:2] == (1, 700)
    assert state(c, now=t + WINDOW)[:2] == (0, 0)
    assert state(c, now=t + WINDOW)[2] == t  # recency still uses last_order_at (ever)


def test_window_expiry_without_new_events() -> None:
    c = fresh()
    t1, t2 = NOW - 100 * DAY_MS, NOW - 10 * DAY_MS
    apply_order(c, completed("o1", 100, t1), WINDOW, NOW)
    apply_order(c, completed("o2", 200, t2), WINDOW, NOW)
    apply_interaction(c, liked(t1), 2, WINDOW, NOW)
    apply_interaction(c, liked(t2), 3, WINDOW, NOW)
    assert next_due(c, WINDOW) == t1 + WINDOW

    later = t1 + WINDOW  # the clock passes o1 and the first interaction
    expire(c, WINDOW, later)
    m = metrics(c, WINDOW, later)
    assert (m.orders, m.monetary, m.interactions) == (1, 200, 3)
    assert m.last_order_at == t2 and m.first_order_at == t1
    assert next_due(c, WINDOW) == t2 + WINDOW

    end = t2 + WINDOW
    expire(c, WINDOW, end)
    m = metrics(c, WINDOW, end)
    assert (m.orders, m.monetary, m.interactions) == (0, 0, 0)
    assert m.last_order_at == t2 and m.last_interaction_at == t2
    assert c.has_orders and c.has_interactions
    assert next_due(c, WINDOW) is None


def test_expire_is_the_same_as_reading_metrics_later() -> None:
    c = fresh()
    for d in range(0, 400, 37):
        apply_order(c, completed(f"o{d}", d + 1, NOW - d * DAY_MS), 0, NOW)
    for now in (NOW, NOW + 30 * DAY_MS, NOW + 200 * DAY_MS):
        before = metrics(c, WINDOW, now)
        expire(c, WINDOW, now)
        assert metrics(c, WINDOW, now) == before


def test_order_already_outside_window_counts_only_for_recency() -> None:
    c = fresh()
    old = NOW - 400 * DAY_MS
    apply_order(c, completed("o1", 100, old), WINDOW, NOW)
    assert state(c) == (0, 0, old)
    assert c.has_orders and next_due(c, WINDOW) is None


def test_refund_after_order_aged_out_is_rejected() -> None:
    c = fresh()
    t = NOW - 300 * DAY_MS
    apply_order(c, completed("o1", 100, t), WINDOW, NOW)
    later = t + WINDOW + DAY_MS
    expire(c, WINDOW, later)
    with pytest.raises(Rejected):
        apply_order(c, refund("o1", 50), WINDOW, later)


def test_lifetime_window_never_expires() -> None:
    c = fresh()
    ancient = NOW - 3000 * DAY_MS
    apply_order(c, completed("o1", 100, ancient), 0, NOW)
    apply_interaction(c, liked(ancient), 4, 0, NOW)
    expire(c, 0, NOW + 10_000 * DAY_MS)
    m = metrics(c, 0, NOW + 10_000 * DAY_MS)
    assert (m.orders, m.monetary, m.interactions) == (1, 100, 4)
    assert next_due(c, 0) is None


@FAST
@given(
    ages=st.lists(st.integers(0, 800), min_size=1, max_size=20),
    window_days=st.integers(1, 400),
    advance=st.integers(0, 800),
)
def test_window_counts_against_a_model(ages: list[int], window_days: int, advance: int) -> None:
    window = window_days * DAY_MS
    c = fresh()
    for j, age in enumerate(ages):
        apply_order(c, completed(f"o{j}", 10 + j, NOW - age * DAY_MS), window, NOW)
        apply_interaction(c, liked(NOW - age * DAY_MS - j), 1, window, NOW)
    now = NOW + advance * DAY_MS
    expire(c, window, now)
    m = metrics(c, window, now)
    inside = [j for j, age in enumerate(ages) if NOW - age * DAY_MS > now - window]
    assert m.orders == len(inside)
    assert m.monetary == sum(10 + j for j in inside)
    assert m.interactions == len(inside)
    assert m.last_order_at == NOW - min(ages) * DAY_MS


# -- interactions -----------------------------------------------------------------------------


def test_interactions_are_weighted() -> None:
    c = fresh()
    apply_interaction(c, liked(NOW - 5), 1, WINDOW, NOW)
    apply_interaction(c, liked(NOW - 5, kind="live_view"), 5, WINDOW, NOW)  # same millisecond
    apply_interaction(c, liked(NOW - 1, kind="review"), 3, WINDOW, NOW)
    m = metrics(c, WINDOW, NOW)
    assert m.interactions == 9
    assert m.last_interaction_at == NOW - 1
    assert c.has_interactions and not c.has_orders and c.exists


# -- rescore: change events -------------------------------------------------------------------


def _ctx(now: int = NOW, version: int = 3) -> ScoringContext:
    s = settings_from({}, {})
    edges = {
        "r": (NOW - 90 * DAY_MS, NOW - 30 * DAY_MS, NOW - 10 * DAY_MS, NOW - DAY_MS),
        "f": (1, 2, 3, 5),
        "m": (1000, 5000, 10_000, 50_000),
        "i": (1, 2, 4, 8),
    }
    return ScoringContext(s, Thresholds(version, edges), load_scheme("rfm-classic", 5), now, now)


def test_first_assignment_then_moves() -> None:
    c = fresh()
    ctx = _ctx()
    apply_order(c, completed("o1", 100_000, NOW), WINDOW, NOW)
    change = rescore(c, ctx, "order")
    assert change is not None
    d = change.as_dict()
    assert d["from"] is None and d["seq"] == 1 and d["event_id"] == "c-42:1"
    assert d["customer_id"] == "c-42" and d["cause"] == "order"
    assert d["thresholds_version"] == 3 and d["scheme"] == "rfm-classic"
    assert d["scores"] == {"r": 5, "f": 1, "m": 5, "i": None}
    assert d["metrics"]["orders"] == 1 and d["metrics"]["monetary"] == "1000.00"
    assert c.segment == d["to"] and c.seq == 1

    assert rescore(c, ctx, "order") is None  # nothing moved: no event, seq unchanged
    assert c.seq == 1

    for n in range(2, 8):
        apply_order(c, completed(f"o{n}", 100_000, NOW), WINDOW, NOW)
    change = rescore(c, ctx, "order")
    assert change is not None
    assert change.from_segment == d["to"] and change.to_segment == "champions"
    assert change.seq == 2 and change.event_id == "c-42:2"

    # the clock carries every order out of the window: F and M drop without a new event
    later = replace(ctx, now=NOW + 400 * DAY_MS)
    change = rescore(c, later, "clock")
    assert change is not None and change.seq == 3 and change.cause == "clock"
    assert change.scores == {"r": 5, "f": 1, "m": 1, "i": None}
    assert change.metrics["orders"] == 0 and change.metrics["monetary"] == "0.00"


def test_interacting_only_customer_gets_segment() -> None:
    c = fresh()
    apply_interaction(c, liked(), 1, WINDOW, NOW)
    change = rescore(c, _ctx(), "interaction")
    assert change is not None
    assert change.to_segment == "interacting"
    assert change.scores == {"r": None, "f": None, "m": None, "i": 1}


def test_unknown_customer_gets_no_change() -> None:
    assert rescore(fresh(), _ctx(), "clock") is None
