"""``/api/live``: live segment counts pushed as Server-Sent Events.

The scorer writes counts from many workers straight into Redis, so the API polls the one
small counts hash (every 250 ms by default) and sends an event only when it changed: a
dashboard sees a move within a second and an idle stream costs a heartbeat comment now and
then, which is also how a vanished client is noticed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import orjson

RETRY_MS = 1000  # how soon a browser's EventSource reconnects after the stream drops


def sse_event(name: str, data: object) -> bytes:
    """One event; JSON has no raw newlines, so ``data`` is always a single line."""
    return b"event: " + name.encode("ascii") + b"\ndata: " + orjson.dumps(data) + b"\n\n"


def counts_payload(counts: dict[str, int]) -> dict[str, object]:
    return {"counts": counts, "total": sum(counts.values())}


async def counts_events(
    read: Callable[[], Awaitable[dict[str, int]]],
    disconnected: Callable[[], Awaitable[bool]],
    *,
    interval: float = 0.25,
    heartbeat: float = 15.0,
) -> AsyncIterator[bytes]:
    """The current counts at once, then again on every change until the client leaves."""
    yield f"retry: {RETRY_MS}\n\n".encode("ascii")
    last: dict[str, int] | None = None
    quiet_since = time.monotonic()
    while not await disconnected():
        counts = await read()
        if counts != last:
            yield sse_event("counts", counts_payload(counts))
            last = counts
            quiet_since = time.monotonic()
        elif time.monotonic() - quiet_since >= heartbeat:
            yield b": keep-alive\n\n"
            quiet_since = time.monotonic()
        await asyncio.sleep(interval)
