"""An independent batch recomputation of SPEC sections 3-5 from the raw event log.

It never reads Redis and shares no code with the scorer except the scheme's rules, which it
evaluates the slow, literal way (first rule whose conditions all hold). Amounts are exact
Decimals, thresholds come from numpy's ``inverted_cdf`` quantiles as SPEC section 4 states.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import numpy as np

from stream.segments import Profile, Scheme

DAY_MS = 86_400_000


def epoch_ms(value: Any) -> int:
    if isinstance(value, int):
        return value
    return int(dt.datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp() * 1000)


@dataclass
class _Order:
    at: int
    amount: Decimal
    refunded: Decimal = Decimal(0)
    full: bool = False


@dataclass
class _Customer:
    orders: dict[str, _Order] = field(default_factory=dict)
    last_order_at: int | None = None


@dataclass(frozen=True)
class Expected:
    orders: int
    monetary: Decimal
    last_order_at: int
    scores: dict[str, int]
    segment: str


def _quantile_edges(values: list[int] | list[Decimal], buckets: int) -> list[float]:
    arr = np.array([float(v) for v in values], dtype=np.float64)
    return [float(np.quantile(arr, k / buckets, method="inverted_cdf")) for k in range(1, buckets)]


def _score(value: float, edges: list[float]) -> int:
    return 1 + sum(1 for t in edges if value > t)


def recompute(
    events: Iterable[Mapping[str, Any]],
    scheme: Scheme,
    *,
    buckets: int = 5,
    window_days: int = 365,
    now: int | None = None,
) -> dict[str, Expected]:
    """Valid order events in log order -> every customer's expected metrics, scores, segment.

    ``now`` defaults to the event clock: the highest ``occurred_at`` in the log.
    """
    seen_events: set[tuple[str, str]] = set()
    customers: dict[str, _Customer] = {}
    clock = 0
    for e in events:
        cid = e["customer_id"]
        if (cid, e["event_id"]) in seen_events:
            continue
        at = epoch_ms(e["occurred_at"])
        c = customers.setdefault(cid, _Customer())
        if e["type"] == "order_completed":
            if e["order_id"] in c.orders:
                continue
            c.orders[str(e["order_id"])] = _Order(at, Decimal(str(e["amount"])))
            c.last_order_at = at if c.last_order_at is None else max(c.last_order_at, at)
        elif e["type"] == "order_refunded":
            order = c.orders[str(e["order_id"])]
            order.refunded = min(order.amount, order.refunded + Decimal(str(e["amount"])))
            order.full = order.full or bool(e.get("full"))
        seen_events.add((cid, e["event_id"]))
        clock = max(clock, at)
    now = clock if now is None else now
    edge = now - window_days * DAY_MS if window_days else None

    rows: dict[str, tuple[int, Decimal, int]] = {}
    for cid, c in customers.items():
        if c.last_order_at is None:
            continue
        live = [o for o in c.orders.values() if edge is None or o.at > edge]
        f = sum(1 for o in live if not o.full)
        m = sum((o.amount - o.refunded for o in live), Decimal(0))
        rows[cid] = (c.last_order_at, m, f)

    r_edges = _quantile_edges([v[0] for v in rows.values()], buckets)
    m_edges = _quantile_edges([v[1] for v in rows.values()], buckets)
    f_edges = _quantile_edges([v[2] for v in rows.values()], buckets)
    out: dict[str, Expected] = {}
    for cid, (last, m, f) in rows.items():
        scores = {
            "r": _score(float(last), r_edges),
            "f": _score(float(f), f_edges),
            "m": _score(float(m), m_edges),
        }
        profile = Profile(
            r=scores["r"],
            f=scores["f"],
            m=scores["m"],
            i=None,
            orders=f,
            has_orders=True,
            has_interactions=False,
        )
        segment = next(rule.id for rule in scheme.rules if rule.matches(profile))
        out[cid] = Expected(f, m, last, scores, segment)
    return out
