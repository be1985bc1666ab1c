"""Per-customer state and how events change it (SPEC section 3). Pure: no I/O.

A customer keeps one record per completed order still inside the window (or forever with
``window_days = 0``), because refunds name their order and contributions must leave the
window on their own. F and M are derived from those records at a given ``now``.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from stream.core.events import InteractionEvent, OrderEvent, Rejected
from stream.core.scoring import DAY_MS, NO_SCORES, Scores

# The per-event records below write their own ``__init__`` (``init=False``): mypyc compiles
# a written one, while the one ``dataclass`` generates stays interpreted, and those
# interpreted constructors were ~8% of the compiled worker's samples.


@dataclass(slots=True, init=False)
class OrderRecord:
    at: int  # occurred_at, epoch ms
    amount: int  # minor units
    refunded: int  # minor units, capped at amount so an order never goes below 0
    full: bool  # fully refunded: no longer counts for F

    def __init__(self, at: int, amount: int, refunded: int = 0, full: bool = False) -> None:
        self.at = at
        self.amount = amount
        self.refunded = refunded
        self.full = full

    def __reduce__(self) -> tuple[type[OrderRecord], tuple[int, int, int, bool]]:
        # copies rebuild through __init__: a compiled class's __new__ runs it, with no args
        return (OrderRecord, (self.at, self.amount, self.refunded, self.full))


@dataclass(slots=True, init=False)
class Metrics:
    orders: int
    monetary: int
    interactions: int
    first_order_at: int | None
    last_order_at: int | None
    last_interaction_at: int | None

    def __init__(
        self,
        orders: int = 0,
        monetary: int = 0,
        interactions: int = 0,
        first_order_at: int | None = None,
        last_order_at: int | None = None,
        last_interaction_at: int | None = None,
    ) -> None:
        self.orders = orders
        self.monetary = monetary
        self.interactions = interactions
        self.first_order_at = first_order_at
        self.last_order_at = last_order_at
        self.last_interaction_at = last_interaction_at


@dataclass(slots=True, init=False)
class Customer:
    customer_id: str
    orders: dict[str, OrderRecord]
    interactions: dict[int, int]  # occurred_at ms -> weight
    first_order_at: int | None
    last_order_at: int | None
    last_interaction_at: int | None
    channels: set[str]
    # lifetime purchase history, the sufficient statistics of the CLV models (stream.clv.model):
    purchase_days: int  # distinct UTC days with a completed order, ever
    spend: int  # every completed order ever, net of refunds, minor units
    first_day_spend: int  # the part of ``spend`` made on the first purchase day
    churn_risk: bool  # P(alive) fell below the configured threshold
    scores: Scores
    segment: str | None
    seq: int
    version: int  # optimistic-concurrency token of the stored copy
    # (orders, monetary) as last committed: what this customer adds to its segment's report
    tally: tuple[int, int] | None
    # event ids known to be applied (loaded for this batch) and the ones this batch adds
    seen_events: set[str]
    new_events: list[str]
    # the dedupe marks kept in the customer's own hash: event id -> when it expires (ms)
    marks: dict[str, int]

    def __init__(
        self,
        customer_id: str,
        orders: dict[str, OrderRecord] | None = None,
        interactions: dict[int, int] | None = None,
        first_order_at: int | None = None,
        last_order_at: int | None = None,
        last_interaction_at: int | None = None,
        channels: set[str] | None = None,
        purchase_days: int = 0,
        spend: int = 0,
        first_day_spend: int = 0,
        churn_risk: bool = False,
        scores: Scores | None = None,
        segment: str | None = None,
        seq: int = 0,
        version: int = 0,
        tally: tuple[int, int] | None = None,
        seen_events: set[str] | None = None,
        new_events: list[str] | None = None,
        marks: dict[str, int] | None = None,
    ) -> None:
        self.customer_id = customer_id
        self.orders = {} if orders is None else orders
        self.interactions = {} if interactions is None else interactions
        self.first_order_at = first_order_at
        self.last_order_at = last_order_at
        self.last_interaction_at = last_interaction_at
        self.channels = set() if channels is None else channels
        self.purchase_days = purchase_days
        self.spend = spend
        self.first_day_spend = first_day_spend
        self.churn_risk = churn_risk
        self.scores = NO_SCORES if scores is None else scores
        self.segment = segment
        self.seq = seq
        self.version = version
        self.tally = tally
        self.seen_events = set() if seen_events is None else seen_events
        self.new_events = [] if new_events is None else new_events
        self.marks = {} if marks is None else marks

    def __reduce__(self) -> tuple[type[Customer], tuple[object, ...]]:
        # copies rebuild through __init__ (see OrderRecord.__reduce__)
        return (Customer, tuple(getattr(self, f) for f in _CUSTOMER_FIELDS))

    @property
    def has_orders(self) -> bool:
        return self.last_order_at is not None

    @property
    def has_interactions(self) -> bool:
        return self.last_interaction_at is not None

    @property
    def exists(self) -> bool:
        return self.has_orders or self.has_interactions


_CUSTOMER_FIELDS = tuple(f.name for f in fields(Customer))


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
