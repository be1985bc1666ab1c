"""The demo's simulated shop: a fixed population whose orders, refunds and social
interactions look like a real shop's over time. Pure: no I/O, no wall clock.

Every customer is one of ``customers`` ids (``c-00000`` ...), and each one's first event (a
purchase, or for prospects an interaction) falls inside the back-filled history, so the
population the demo announces is the population the store sees, from the first minute on.

Buying follows the buy-till-you-die story the CLV models assume (stream.clv):

- while active, a customer buys as a Poisson process whose rate is drawn from a gamma
  (a few buy monthly, most a few times a year);
- after each purchase it drops out with a probability drawn from a beta;
- a dropped-out customer may come back, after a long dormancy, for another active spell
  (win-backs, and the "new" customers a fixed population still shows);
- the spend per order is gamma with a gamma-distributed scale across customers
  (Gamma-Gamma with a finite mean: the whales are rare, not a third of the revenue).

Some buyers follow the shop on social channels before their first order (prospects, who
convert during the run), a share never buy at all (fans), a few orders are refunded within
two weeks, most of them in full. Each customer's events come from its own seeded generator,
so a customer's story does not depend on who else is in the shop, and ``timeline`` is one
deterministic, time-ordered stream: the same seed gives the same events however the caller
slices the clock.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import count

from stream.core.changes import iso_ms
from stream.core.scoring import DAY_MS

YEAR_MS = 365 * DAY_MS
ORDER_CHANNELS = (("online", 50), ("app", 25), ("pos", 15), ("social", 7), ("marketplace", 3))
INTERACTION_KINDS = (
    ("like", 40),
    ("comment", 18),
    ("live_view", 15),
    ("click", 12),
    ("share", 7),
    ("message", 5),
    ("review", 3),
)
SOCIAL_CHANNELS = (("facebook", 45), ("instagram", 35), ("line", 20))


@dataclass(frozen=True)
class Behaviour:
    """The shop's population parameters (rates per year, money in whole TWD)."""

    rate_shape: float = 2.0  # purchase rate ~ Gamma(shape, mean / shape)
    rate_mean: float = 4.0  # purchases a year while active, on average
    dropout_a: float = 1.5  # dropout probability per purchase ~ Beta(a, b): mean 0.25
    dropout_b: float = 4.5
    dormancy_days: float = 200.0  # mean time before a dropped-out customer comes back
    spend_p: float = 4.0  # order value ~ Gamma(p, scale 1/nu), nu ~ Gamma(q, rate gamma):
    spend_q: float = 5.0  # mean order value p * gamma / (q - 1); q > 1 keeps it finite
    spend_gamma: float = 1200.0
    min_amount: int = 30
    fan_share: float = 0.08  # interact, never buy
    prospect_share: float = 0.4  # interact for a while before their first order
    consideration_days: float = 365.0  # mean wait of a prospect before its first order
    interaction_shape: float = 0.6  # interactions a year ~ Gamma(shape, mean / shape)
    interaction_mean: float = 3.0
    refund_share: float = 0.04  # of orders, refunded within refund_days
    full_refund_share: float = 0.7
    refund_days: int = 14

    @property
    def mean_order_value(self) -> float:
        return self.spend_p * self.spend_gamma / (self.spend_q - 1)


@dataclass(frozen=True)
class Shopper:
    """One customer's traits, drawn once from its own generator."""

    index: int
    customer_id: str
    arrival: int  # its first event, epoch ms
    buys: bool
    first_order: int  # epoch ms (meaningless when not ``buys``)
    rate: float  # purchases a year while active
    dropout: float
    nu: float  # inverse scale of its order values
    chat_rate: float  # interactions a year


@dataclass(frozen=True, order=True)
class ShopEvent:
    """One event as the demo publishes it: ``topic`` is ``orders`` or ``interactions``."""

    at: int
    seq: int = field(compare=True)  # ties broken by generation order, deterministic
    topic: str = field(compare=False)
    customer_id: str = field(compare=False)
    doc: dict[str, object] = field(compare=False)


def customer_id(index: int) -> str:
    return f"c-{index:05d}"


def _rng(seed: int, index: int) -> random.Random:
    return random.Random(f"rfm-demo:{seed}:{index}")


def _pick(rng: random.Random, table: tuple[tuple[str, int], ...]) -> str:
    return rng.choices([k for k, _ in table], [w for _, w in table])[0]


def _gap(rng: random.Random, per_year: float) -> int:
    """Time to the next event of a Poisson process, at least a minute apart."""
    return max(60_000, int(rng.expovariate(per_year) * YEAR_MS))


