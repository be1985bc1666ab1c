"""Operator aggregates: live counts per segment, the segment report, the R x F grid,
hourly transitions and processing stats.

The commit script keeps them per shard, in the same call as the customers they count; a
read sums the shards.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from stream.store.connection import StorePart


def _int_hash(raw: dict[bytes, bytes]) -> dict[str, int]:
    return {k.decode("utf-8"): int(v) for k, v in raw.items()}


def _add_into(total: dict[str, int], part: dict[str, int]) -> None:
    for k, v in part.items():
        total[k] = total.get(k, 0) + v


class Aggregates(StorePart):
    async def sums(self, *hashes: Callable[[int], str]) -> list[dict[str, int]]:
        """Each named hash summed over the shards. Within a shard the hashes are read in
        one transaction, so they agree with each other (counts with money, say)."""

        async def shard(s: int) -> list[dict[bytes, bytes]]:
            pipe = self.redis.pipeline(transaction=True)
            for name in hashes:
                pipe.hgetall(name(s))
            return list(await pipe.execute())

        totals: list[dict[str, int]] = [{} for _ in hashes]
        for replies in await asyncio.gather(*map(shard, self.keys.all_shards)):
            for total, raw in zip(totals, replies, strict=True):
                _add_into(total, _int_hash(raw))
        return totals

    async def counts(self) -> dict[str, int]:
        """Live customers per segment; segments that emptied keep a 0 field and are dropped."""
        (raw,) = await self.sums(self.keys.counts)
        return {k: v for k, v in raw.items() if v}

    async def transitions(self, hours: Sequence[int]) -> list[dict[str, int]]:
        """The hourly ``"<from>><to>"`` -> moves of the given epoch hours (absent = empty)."""
        pipe = self.redis.pipeline(transaction=False)
        for hour in hours:
            for s in self.keys.all_shards:
                pipe.hgetall(self.keys.transitions(hour, s))
        replies = iter(await pipe.execute())
        out = []
        for _ in hours:
            total: dict[str, int] = {}
            for _ in self.keys.all_shards:
                _add_into(total, _int_hash(next(replies)))
            out.append(total)
        return out

    async def add_stats(self, **deltas: int) -> None:
        pipe = self.redis.pipeline(transaction=False)
        for name, n in deltas.items():
            if n:
                pipe.hincrby(self.keys.stats(0), name, n)
        await pipe.execute()

    async def stats(self) -> dict[str, int]:
        (raw,) = await self.sums(self.keys.stats)
        return raw
