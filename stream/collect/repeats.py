"""Events a platform repeats with no date of their own, sent once.

WooCommerce lists an order's refunds on every save of the order, undated, so a save a year
later repeats them after the worker's dedupe window has forgotten their ids. The collector
records each such event id once Kafka acknowledged it (``SET`` with a long TTL, under the
deployment's key prefix) and drops the repeats; each repeat pushes the TTL on, so a record
lives while its order keeps being saved. Like delivery ids, a Redis that does not answer
drops nothing (the worker's dedupe stays the backstop within its window).
"""

from __future__ import annotations

import asyncio
import logging

from redis.exceptions import RedisError

from stream.collect.outgoing import Outgoing
from stream.collect.pipelined import Pipelined

log = logging.getLogger("rfm.collect")

REDIS_TIMEOUT = 0.5  # seconds, as for delivery ids
REMEMBER_MS = 400 * 86_400_000  # past any refund a platform would still list


class Repeats:
    def __init__(self, redis: Pipelined, key_prefix: str) -> None:
        self.redis = redis
        self.prefix = f"{key_prefix}collect:sent:"

    def key(self, event: Outgoing) -> str:
        return self.prefix + str(event.doc["event_id"])

    async def unsent(self, events: list[Outgoing]) -> list[Outgoing]:
        """``events`` less the undated ones sent before (whose records are kept on)."""
        undated = [e for e in events if e.undated]
        if not undated:
            return events
        try:
            async with asyncio.timeout(REDIS_TIMEOUT):
                renewed = await asyncio.gather(
                    *(self.redis.call("pexpire", self.key(e), REMEMBER_MS) for e in undated)
                )
        except (RedisError, OSError, TimeoutError) as exc:
            log.warning("sent events unavailable (%s): not dropping repeats", type(exc).__name__)
            return events
        sent = {id(e) for e, was in zip(undated, renewed, strict=True) if was}
        return [e for e in events if id(e) not in sent]

    async def record(self, events: list[Outgoing]) -> None:
        """Remember the undated events Kafka acknowledged; a failure costs a later repeat."""
        undated = [e for e in events if e.undated]
        if not undated:
            return
        try:
            async with asyncio.timeout(REDIS_TIMEOUT):
                await asyncio.gather(
                    *(self.redis.call("set", self.key(e), b"1", px=REMEMBER_MS) for e in undated)
                )
        except (RedisError, OSError, TimeoutError) as exc:
            log.warning("sent events not recorded (%s)", type(exc).__name__)
