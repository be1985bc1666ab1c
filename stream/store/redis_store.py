"""The Redis store: one class made of a part per concept, and how a process opens it.

| part | module |
|---|---|
| customer state: load, commit, scan | ``stream.store.customers`` |
| rank, range and clock reads over the bucketed indexes | ``stream.store.indexes`` |
| thresholds, the CLV model, the refresh lease, fences | ``stream.store.publication`` |
| counts, report, grid, transitions, stats | ``stream.store.aggregates`` |
| changes committed but not yet published | ``stream.store.outbox`` |
| how far each input partition has been applied | ``stream.store.positions`` |
| the shard count on record, older index layouts | ``stream.store.layouts`` |

The Lua scripts are in ``stream.store.scripts``; the client in ``stream.store.connection``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from stream.config import Settings, StoreSettings
from stream.store.aggregates import Aggregates
from stream.store.connection import connect
from stream.store.customers import CustomerStates
from stream.store.indexes import Indexes
from stream.store.keys import Keys
from stream.store.layouts import Layouts
from stream.store.outbox import Outbox
from stream.store.positions import Positions
from stream.store.publication import Publication
from stream.store.scripts import Scripts

__all__ = ["RedisStore", "connect", "open_store"]


@dataclass
class RedisStore(CustomerStates, Indexes, Publication, Aggregates, Outbox, Positions, Layouts):
    """Every read and write of the scorer's state, on one client (a server or a cluster)."""

    redis: Any
    keys: Keys = field(default_factory=Keys)
    history_length: int = StoreSettings.segment_history

    def __post_init__(self) -> None:
        self.scripts = Scripts(self.redis)
        self.servers = []

    async def aclose(self) -> None:
        await self.redis.aclose()


def open_store(settings: Settings, **options: Any) -> RedisStore:
    """The store a process of this deployment uses: its URL, prefix and shards. ``options``
    go to the client (timeouts, say)."""
    return RedisStore(
        connect(settings.redis_url, cluster=settings.redis_cluster, **options),
        Keys(settings.key_prefix, settings.redis_shards),
        settings.store.segment_history,
    )
