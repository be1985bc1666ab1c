"""The layout the data was written with, and what remains of older layouts.

A process refuses data written with another shard count; customers still in the older
single-zset indexes are listed so a refresh can move them into the buckets first.
"""

from __future__ import annotations

from collections.abc import Sequence

from stream.store.connection import StorePart
from stream.store.keys import DIMS, LayoutMismatch


class Layouts(StorePart):
    async def check_layout(self, *, record: bool = True) -> None:
        """Refuse to run with another shard count than the data was written with (every
        customer would be looked for in the wrong shard). Writers record the count the first
        time; data from before the record existed tells its layout by its key names."""
        k = self.keys
        stored = await self.redis.get(k.layout)
        if stored is None:
            if await self.redis.exists(f"{k.prefix}thresholds{{g}}"):
                found: int | None = -1  # sharded data, count unknown
            elif await self.redis.exists(f"{k.prefix}thresholds") or await self.redis.exists(
                f"{k.prefix}counts"
            ):
                found = 1
            else:
                found = None
            if found == -1 and not k.sharded:
                raise LayoutMismatch(
                    f"RFM_REDIS_SHARDS: the data under prefix {k.prefix!r} is sharded, "
                    "this process is configured with 1 shard"
                )
            if found is None or found == -1:
                found = k.shards
            if record:
                await self.redis.set(k.layout, found, nx=True)
                stored = await self.redis.get(k.layout)
            else:
                stored = found
        if int(stored) != k.shards:
            raise LayoutMismatch(
                f"RFM_REDIS_SHARDS: the data under prefix {k.prefix!r} was written "
                f"with {int(stored)} shard(s), this process is configured with {k.shards}"
            )

    async def older_index_members(self, limit: int = 100_000) -> list[str]:
        """Up to ``limit`` customers still in the single-zset indexes of the older layout
        (a commit moves its customer out into the buckets)."""
        pipe = self.redis.pipeline(transaction=False)
        for s in self.keys.all_shards:
            for d in DIMS:
                pipe.zrange(self.keys.index(d, s), 0, limit - 1)
        found = {m.decode("utf-8"): None for reply in await pipe.execute() for m in reply}
        return list(found)[:limit]

    async def drop_older_index_entries(self, ids: Sequence[str]) -> None:
        """Remove ids from the older single-zset indexes (entries no customer backs)."""
        pipe = self.redis.pipeline(transaction=False)
        for shard, members in self.by_shard(ids).items():
            for d in DIMS:
                pipe.zrem(self.keys.index(d, shard), *members)
        await pipe.execute()
