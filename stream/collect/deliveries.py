"""Webhook deliveries already applied, by the platform's delivery id, so a redelivery is
answered 200 without producing its events again.

A delivery is recorded (``SET NX`` with a TTL, under the deployment's key prefix) only
after Kafka acknowledged its events, so a delivery that failed half way is applied when it
comes again. The worker's event-id dedupe stays the backstop for what this misses: two
copies arriving at once, or a Redis that does not answer (then nothing is dropped here and
every copy is produced).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging

from redis.exceptions import RedisError

from stream.collect.pipelined import Pipelined

log = logging.getLogger("rfm.collect")

REDIS_TIMEOUT = 0.5  # seconds; a slow Redis must not eat the request's 5 s
# (``asyncio.timeout`` bounds the wait in the request's own task; the commands of one loop
# turn share a pipeline: ``Pipelined``)
MAX_ID_IN_KEY = 200  # longer delivery ids are hashed into the key


class Deliveries:
    def __init__(self, redis: Pipelined, key_prefix: str, window_s: float) -> None:
        self.redis = redis
        self.prefix = f"{key_prefix}collect:delivery:"
        self.window_ms = max(1, int(window_s * 1000))

    def key(self, platform: str, shop: str, delivery_id: str) -> str:
        if len(delivery_id) > MAX_ID_IN_KEY:
            delivery_id = "sha256:" + hashlib.sha256(delivery_id.encode("utf-8")).hexdigest()
        return f"{self.prefix}{platform}:{shop}:{delivery_id}"

    async def seen(self, platform: str, shop: str, delivery_id: str) -> bool:
        """Whether this delivery was applied before; False when Redis does not answer."""
        try:
            async with asyncio.timeout(REDIS_TIMEOUT):
                found = await self.redis.call("exists", self.key(platform, shop, delivery_id))
        except (RedisError, OSError, TimeoutError) as exc:
            log.warning(
                "delivery ids unavailable (%s): not dropping redeliveries", type(exc).__name__
            )
            return False
        return bool(found)

    async def record(self, platform: str, shop: str, delivery_id: str) -> None:
        """Remember the delivery for the window; a failure only costs a later duplicate."""
        key = self.key(platform, shop, delivery_id)
        try:
            async with asyncio.timeout(REDIS_TIMEOUT):
                await self.redis.call("set", key, b"1", nx=True, px=self.window_ms)
        except (RedisError, OSError, TimeoutError) as exc:
            log.warning("delivery id not recorded (%s)", type(exc).__name__)
