"""Synthetic order events: the bytes a storefront would send, plus the truth behind them.

The bytes go through Kafka; the arrays (customer, amount, time per event) let the bench
compute the population's thresholds without decoding anything, so seeding them is cheap and
independent of the code under test. Every customer's first order has a distinct time and a
distinct amount: no ties on R or M, so quantile edges (and who a shift of them moves) do not
depend on tie-breaking.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import orjson

from stream.core.changes import iso_ms
from stream.core.scoring import DAY_MS

SPREAD_MS = 300 * DAY_MS  # history inside the default 365-day window: nothing ages out mid-run
MIN_AMOUNT = 10_000  # minor units (100.00)
MAX_AMOUNT = 5_000_000  # minor units (50,000.00)
CHANNELS = ("online", "online", "app", "pos", "social")
SEED = 20_261_123  # the generator's default: the same arguments give the same events


@dataclass
class Workload:
    """Order events in send order; arrays are per event, ``customer`` indexes ``ids``."""

    ids: list[str]
    customer: np.ndarray
    amount: np.ndarray  # minor units
    at: np.ndarray  # epoch ms
    events: list[tuple[bytes, bytes]]  # (key, value) as produced

    @property
    def customers(self) -> int:
        return len(self.ids)

    def __len__(self) -> int:
        return len(self.events)


def customer_id(tag: str, n: int) -> str:
    return f"{tag}{n:07d}"


def orders(
    customers: int,
    events: int,
    *,
    now_ms: int,
    tag: str = "c",
    seed: int = SEED,
    currency: str = "TWD",
    decimals: int = 2,
) -> Workload:
    """``events`` completed orders over ``customers`` customers (each has at least one order
    when ``events >= customers``), dated up to 300 days back and shuffled."""
    rng = np.random.default_rng(seed)
    customers = min(customers, events)
    # First orders: a permutation of an evenly spaced grid, hence distinct R and M values.
    first_at = now_ms - DAY_MS - rng.permutation(customers) * max(1, SPREAD_MS // customers)
    step = max(1, (MAX_AMOUNT - MIN_AMOUNT) // customers)
    first_amount = MIN_AMOUNT + rng.permutation(customers) * step
    extra = events - customers
    cust = np.concatenate([np.arange(customers), rng.integers(0, customers, extra)])
    at = np.concatenate([first_at, now_ms - DAY_MS - rng.integers(0, SPREAD_MS, extra)])
    amount = np.concatenate([first_amount, rng.integers(MIN_AMOUNT, MAX_AMOUNT, extra)])
    order = rng.permutation(events)
    cust, at, amount = cust[order], at[order], amount[order]
    ids = [customer_id(tag, n) for n in range(customers)]
    channels = rng.integers(0, len(CHANNELS), events)
    out = [
        (
            ids[cust[n]].encode("utf-8"),
            order_event(
                f"{tag}-{n}",
                ids[cust[n]],
                int(amount[n]),
                int(at[n]),
                CHANNELS[channels[n]],
                currency=currency,
                decimals=decimals,
            ),
        )
        for n in range(events)
    ]
    return Workload(ids, cust, amount, at, out)


def order_event(
    event_id: str,
    cid: str,
    minor: int,
    at_ms: int,
    channel: str = "online",
    *,
    currency: str = "TWD",
    decimals: int = 2,
) -> bytes:
    """One ``order_completed`` (its order id is its event id), as a storefront sends it."""
    unit = 10**decimals
    amount = f"{minor // unit}.{minor % unit:0{decimals}d}" if decimals else str(minor)
    return orjson.dumps(
        {
            "event_id": event_id,
            "type": "order_completed",
            "order_id": event_id,
            "customer_id": cid,
            "amount": amount,
            "currency": currency,
            "occurred_at": iso_ms(at_ms),
            "channel": channel,
        }
    )
