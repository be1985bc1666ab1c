"""An independent batch recomputation of SPEC sections 3-5 from the raw event log.

It never reads Redis and shares no code with the scorer except the scheme's rules, which it
evaluates the slow, literal way (first rule whose conditions all hold, after projecting the
scores onto the scheme's scale as documented). Amounts are exact Decimals; thresholds come
from numpy's ``inverted_cdf`` quantiles exactly as SPEC section 4 states them.

Input: the *valid* events in log order (what a storefront sent, minus what the DLQ should
get), as decoded JSON documents. Per customer the log order is the processing order, because
events are keyed (and so partitioned) by customer.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction
from typing import Any

import numpy as np

from stream.core.scheme import Profile, Scheme

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
    seen: set[str] = field(default_factory=set)
    orders: dict[str, _Order] = field(default_factory=dict)
    interactions: list[tuple[int, int]] = field(default_factory=list)  # (at, weight)
    last_order_at: int | None = None
    last_interaction_at: int | None = None
    channels: set[str] = field(default_factory=set)


@dataclass(frozen=True)
class Expected:
    orders: int
    monetary: Decimal
    interactions: int
    last_order_at: int | None
    scores: dict[str, int | None]
    segment: str
    channels: frozenset[str] = frozenset()


def _edges(values: list[Any], buckets: int) -> list[float]:
    if not values:
        return []
    arr = np.array([float(v) for v in values], dtype=np.float64)
    return [float(np.quantile(arr, k / buckets, method="inverted_cdf")) for k in range(1, buckets)]


def _score(value: Any, edges: list[float]) -> int:
    return 1 + sum(1 for t in edges if float(value) > t)


def _project(score: int | None, buckets: int, scale: int) -> int | None:
    """docs/schemes.md: s -> 1 + round((s - 1) * (S - 1) / (B - 1)), halves rounding up."""
    if score is None or buckets == scale:
        return score
    return 1 + math.floor(Fraction((score - 1) * (scale - 1), buckets - 1) + Fraction(1, 2))


def replay(
    events: Iterable[Mapping[str, Any]], weights: Mapping[str, int] | None = None
) -> tuple[dict[str, _Customer], int]:
    """Fold the log into per-customer histories; returns them and the event clock."""
    customers: dict[str, _Customer] = {}
    clock = 0
    for e in events:
        cid = e["customer_id"]
        if "requested_at" in e:  # erasure: every trace goes, dedupe marks included
            customers.pop(cid, None)
            continue
        c = customers.setdefault(cid, _Customer())
        if e["event_id"] in c.seen:
            continue
        at = epoch_ms(e["occurred_at"])
        kind = e["type"]
        if kind == "order_completed":
            oid = str(e["order_id"])
            if oid in c.orders:
                continue
            c.orders[oid] = _Order(at, Decimal(str(e["amount"])))
            if e.get("channel"):
                c.channels.add(e["channel"])
            c.last_order_at = at if c.last_order_at is None else max(c.last_order_at, at)
        elif kind == "order_refunded":
            order = c.orders.get(str(e["order_id"]))
            if order is None:
                continue  # refund of an unknown order: rejected, claims nothing
            order.refunded = min(order.amount, order.refunded + Decimal(str(e["amount"])))
            order.full = order.full or bool(e.get("full"))
        else:
            weight = (weights or {}).get(e["kind"], 1)
            c.interactions.append((at, weight))
            last = c.last_interaction_at
            c.last_interaction_at = at if last is None else max(last, at)
        c.seen.add(e["event_id"])
        clock = max(clock, at)
    return {cid: c for cid, c in customers.items() if c.seen}, clock


def recompute(
    events: Iterable[Mapping[str, Any]],
    scheme: Scheme,
    *,
    buckets: int = 5,
    window_days: int = 365,
    now: int | None = None,
    weights: Mapping[str, int] | None = None,
) -> dict[str, Expected]:
    """Every customer's expected metrics, scores and segment; ``now`` defaults to the event
    clock (the highest ``occurred_at`` applied)."""
    customers, clock = replay(events, weights)
    now = clock if now is None else now
    edge = now - window_days * DAY_MS if window_days else None

    def live(at: int) -> bool:
        return edge is None or at > edge

    values: dict[str, dict[str, Any]] = {}
    for cid, c in customers.items():
        row: dict[str, Any] = {}
        if c.last_order_at is not None:
            kept = [o for o in c.orders.values() if live(o.at)]
            row["r"] = c.last_order_at
            row["f"] = sum(1 for o in kept if not o.full)
            row["m"] = sum((o.amount - o.refunded for o in kept), Decimal(0))
        if c.last_interaction_at is not None:
            row["i"] = sum(w for at, w in c.interactions if live(at))
        values[cid] = row

    edges = {
        dim: _edges([row[dim] for row in values.values() if dim in row], buckets)
        for dim in ("r", "f", "m", "i")
    }
    out: dict[str, Expected] = {}
    for cid, row in values.items():
        scores = {d: (_score(row[d], edges[d]) if d in row else None) for d in ("r", "f", "m", "i")}
        on_scale = {d: _project(v, buckets, scheme.buckets) for d, v in scores.items()}
        profile = Profile(
            r=on_scale["r"],
            f=on_scale["f"],
            m=on_scale["m"],
            i=on_scale["i"],
            orders=row.get("f", 0),
            has_orders="r" in row,
            has_interactions="i" in row,
        )
        segment = next(rule.id for rule in scheme.rules if rule.matches(profile))
        out[cid] = Expected(
            orders=row.get("f", 0),
            monetary=row.get("m", Decimal(0)),
            interactions=row.get("i", 0),
            last_order_at=row.get("r"),
            scores=scores,
            segment=segment,
            channels=frozenset(customers[cid].channels),
        )
    return out


def aggregates(expected: Mapping[str, Expected]) -> tuple[dict[str, int], dict[str, int]]:
    """The operator aggregates the scorer keeps live, recomputed: the segment report hash
    (``<seg>|orders``, ``<seg>|monetary`` in minor units, ``<seg>|ch:<channel>``) and the
    R x F grid (``"<r>:<f>"`` -> customers); zero entries left out."""
    report: dict[str, int] = {}
    grid: dict[str, int] = {}

    def add(table: dict[str, int], key: str, n: int) -> None:
        table[key] = table.get(key, 0) + n

    for want in expected.values():
        add(report, f"{want.segment}|orders", want.orders)
        add(report, f"{want.segment}|monetary", int(want.monetary * 100))
        for channel in want.channels:
            add(report, f"{want.segment}|ch:{channel}", 1)
        if want.scores["r"] is not None:
            add(grid, f"{want.scores['r']}:{want.scores['f']}", 1)
    return {k: v for k, v in report.items() if v}, {k: v for k, v in grid.items() if v}
