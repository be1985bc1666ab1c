"""The score indexes as chains of small buckets, against a real Redis.

Each index (r, f, m, i) is cut by (value, id) into sorted sets of under 128 members, listed
in a directory (``stream.store.buckets``); commit.lua keeps that layout as customers move,
splitting full buckets and dropping empty ones. These tests check the layout's invariant
after real commits (ties, splits, moves, erasures), that ranks and ranges read from it
equal a plain sort of the population, and that entries of the older one-zset-per-index
layout move into buckets.
"""

from __future__ import annotations

import random
from typing import Any

import orjson
import pytest

from stream.core.scoring import quantile_edges
from stream.core.step import Record
from stream.kafka.topics import Topics
from stream.shell.processor import wall_ms
from stream.shell.refresh import refresh
from stream.store.buckets import Census, bound
from stream.store.keys import DIMS
from tests.conftest import Isolated
from tests.test_store_layout import DAY, Scorer, order, run

pytestmark = pytest.mark.integration


async def stored_values(s: Scorer, ids: list[str]) -> dict[str, dict[str, int]]:
    """Each customer's r, f and m as its hash records them (``lo`` and ``tl``), which the
    index must mirror: an oracle independent of the index code."""
    out: dict[str, dict[str, int]] = {d: {} for d in DIMS}
    for cid in ids:
        fields = await s.fields(cid)
        if not fields:
            continue
        n, monetary = fields[b"tl"].split(b",")
        out["r"][cid] = int(fields[b"lo"])
        out["f"][cid] = int(n)
        out["m"][cid] = int(monetary)
    return out


async def check_layout(s: Scorer, expected: dict[str, dict[str, int]]) -> int:
    """Assert the bucket invariant for every index; returns the number of buckets."""
    k, r = s.store.keys, s.store.redis
    total = 0
    for d in DIMS:
        bounds = await r.zrange(k.index_directory(d), 0, -1)
        assert bounds == sorted(bounds)
        found: dict[str, int] = {}
        sizes = await r.hgetall(k.index_sizes(d))
        assert set(sizes) == set(bounds)
        for n, b in enumerate(bounds):
            members = await r.zrange(k.index_bucket(d, b), 0, -1, withscores=True)
            assert 1 <= len(members) < 128, (d, b, len(members))  # listed means non-empty
            assert int(sizes[b]) == len(members)
            following = bounds[n + 1] if n + 1 < len(bounds) else None
            for member, score in members:
                at = bound(int(score), member)
                assert at >= b and (following is None or at < following), (d, member)
                found[member.decode()] = int(score)
        assert found == expected.get(d, {}), d
        assert not await r.exists(k.index(d))  # nothing left in the older single zset
        total += len(bounds)
    for cid in expected["r"]:
        x = (await s.fields(cid))[b"x"].decode()
        assert x == ",".join(str(expected[d][cid]) if cid in expected[d] else "" for d in DIMS), cid
    return total