def shopper(index: int, seed: int, history_start: int, start: int, b: Behaviour) -> Shopper:
    """Customer ``index``: first seen at a uniform time in ``[history_start, start]``."""
    rng = _rng(seed, index)
    arrival = rng.randrange(history_start, start + 1)
    kind = rng.random()
    buys = kind >= b.fan_share
    first_order = arrival
    if buys and kind < b.fan_share + b.prospect_share:
        first_order = arrival + int(rng.expovariate(1 / b.consideration_days) * DAY_MS)
    return Shopper(
        index=index,
        customer_id=customer_id(index),
        arrival=arrival,
        buys=buys,
        first_order=first_order,
        rate=rng.gammavariate(b.rate_shape, b.rate_mean / b.rate_shape),
        dropout=rng.betavariate(b.dropout_a, b.dropout_b),
        nu=rng.gammavariate(b.spend_q, 1 / b.spend_gamma),
        # prospects and fans are the ones who talk to the shop before (or instead of) buying
        chat_rate=rng.gammavariate(b.interaction_shape, b.interaction_mean / b.interaction_shape)
        + (2.0 if first_order > arrival or not buys else 0.0),
    )


Timed = tuple[int, str, dict[str, object]]  # (occurred_at ms, topic, event document)


def _orders(s: Shopper, rng: random.Random, b: Behaviour) -> Iterator[Timed]:
    """Active spells of purchases, dropout, dormancy, again; refunds in time order."""
    refunds: list[tuple[int, int, dict[str, object]]] = []
    n = count()
    t = s.first_order
    number = 0
    while True:
        order_id = f"{s.customer_id}-{number}"
        number += 1
        amount = max(b.min_amount, round(rng.gammavariate(b.spend_p, 1 / s.nu)))
        while refunds and refunds[0][0] <= t:
            at, _, doc = heapq.heappop(refunds)
            yield at, "orders", doc
        yield (
            t,
            "orders",
            {
                "event_id": f"{order_id}:paid",
                "type": "order_completed",
                "order_id": order_id,
                "customer_id": s.customer_id,
                "amount": f"{amount}.00",
                "currency": "TWD",
                "occurred_at": iso_ms(t),
                "channel": _pick(rng, ORDER_CHANNELS),
            },
        )
        if rng.random() < b.refund_share:
            full = rng.random() < b.full_refund_share
            back = amount if full else max(1, amount * rng.randint(10, 60) // 100)
            at = t + rng.randrange(DAY_MS, b.refund_days * DAY_MS)
            refund: dict[str, object] = {
                "event_id": f"{order_id}:refund",
                "type": "order_refunded",
                "order_id": order_id,
                "customer_id": s.customer_id,
                "amount": f"{back}.00",
                "currency": "TWD",
                "occurred_at": iso_ms(at),
                "full": full,
            }
            heapq.heappush(refunds, (at, next(n), refund))
        if rng.random() < s.dropout:  # gone after this purchase; maybe back one day
            t += int(rng.expovariate(1 / b.dormancy_days) * DAY_MS) + DAY_MS
        else:
            t += _gap(rng, s.rate)


def _interactions(s: Shopper, rng: random.Random, t: int) -> Iterator[Timed]:
    number = 0
    while True:
        yield (
            t,
            "interactions",
            {
                "event_id": f"{s.customer_id}-i{number}",
                "type": "interaction",
                "customer_id": s.customer_id,
                "kind": _pick(rng, INTERACTION_KINDS),
                "channel": _pick(rng, SOCIAL_CHANNELS),
                "occurred_at": iso_ms(t),
            },
        )
        number += 1
        t += _gap(rng, s.chat_rate)


def customer_events(s: Shopper, seed: int, b: Behaviour) -> Iterator[Timed]:
    """One customer's endless story in time order. Prospects and fans open with an
    interaction at their arrival, other buyers with their first order."""
    chat = random.Random(f"rfm-demo:{seed}:{s.index}:chat")
    talks_first = not s.buys or s.first_order > s.arrival
    first_talk = s.arrival if talks_first else s.arrival + _gap(chat, s.chat_rate)
    streams = [_interactions(s, chat, first_talk)]
    if s.buys:
        streams.append(_orders(s, random.Random(f"rfm-demo:{seed}:{s.index}:orders"), b))
    return heapq.merge(*streams, key=lambda e: e[0])


@dataclass(frozen=True)
class Shop:
    """``customers`` shoppers, history from ``start - history_days`` to ``start``."""

    customers: int
    start: int  # epoch ms: the back-fill ends here, live traffic goes on from here
    seed: int = 7
    history_days: int = 730
    behaviour: Behaviour = Behaviour()

    @property
    def history_start(self) -> int:
        return self.start - self.history_days * DAY_MS

    def shoppers(self) -> list[Shopper]:
        return [
            shopper(i, self.seed, self.history_start, self.start, self.behaviour)
            for i in range(self.customers)
        ]

    def timeline(self) -> Iterator[ShopEvent]:
        """Every event of every customer from the start of history on, in time order."""
        b = self.behaviour
        streams = [
            ((at, s.index, topic, doc) for at, topic, doc in customer_events(s, self.seed, b))
            for s in self.shoppers()
        ]
        numbering = count()
        for at, _, topic, doc in heapq.merge(*streams, key=lambda e: (e[0], e[1])):
            yield ShopEvent(at, next(numbering), topic, str(doc["customer_id"]), doc)
