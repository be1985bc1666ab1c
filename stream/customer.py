"""Per-customer state and how events change it (SPEC section 3). Pure: no I/O.

A customer keeps one record per completed order still inside the window (or forever with
``window_days = 0``), because refunds name their order and contributions must leave the
window on their own. F and M are derived from those records at a given ``now``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from stream.events import InteractionEvent, OrderEvent, Rejected
from stream.scoring import DAY_MS, Scores


@dataclass(slots=True)
class OrderRecord:
    at: int  # occurred_at, epoch ms
    amount: int  # minor units
    refunded: int = 0  # minor units, capped at amount so an order never goes below 0
    full: bool = False  # fully refunded: no longer counts for F


@dataclass(slots=True)
class Metrics:
    orders: int = 0
    monetary: int = 0
    interactions: int = 0
    first_order_at: int | None = None
    last_order_at: int | None = None
    last_interaction_at: int | None = None


@dataclass(slots=True)
class Customer:
    customer_id: str
    orders: dict[str, OrderRecord] = field(default_factory=dict)
    interactions: dict[int, int] = field(default_factory=dict)  # occurred_at ms -> weight
    first_order_at: int | None = None
    last_order_at: int | None = None
    last_interaction_at: int | None = None
    channels: set[str] = field(default_factory=set)
    # lifetime purchase history, the sufficient statistics of the CLV models (stream.clv):
    purchase_days: int = 0  # distinct UTC days with a completed order, ever
    spend: int = 0  # every completed order ever, net of refunds, minor units
    first_day_spend: int = 0  # the part of ``spend`` made on the first purchase day
    churn_risk: bool = False  # P(alive) fell below the configured threshold
    scores: Scores = field(default_factory=Scores)
    segment: str | None = None
    seq: int = 0
    version: int = 0  # optimistic-concurrency token of the stored copy
    # (orders, monetary) as last committed: what this customer adds to its segment's report
    tally: tuple[int, int] | None = None
    # event ids known to be applied (loaded for this batch) and the ones this batch adds
    seen_events: set[str] = field(default_factory=set)
    new_events: list[str] = field(default_factory=list)
    # the dedupe marks kept in the customer's own hash: event id -> when it expires (ms)
    marks: dict[str, int] = field(default_factory=dict)

    @property
    def has_orders(self) -> bool:
        return self.last_order_at is not None

    @property
    def has_interactions(self) -> bool:
        return self.last_interaction_at is not None

    @property
    def exists(self) -> bool:
        return self.has_orders or self.has_interactions


class Duplicate(Exception):
    """The event was applied before; it changes nothing."""


def _claim(customer: Customer, event_id: str) -> None:
    if event_id in customer.seen_events:
        raise Duplicate(event_id)
    customer.seen_events.add(event_id)
    customer.new_events.append(event_id)


def apply_order(customer: Customer, event: OrderEvent, window_ms: int, now: int) -> None:
    """Fold one order event in; raises ``Duplicate`` or ``Rejected`` and then changes nothing."""
    if event.event_id in customer.seen_events:
        raise Duplicate(event.event_id)
    if event.refund:
        record = customer.orders.get(event.order_id)
        if record is None:
            raise Rejected(
                "refund for an unknown order_id (never completed, or aged out of the window)"
            )
        _claim(customer, event.event_id)
        refunded = min(record.amount, record.refunded + event.amount)
        customer.spend -= refunded - record.refunded
        if customer.first_order_at is not None and day(record.at) == day(customer.first_order_at):
            customer.first_day_spend -= refunded - record.refunded
        record.refunded = refunded
        record.full = record.full or event.full
        return
    in_window = window_ms == 0 or event.occurred_at > now - window_ms
    if event.order_id in customer.orders:
        raise Duplicate(event.order_id)
    _claim(customer, event.event_id)
    _count_purchase(customer, event.occurred_at, event.amount)
    if in_window:
        customer.orders[event.order_id] = OrderRecord(event.occurred_at, event.amount)
    if customer.first_order_at is None or event.occurred_at < customer.first_order_at:
        customer.first_order_at = event.occurred_at
    if customer.last_order_at is None or event.occurred_at > customer.last_order_at:
        customer.last_order_at = event.occurred_at
    if event.channel:
        customer.channels.add(event.channel)


def day(epoch_ms: int) -> int:
    return epoch_ms // DAY_MS


def _count_purchase(customer: Customer, at: int, amount: int) -> None:
    """Lifetime purchase statistics; call before the order joins ``customer.orders``.

    Orders on the same UTC day are one purchase occasion, as in the published CDNOW
    analyses. Same-day orders are found among the stored (in-window) orders, so the count
    is exact unless an order arrives later than the window on a day that had another.
    """
    d = day(at)
    if all(day(r.at) != d for r in customer.orders.values()):
        customer.purchase_days += 1
    customer.spend += amount
    first = None if customer.first_order_at is None else day(customer.first_order_at)
    if first is None or d < first:
        customer.first_day_spend = amount
    elif d == first:
        customer.first_day_spend += amount


def apply_interaction(
    customer: Customer, event: InteractionEvent, weight: int, window_ms: int, now: int
) -> None:
    _claim(customer, event.event_id)
    if window_ms == 0 or event.occurred_at > now - window_ms:
        customer.interactions[event.occurred_at] = (
            customer.interactions.get(event.occurred_at, 0) + weight
        )
    if customer.last_interaction_at is None or event.occurred_at > customer.last_interaction_at:
        customer.last_interaction_at = event.occurred_at


def expire(customer: Customer, window_ms: int, now: int) -> None:
    """Drop contributions that the clock has carried out of the window."""
    if window_ms == 0:
        return
    edge = now - window_ms
    for order_id in [k for k, r in customer.orders.items() if r.at <= edge]:
        del customer.orders[order_id]
    for at in [at for at in customer.interactions if at <= edge]:
        del customer.interactions[at]


def metrics(customer: Customer, window_ms: int, now: int) -> Metrics:
    edge = now - window_ms if window_ms else None
    orders = monetary = interactions = 0
    for record in customer.orders.values():
        if edge is not None and record.at <= edge:
            continue
        if not record.full:
            orders += 1
        monetary += record.amount - record.refunded
    for at, weight in customer.interactions.items():
        if edge is None or at > edge:
            interactions += weight
    return Metrics(
        orders=orders,
        monetary=monetary,
        interactions=interactions,
        first_order_at=customer.first_order_at,
        last_order_at=customer.last_order_at,
        last_interaction_at=customer.last_interaction_at,
    )


def next_due(customer: Customer, window_ms: int) -> int | None:
    """When the clock alone will next change this customer's metrics (a contribution leaves)."""
    if window_ms == 0:
        return None
    times = [r.at for r in customer.orders.values()]
    times.extend(customer.interactions)
    return min(times) + window_ms if times else None
