"""Redis commands issued by concurrent requests in one turn of the event loop, sent as one
pipeline.

Under load every webhook asks Redis two small questions (was this delivery seen; remember
it). One round trip each costs more in redis-py's per-call work than in Redis; gathered
into a pipeline per loop turn they share it. One task per flush, none per command: a
caller awaits a future, bounded by its own deadline.
"""

from __future__ import annotations

import asyncio
from typing import Any

Command = tuple[str, tuple[Any, ...], dict[str, Any]]


class Pipelined:
    def __init__(self, redis: Any) -> None:
        self.redis = redis
        self._queued: list[tuple[Command, asyncio.Future[Any]]] = []
        self._flushing: set[asyncio.Task[None]] = set()

    def call(self, name: str, *args: Any, **kwargs: Any) -> asyncio.Future[Any]:
        """The reply of ``name(*args, **kwargs)``, sent with the others of this loop turn;
        a command's error is its future's exception."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        if not self._queued:
            loop.call_soon(self._flush)
        self._queued.append(((name, args, kwargs), future))
        return future

    def _flush(self) -> None:
        queued, self._queued = self._queued, []
        task = asyncio.get_running_loop().create_task(self._send(queued))
        self._flushing.add(task)
        task.add_done_callback(self._flushing.discard)

    async def _send(self, queued: list[tuple[Command, asyncio.Future[Any]]]) -> None:
        try:
            pipe = self.redis.pipeline(transaction=False)
            for (name, args, kwargs), _ in queued:
                getattr(pipe, name)(*args, **kwargs)
            replies = await pipe.execute(raise_on_error=False)
        except BaseException as exc:  # the connection, not a command: every caller hears it
            for _, future in queued:
                if not future.done():
                    future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        for (_, future), reply in zip(queued, replies, strict=True):
            if future.done():  # its caller gave up (deadline)
                continue
            if isinstance(reply, Exception):
                future.set_exception(reply)
            else:
                future.set_result(reply)
