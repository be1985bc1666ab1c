"""A health probe run at most once per ``ttl``, however many ask: ``/healthz`` of every service.

A health probe is public and cheap to send; without this each one would cost the service a
Redis connection (``rfm api``) or a metadata request to Kafka (``rfm collect``), and a flood
of them would starve the real requests. Concurrent askers share the one probe in flight; its
answer is kept for ``ttl`` seconds.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

Probe = Callable[[], Awaitable[str | None]]


class CachedProbe:
    def __init__(
        self,
        probe: Probe,
        *,
        failures: tuple[type[Exception], ...] = (OSError,),
        ttl: float = 1.0,
        timeout: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``probe`` answers None when healthy, else a short reason; raising one of
        ``failures`` (or taking longer than ``timeout``) counts as the error's class name."""
        self._probe = probe
        self._failures: tuple[type[Exception], ...] = (*failures, TimeoutError)
        self._ttl = ttl
        self._timeout = timeout
        self._clock = clock
        self._answer: str | None = None
        self._until = float("-inf")
        self._inflight: asyncio.Future[str | None] | None = None

    async def problem(self) -> str | None:
        """None when the probe last found nothing wrong, else why (never an error's message:
        it may quote an address with credentials)."""
        if self._clock() < self._until:
            return self._answer
        if self._inflight is None:
            self._inflight = asyncio.ensure_future(self._check())
        # shielded: one asker leaving does not cancel the probe the others wait for
        return await asyncio.shield(self._inflight)

    async def _check(self) -> str | None:
        try:
            answer = await asyncio.wait_for(self._probe(), timeout=self._timeout)
        except self._failures as exc:
            answer = type(exc).__name__
        self._answer, self._until = answer, self._clock() + self._ttl
        self._inflight = None
        return answer
