"""Reads from the scorer's Redis keys into plain records. No shaping, no arithmetic.

Every aggregate read here is kept by the scorer's commit script in the same atomic step as
the customer's segment, so one HGETALL is a consistent snapshot of that aggregate.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from stream.config import Settings
from stream.core.customer import Customer
from stream.core.scoring import Thresholds
from stream.shell.processor import wall_ms
from stream.store.codec import decode_customer
from stream.store.history import segment_history
from stream.store.redis_store import RedisStore


@dataclass(frozen=True)
class CustomerRecord:
    customer: Customer
    history: list[dict[str, Any]]  # its segment changes, newest first (stream.store.history)


@dataclass(frozen=True)
class Overview:
    """What ``/metrics`` exposes."""

    counts: dict[str, int]
    stats: dict[str, int]
    thresholds_version: int
    outbox: int


async def ping(store: RedisStore) -> bool:
    return bool(await store.redis.ping())


async def counts(store: RedisStore) -> dict[str, int]:
    """Live customers per segment; segments that emptied keep a 0 field and are dropped."""
    return await store.counts()


async def segment_report(store: RedisStore) -> tuple[dict[str, int], dict[str, int]]:
    """(counts, report hash), each shard read in one transaction so customers and money agree."""
    raw_counts, raw_report = await store.sums(store.keys.counts, store.keys.segment_report)
    return raw_counts, raw_report


async def grid(store: RedisStore) -> dict[str, int]:
    """``"<r>:<f>"`` -> customers."""
    (cells,) = await store.sums(store.keys.grid)
    return cells


async def transitions(store: RedisStore, hours: Sequence[int]) -> list[dict[str, int]]:
    """The hourly ``"<from>><to>"`` -> moves hashes of the given epoch hours (absent = empty)."""
    return await store.transitions(hours)


async def customer(store: RedisStore, customer_id: str) -> CustomerRecord | None:
    pipe = store.redis.pipeline(transaction=True)
    pipe.hgetall(store.keys.customer(customer_id))
    pipe.lrange(store.keys.history(customer_id), 0, store.history_length - 1)
    fields, items = await pipe.execute()
    if not fields:
        return None
    history = segment_history(items, fields, store.history_length)
    return CustomerRecord(decode_customer(customer_id, fields), history)


async def thresholds(store: RedisStore) -> tuple[Thresholds, Thresholds]:
    """(current, settled base) as the scorer published them."""
    return await store.thresholds()


async def scoring_now(store: RedisStore, settings: Settings) -> int:
    """The clock windowed metrics are measured at: the wall, or the event clock."""
    return wall_ms() if settings.scoring.clock == "wall" else await store.event_clock()


async def overview(store: RedisStore) -> Overview:
    raw_counts, raw_stats = await store.sums(store.keys.counts, store.keys.stats)
    return Overview(
        raw_counts, raw_stats, await store.thresholds_version(), await store.outbox_length()
    )
