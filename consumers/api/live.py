"""``/api/live``: live segment counts pushed as Server-Sent Events.

The scorer writes counts from many workers straight into Redis, so the API polls the one
small counts hash (every 250 ms by default) and sends an event only when it changed: a
dashboard sees a move within a second and an idle stream costs a heartbeat comment now and
then, which is also how a vanished client is noticed.

One poller per process (``LiveCounts``) reads the counts once per tick for every open stream,
so a crowd of dashboards costs Redis what one costs. When a read fails, the poller logs one
line and every open stream ends cleanly; browsers reconnect on their own after ``RETRY_MS``
and the next stream starts a new poller.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import orjson

RETRY_MS = 1000  # how soon a browser's EventSource reconnects after the stream drops
log = logging.getLogger("rfm.api")


def sse_event(name: str, data: object) -> bytes:
    """One event; JSON has no raw newlines, so ``data`` is always a single line."""
    return b"event: " + name.encode("ascii") + b"\ndata: " + orjson.dumps(data) + b"\n\n"


def counts_payload(counts: dict[str, int]) -> dict[str, object]:
    return {"counts": counts, "total": sum(counts.values())}


@dataclass
class _Snapshot:
    """What the poller last saw; ``changed`` is set when a newer one replaces it."""

    counts: dict[str, int] | None
    failed: bool = False
    changed: asyncio.Event = field(default_factory=asyncio.Event)


class LiveCounts:
    def __init__(
        self,
        read: Callable[[], Awaitable[dict[str, int]]],
        *,
        interval: float = 0.25,
        heartbeat: float = 15.0,
    ) -> None:
        self._read = read
        self._interval = interval
        self._heartbeat = heartbeat
        self._snapshot = _Snapshot(None)
        self._subscribers = 0
        self._poller: asyncio.Task[None] | None = None
        self._failing = False  # log a failure once, not on every reconnect while it lasts
        self.reads = 0  # counts read from Redis since start (tests, and the curious)

    @property
    def subscribers(self) -> int:
        return self._subscribers

    def _publish(self, snapshot: _Snapshot) -> None:
        previous, self._snapshot = self._snapshot, snapshot
        previous.changed.set()

    async def _poll(self) -> None:
        while self._subscribers:
            try:
                counts = await self._read()
            except Exception as exc:  # Redis down, pool exhausted, a reply it cannot read
                if not self._failing:
                    log.warning(
                        "live counts: reading Redis failed (%s); open streams end and reconnect",
                        type(exc).__name__,
                    )
                self._failing = True
                self._publish(_Snapshot(self._snapshot.counts, failed=True))
                return
            self.reads += 1
            self._failing = False
            if counts != self._snapshot.counts:
                self._publish(_Snapshot(counts))
            await asyncio.sleep(self._interval)

    def _ensure_polling(self) -> None:
        if self._poller is None or self._poller.done():
            if self._snapshot.failed:
                self._snapshot = _Snapshot(None)  # start afresh: nothing stale is sent
            self._poller = asyncio.get_running_loop().create_task(self._poll())

    async def stream(self) -> AsyncIterator[bytes]:
        """The current counts as soon as they are known, then again on every change, until
        the client leaves (the server cancels this) or a read fails (it simply ends)."""
        yield f"retry: {RETRY_MS}\n\n".encode("ascii")
        self._subscribers += 1
        try:
            self._ensure_polling()
            sent: dict[str, int] | None = None
            while True:
                snapshot = self._snapshot
                if snapshot.failed:
                    return
                if snapshot.counts is not None and snapshot.counts is not sent:
                    sent = snapshot.counts
                    yield sse_event("counts", counts_payload(sent))
                    continue  # it may have changed while this client was being written to
                try:
                    async with asyncio.timeout(self._heartbeat):
                        await snapshot.changed.wait()
                except TimeoutError:
                    yield b": keep-alive\n\n"
        finally:
            self._subscribers -= 1

    async def aclose(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            await asyncio.gather(self._poller, return_exceptions=True)
