"""Reads over the bucketed indexes: population ranks, value ranges, the due clock.

Each dimension's index is a set of bucket zsets per shard with a census (bucket -> size)
beside them, so a rank or a range reads the buckets it needs rather than one large zset.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from stream.core.scoring import quantile_ranks
from stream.store.buckets import Census, encode
from stream.store.connection import StorePart
from stream.store.keys import DIMS

# censuses a quantile read may take while commits keep moving the buckets under it
CENSUS_ATTEMPTS = 5


@dataclass
class _RankSearch:
    """Bisection for the value at ``rank`` (0-based) of one dimension across shards."""

    dim: str
    rank: int
    lo: int  # fewer than rank + 1 values are <= lo
    hi: int  # at least rank + 1 values are <= hi

    @property
    def mid(self) -> int:
        return (self.lo + self.hi) // 2


class Indexes(StorePart):
    async def census(self) -> dict[str, list[Census]]:
        """Each shard's index of each dimension as bucket bounds and sizes (one HGETALL
        apiece: ~10,000 buckets at 1,000,000 customers; asking each bucket its ZCARD in a
        script took 40 ms a dimension)."""
        k = self.keys
        pipe = self.redis.pipeline(transaction=False)
        for d in DIMS:
            for s in k.all_shards:
                pipe.hgetall(k.index_sizes(d, s))
        replies = iter(await pipe.execute())
        return {
            d: [Census.of((b, int(n)) for b, n in next(replies).items()) for _ in k.all_shards]
            for d in DIMS
        }

    async def quantile_edges(
        self, buckets: int
    ) -> tuple[dict[str, tuple[int, ...]], dict[str, int]]:
        """Current population edges, exact. Unsharded: the bucket census locates each of the
        B-1 ranks, one ZRANGE apiece. Sharded: the value of each rank is found by bisection
        on the value, counting ``<= x`` in every shard (whole buckets from the census, one
        ZCOUNT for the bucket that straddles x; index values are integers)."""
        for _ in range(CENSUS_ATTEMPTS):
            censuses = await self.census()
            sizes = {d: sum(c.population for c in censuses[d]) for d in DIMS}
            if self.keys.sharded:
                return await self._sharded_edges(buckets, sizes, censuses), sizes
            edges = await self._unsharded_edges(buckets, sizes, censuses)
            if edges is not None:
                return edges, sizes
        raise RuntimeError(f"the index buckets kept moving under {CENSUS_ATTEMPTS} censuses")

    async def _unsharded_edges(
        self, buckets: int, sizes: dict[str, int], censuses: dict[str, list[Census]]
    ) -> dict[str, tuple[int, ...]] | None:
        """The edges from one census, or None when the buckets moved since it was taken
        (commits run beside a refresh: a bucket may split, fill or empty between the census
        and the reads); the caller takes a new census. The ranks are read in one MULTI with
        the bucket sizes: when those still equal the census, each rank's (bucket, offset)
        is right at that moment, so the edges are exact for it."""
        wanted: list[tuple[str, bytes, int]] = []
        for d in DIMS:
            census = censuses[d][0]
            for rank in quantile_ranks(sizes[d], buckets) if sizes[d] else []:
                b, offset = census.locate(rank)
                wanted.append((d, b, offset))
        pipe = self.redis.pipeline(transaction=True)
        for d in DIMS:
            pipe.hgetall(self.keys.index_sizes(d))
        for d, b, offset in wanted:
            pipe.zrange(self.keys.index_bucket(d, b), offset, offset, withscores=True)
        replies = await pipe.execute()
        now = {d: Census.of((b, int(n)) for b, n in replies[i].items()) for i, d in enumerate(DIMS)}
        ranks = replies[len(DIMS) :]
        if any(now[d] != censuses[d][0] for d in DIMS) or not all(ranks):
            return None
        values = iter(ranks)
        return {
            d: tuple(int(next(values)[0][1]) for _ in range(buckets - 1)) for d in DIMS if sizes[d]
        }

    async def _sharded_edges(
        self, buckets: int, sizes: dict[str, int], censuses: dict[str, list[Census]]
    ) -> dict[str, tuple[int, ...]]:
        k = self.keys
        present = [d for d in DIMS if sizes[d]]
        pipe = self.redis.pipeline(transaction=False)
        for d in present:
            for s, census in zip(k.all_shards, censuses[d], strict=True):
                if census.bounds:
                    pipe.zrange(k.index_bucket(d, census.bounds[0], s), 0, 0, withscores=True)
                    pipe.zrange(k.index_bucket(d, census.bounds[-1], s), -1, -1, withscores=True)
        ends = iter(await pipe.execute())
        bounds: dict[str, tuple[int, int]] = {}
        for d in present:
            lows, highs = [], []
            for census in censuses[d]:
                if census.bounds:
                    lo, hi = next(ends), next(ends)
                    if lo and hi:  # a bucket may empty between the reads
                        lows.append(int(lo[0][1]))
                        highs.append(int(hi[0][1]))
            if lows:
                bounds[d] = (min(lows), max(highs))
        present = [d for d in present if d in bounds]
        # one search per wanted rank: count(<= lo) < rank + 1 <= count(<= hi)
        searches = [
            _RankSearch(d, rank, bounds[d][0] - 1, bounds[d][1])
            for d in present
            for rank in quantile_ranks(sizes[d], buckets)
        ]
        while open_ := [q for q in searches if q.hi - q.lo > 1]:
            pipe = self.redis.pipeline(transaction=False)
            whole: list[tuple[int, int]] = []  # (counted from whole buckets, ZCOUNTs sent)
            for q in open_:
                total = sent = 0
                for s, census in zip(k.all_shards, censuses[q.dim], strict=True):
                    counted, straddling = census.count_at_most(q.mid)
                    total += counted
                    sent += len(straddling)
                    for b in straddling:
                        pipe.zcount(k.index_bucket(q.dim, b, s), "-inf", q.mid)
                whole.append((total, sent))
            counts = iter(await pipe.execute())
            for q, (total, sent) in zip(open_, whole, strict=True):
                total += sum(int(next(counts)) for _ in range(sent))
                if total > q.rank:
                    q.hi = q.mid
                else:
                    q.lo = q.mid
        return {d: tuple(q.hi for q in searches if q.dim == d) for d in present}

    async def members_in(self, dim: str, ranges: Iterable[tuple[float, float]]) -> set[str]:
        """Customers whose index value lies in any ``(lo, hi]``: cost follows the answer
        (the buckets overlapping each range), each shard read in one step."""
        args: list[Any] = []
        for lo, hi in ranges:
            low = lo != float("-inf")
            high = hi != float("inf")
            args += (
                f"({int(lo)}" if low else "-inf",
                str(int(hi)) if high else "+inf",
                encode(int(lo) + 1) if low else b"",
                encode(int(hi) + 1) if high else b"",
            )
        if not args:
            return set()
        k = self.keys
        calls = [([k.index_directory(dim, s)], [k.index(dim, s), *args]) for s in k.all_shards]
        return {
            m.decode("utf-8")
            for reply in await self.scripts.run(self.scripts.index_members, calls)
            for m in reply
        }

    async def due_before(self, now: int, limit: int = 10_000) -> list[str]:
        """Up to ``limit`` customers the clock has reached, in no particular order: those
        still in the older single zsets, then those of the buckets whose heads have passed,
        visited by one script per shard that has any (it also corrects their heads)."""
        k = self.keys
        pipe = self.redis.pipeline(transaction=False)
        for s in k.all_shards:
            pipe.zrangebyscore(k.due(s), "-inf", now, start=0, num=limit)
            pipe.zrangebyscore(k.due_heads(s), "-inf", now, start=0, num=limit)
        replies = await pipe.execute()
        due = {m.decode("utf-8"): None for older in replies[0::2] for m in older}
        calls = [
            ([k.due_heads(s), *(b.decode("utf-8") for b in buckets)], [now, limit])
            for s, buckets in zip(k.all_shards, replies[1::2], strict=True)
            if buckets
        ]
        if len(due) < limit:
            for reply in await self.scripts.run(self.scripts.sweep_due, calls):
                due.update((m.decode("utf-8"), None) for m in reply)
        return list(due)[:limit]

    async def event_clock(self) -> int:
        """The latest event time any commit recorded (the scoring clock in event mode)."""
        pipe = self.redis.pipeline(transaction=False)
        for s in self.keys.all_shards:
            pipe.get(self.keys.clock(s))
        return max(int(raw or 0) for raw in await pipe.execute())
