"""A population's quantile thresholds from the workload's arrays, published before it loads.

Why seed: a scorer that starts from "no thresholds" scores everyone 1 and its first refresh
re-scores the whole population. Neither is the steady state the figures are about, so each
namespace gets the final population's edges as version 1 (settled) before any event is sent:
events are then scored as in production, and a refresh finds nothing to do until the
population changes.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from bench import BenchError
from stream.core.scoring import Thresholds
from stream.shell.processor import wall_ms
from stream.store.keys import DIMS
from stream.store.redis_store import RedisStore


@dataclass(frozen=True)
class Population:
    """Per customer: last order time, orders and monetary (minor units), as the indexes hold."""

    last: np.ndarray
    orders: np.ndarray
    monetary: np.ndarray

    @classmethod
    def of(cls, customer: np.ndarray, amount: np.ndarray, at: np.ndarray) -> Population:
        """Group per-event arrays by customer index (0..n-1, every index present)."""
        n = int(customer.max()) + 1 if len(customer) else 0
        last = np.full(n, np.iinfo(np.int64).min, dtype=np.int64)
        np.maximum.at(last, customer, at.astype(np.int64))
        orders = np.bincount(customer, minlength=n).astype(np.int64)
        monetary = np.bincount(customer, weights=amount.astype(np.float64), minlength=n)
        return cls(last, orders, monetary.astype(np.int64))


def edges(values: np.ndarray, buckets: int) -> tuple[int, ...]:
    """SPEC section 4: ``t_k = v(ceil(k*N/B))``, which is numpy's ``inverted_cdf``."""
    if not len(values):
        return ()
    qs = np.quantile(values, [k / buckets for k in range(1, buckets)], method="inverted_cdf")
    return tuple(int(q) for q in qs)


def thresholds_of(pop: Population, buckets: int) -> Thresholds:
    n = len(pop.last)
    return Thresholds(
        version=1,  # the store numbers versions itself; see seed()
        edges={
            "r": edges(pop.last, buckets),
            "f": edges(pop.orders, buckets),
            "m": edges(pop.monetary, buckets),
        }
        if n
        else {},
        population={d: (n if d != "i" else 0) for d in DIMS},
        computed_at=wall_ms(),
    )


async def seed(store: RedisStore, thresholds: Thresholds) -> None:
    """Publish ``thresholds`` as current and settled, through the store's own lease protocol."""
    token = await store.acquire_lease(60_000)
    if token is None:
        raise BenchError("the namespace's refresh lease is taken: is a worker refreshing?")
    try:
        current, _ = await store.thresholds()
        version = await store.publish_thresholds(token, current.version, thresholds)
        if version < 0:
            raise BenchError("could not publish the seeded thresholds")
        if await store.settle_thresholds(token, replace(thresholds, version=version)) < 0:
            raise BenchError("could not settle the seeded thresholds")
        await store.mark_refreshed(wall_ms())
    finally:
        await store.release_lease(token)
