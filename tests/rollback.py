"""A Redis namespace taken back to an earlier copy of itself, while its clients run on.

What a server restarted from an older append-only file or snapshot holds, for the keys of
one test's namespace: ``Copy.take`` keeps every key's DUMP and time to live, ``restore``
deletes what the namespace holds now and puts the copy back. The server is the shared one
and keeps running, so the processes under test keep their connections and their caches,
exactly the case of a worker that acted on the newer state and goes on after the loss.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis.asyncio as aioredis


@dataclass(frozen=True)
class Copy:
    prefix: str
    keys: dict[bytes, tuple[bytes, int]]  # key -> (DUMP, PTTL: -1 = none)

    @classmethod
    async def take(cls, client: aioredis.Redis, prefix: str) -> Copy:
        keys: dict[bytes, tuple[bytes, int]] = {}
        async for key in client.scan_iter(match=f"{prefix}*", count=1000):
            dumped = await client.dump(key)
            if dumped is not None:
                keys[key] = (dumped, int(await client.pttl(key)))
        return cls(prefix, keys)

    async def restore(self, client: aioredis.Redis) -> None:
        now = [key async for key in client.scan_iter(match=f"{self.prefix}*", count=1000)]
        if now:
            await client.delete(*now)
        for key, (dumped, ttl) in self.keys.items():
            await client.restore(key, max(ttl, 0), dumped)
