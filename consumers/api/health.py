"""``/healthz``: Redis pinged at most once per ``ttl``, however many ask.

A health probe is public and cheap to send; without this every probe would take a Redis
connection, and a flood of them would starve the operator's own requests. Concurrent askers
share the one ping in flight; its answer is kept for ``ttl`` seconds.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from redis.exceptions import RedisError


class CachedPing:
    def __init__(
        self,
        ping: Callable[[], Awaitable[object]],
        *,
        ttl: float = 1.0,
        timeout: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ping = ping
        self._ttl = ttl
        self._timeout = timeout
        self._clock = clock
        self._answer: str | None = None
        self._until = float("-inf")
        self._inflight: asyncio.Future[str | None] | None = None

    async def problem(self) -> str | None:
        """None when Redis answered, else the error's class name (never its message)."""
        if self._clock() < self._until:
            return self._answer
        if self._inflight is None:
            self._inflight = asyncio.ensure_future(self._check())
        # shielded: one asker leaving does not cancel the ping the others wait for
        return await asyncio.shield(self._inflight)

    async def _check(self) -> str | None:
        try:
            await asyncio.wait_for(self._ping(), timeout=self._timeout)
            answer = None
        except (RedisError, OSError, TimeoutError) as exc:
            answer = type(exc).__name__
        self._answer, self._until = answer, self._clock() + self._ttl
        self._inflight = None
        return answer