def test_buckets_split_move_and_empty_while_ranks_and_ranges_stay_exact(
    isolated: Isolated,
) -> None:
    settings = isolated.settings({"scoring": {"window_days": 0}})
    rng = random.Random(7)
    ids = [f"c-{n:04d}" for n in range(700)]
    now = wall_ms()

    async def scenario(s: Scorer) -> None:
        # many ties (one order, a handful of amounts) so buckets must split by id too
        first = [
            order(f"e{n}", cid, now - rng.randrange(1, 300) * DAY, rng.choice(["5.00", "10.00"]))
            for n, cid in enumerate(ids)
        ]
        await s.feed(*first)
        expected = await stored_values(s, ids)
        assert await check_layout(s, expected) > 3 * 700 // 128  # they did split

        # customers move: new orders for some, erasures for others
        more = [
            order(f"m{n}", cid, now - rng.randrange(0, 5) * DAY, str(rng.randrange(1, 900)))
            for n, cid in enumerate(rng.sample(ids, 300))
        ]
        await s.feed(*more)
        topic = Topics(settings.topic_prefix).erasure
        gone = rng.sample(ids, 150)
        await s.processor.process(
            [
                Record(
                    topic,
                    0,
                    n,
                    cid.encode(),
                    orjson.dumps({"customer_id": cid, "requested_at": now}),
                )
                for n, cid in enumerate(gone)
            ]
        )
        expected = await stored_values(s, ids)
        assert len(expected["r"]) == 700 - 150
        await check_layout(s, expected)

        for buckets in (2, 5, 7):
            edges, population = await s.store.quantile_edges(buckets)
            for d in ("r", "f", "m"):
                values = sorted(expected[d].values())
                assert population[d] == len(values)
                assert edges[d] == quantile_edges(values, buckets), (d, buckets)
            assert population["i"] == 0 and "i" not in edges

        # a refresh's census, then commits that move the buckets before it reads the ranks
        # (new orders, an erasure): the read must notice and count again, not use the old
        # bucket sizes (an empty bucket's rank raised IndexError; a shifted one misreads)
        stale = await s.store.census()
        left = sorted(expected["r"])
        late = [
            order(f"l{n}", cid, now - rng.randrange(0, 3) * DAY, str(rng.randrange(900, 5000)))
            for n, cid in enumerate(rng.sample(left, 100))
        ]
        await s.feed(*late)
        await s.processor.process(
            [
                Record(
                    topic,
                    1,
                    n,
                    cid.encode(),
                    orjson.dumps({"customer_id": cid, "requested_at": now}),
                )
                for n, cid in enumerate(rng.sample(left, 300))
            ]
        )
        expected = await stored_values(s, ids)
        censuses = iter([stale])

        async def stale_first() -> dict[str, list[Census]]:
            return next(censuses, None) or await type(s.store).census(s.store)

        s.store.census = stale_first  # type: ignore[method-assign]
        try:
            edges, population = await s.store.quantile_edges(5)
        finally:
            del s.store.census
        assert next(censuses, None) is None  # the stale census was used first
        for d in ("r", "f", "m"):
            values = sorted(expected[d].values())
            assert population[d] == len(values)
            assert edges[d] == quantile_edges(values, 5), d

        for d in ("r", "f", "m"):
            values = sorted(expected[d].values())
            cuts = [values[0] - 1, values[len(values) // 3], values[len(values) // 2], values[-1]]
            ranges: list[tuple[float, float]] = [
                (cuts[0], cuts[1]),
                (cuts[2], float("inf")),
                (float("-inf"), cuts[0]),
            ]
            want = {cid for cid, v in expected[d].items() if any(lo < v <= hi for lo, hi in ranges)}
            assert await s.store.members_in(d, ranges) == want, d

    run(settings, scenario)


def test_entries_of_the_older_single_zsets_move_into_buckets(isolated: Isolated) -> None:
    settings = isolated.settings({"scoring": {"window_days": 0}})
    ids = [f"c-{n}" for n in range(200)]
    now = wall_ms()

    async def scenario(s: Scorer) -> Any:
        await s.feed(*(order(f"e{n}", cid, now - (n + 1) * DAY) for n, cid in enumerate(ids)))
        expected = await stored_values(s, ids)
        k, r = s.store.keys, s.store.redis
        # rewrite the data as the older layout kept it: one zset per index, no "x" fields
        for d in DIMS:
            for b in await r.zrange(k.index_directory(d), 0, -1):
                await r.delete(k.index_bucket(d, b))
            await r.delete(k.index_directory(d), k.index_sizes(d))
            if expected.get(d):
                await r.zadd(k.index(d), expected[d])
        for cid in ids:
            await r.hdel(k.customer(cid), "x")
        await r.zadd(k.index("r"), {"nobody": 5})  # an entry no customer backs

        # a commit moves its own customer's entries ...
        await s.feed(order("late", "c-0", now))
        assert await r.zscore(k.index("r"), "c-0") is None
        assert await r.zscore(k.index("f"), "c-0") is None
        fields = await s.fields("c-0")
        n, monetary = fields[b"tl"].decode().split(",")
        assert n == "2" and fields[b"x"] == f"{now},2,{monetary},".encode()
        # ... and a refresh moves everyone else's before it reads ranks
        report = await refresh(s.processor)
        assert report.published
        expected = await stored_values(s, ids)
        await check_layout(s, expected)
        edges, _ = await s.store.quantile_edges(5)
        assert edges["r"] == quantile_edges(sorted(expected["r"].values()), 5)

    run(settings, scenario)
