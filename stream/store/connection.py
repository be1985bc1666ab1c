"""A client for the deployment's Redis, and what every part of the store reads through it.

The store is one class made of one part per concept (customers, indexes, publication,
aggregates, outbox, layouts); each part is written against ``StorePart``: the client, the
key layout and the registered scripts.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from stream.store.keys import Keys
from stream.store.scripts import Scripts
from stream.store.wire import pack_with_hiredis


def connect(
    url: str, *, cluster: bool = False, pool_wait: float | None = None, **options: Any
) -> Any:
    """A client for one server, or for a Redis Cluster (any node's URL; slots are discovered).

    ``pool_wait`` (one server): a bounded pool (``max_connections`` in ``options``) whose
    callers wait up to that many seconds for a free connection, rather than fail at once."""
    if cluster:
        return RedisCluster.from_url(url, decode_responses=False, **options)
    options = {"decode_responses": False, "health_check_interval": 30, **options}
    if pool_wait is None:
        return pack_with_hiredis(aioredis.Redis.from_url(url, **options))
    pool = aioredis.BlockingConnectionPool.from_url(url, timeout=pool_wait, **options)
    return pack_with_hiredis(aioredis.Redis.from_pool(pool))


class StorePart:
    """What each part of the store shares. Sharded layouts (``Keys.shards > 1``) run each
    script once per shard touched and merge per-shard aggregates on read, so callers see
    one store whatever the layout."""

    # Typed Any: redis-py types replies as bytes | str for either decode mode; ours is bytes only.
    redis: Any
    keys: Keys
    scripts: Scripts
    history_length: int  # changes a customer's segment history keeps (store.segment_history)
    # each shard's server run id as the worker's positions check read it before the batch
    # being applied (empty: commits are not checked); see commit.lua ARGV[5]
    servers: list[bytes]

    def by_shard(self, ids: Iterable[str]) -> dict[int, list[str]]:
        """``ids`` grouped by the shard that holds each, in their order."""
        groups: dict[int, list[str]] = {}
        for cid in ids:
            groups.setdefault(self.keys.shard_of(cid), []).append(cid)
        return groups
