"""Where the store keeps dedupe marks and unpublished changes, against a real Redis.

Dedupe marks live in the customer's own hash (``e:<event id>`` -> expiry), written by the
commit that applies the event: no key and no commands of their own. Marks written before
that, in a zset per customer, are still honoured until they expire. A commit call's
changes share one outbox entry; entries of the older one-change shape are still flushed.
Scripts are sent as EVALSHA alone and loaded again when Redis has forgotten them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import orjson
import pytest

from stream.config import Settings
from stream.core.step import Record
from stream.kafka.topics import Topics
from stream.shell.processor import wall_ms
from stream.shell.refresh import sweep_clock
from stream.shell.wiring import build_processor
from stream.store.redis_store import open_store
from tests.api_support import Collector
from tests.conftest import Isolated
from tests.support import wait_for

pytestmark = pytest.mark.integration

DAY = 86_400_000


def order(
    event_id: str, cid: str, at: int, amount: str = "10.00", order_id: str | None = None
) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "type": "order_completed",
        "order_id": order_id or event_id,
        "customer_id": cid,
        "amount": amount,
        "currency": "TWD",
        "occurred_at": at,
    }


class Scorer:
    """A real processor over a real Redis, fed records directly (no broker needed here)."""

    def __init__(self, settings: Settings) -> None:
        self.store = open_store(settings)
        self.out = Collector()
        self.processor = build_processor(settings, self.out, self.store)
        self.topic = Topics(settings.topic_prefix).orders
        self.offset = 0

    async def feed(self, *events: dict[str, Any]) -> Any:
        records = []
        for e in events:
            records.append(
                Record(self.topic, 0, self.offset, e["customer_id"].encode(), orjson.dumps(e))
            )
            self.offset += 1
        return await self.processor.process(records)

    async def fields(self, cid: str) -> dict[bytes, bytes]:
        return dict(await self.store.redis.hgetall(self.store.keys.customer(cid)))


def run(settings: Settings, scenario: Any) -> Any:
    async def main() -> Any:
        scorer = Scorer(settings)
        try:
            return await scenario(scorer)
        finally:
            await scorer.store.redis.aclose()

    return asyncio.run(main())


def test_marks_live_in_the_hash_and_expire_with_it(isolated: Isolated) -> None:
    now = wall_ms()
    settings = isolated.settings({"scoring": {"window_days": 0}})

    async def scenario(s: Scorer) -> None:
        first = await s.feed(order("e1", "c-1", now - DAY))
        assert (first.accepted, first.duplicates) == (1, 0)
        fields = await s.fields("c-1")
        expires = int(fields[b"e:e1"])
        window = settings.store.dedupe_window_ms
        assert now + window <= expires <= wall_ms() + window
        assert not await s.store.redis.exists(s.store.keys.applied("c-1"))  # no key of its own
        # lifetime window: nothing else will bring the clock to this customer, the mark does
        assert await s.store.redis.zscore(s.store.keys.due_of("c-1"), "c-1") == expires
        again = await s.feed(order("e1", "c-1", now - DAY, amount="99.00"))
        assert (again.accepted, again.duplicates) == (0, 1)
        assert await s.fields("c-1") == fields  # a duplicate changes nothing

    run(settings, scenario)


def test_a_quiet_customer_loses_its_expired_marks_to_the_clock_sweep(
    isolated: Isolated,
) -> None:
    settings = isolated.settings({"scoring": {"window_days": 0}, "store": {"dedupe_window": "1s"}})

    async def scenario(s: Scorer) -> None:
        await s.feed(order("e1", "c-1", wall_ms() - DAY))
        expires = int((await s.fields("c-1"))[b"e:e1"])
        wait_for(lambda: wall_ms() > expires, timeout=10, what="the mark to expire")
        assert await sweep_clock(s.processor) == 0  # a sweep that moves no segment ...
        fields = await s.fields("c-1")
        assert not any(name.startswith(b"e:") for name in fields)  # ... still drops the mark
        assert await s.store.redis.zscore(s.store.keys.due_of("c-1"), "c-1") is None
        assert fields[b"sg"]  # and keeps the customer
        # its event id is outside the dedupe window now: a new order under it applies
        again = await s.feed(order("e1", "c-1", wall_ms() - DAY, order_id="o2"))
        assert (again.accepted, again.duplicates) == (1, 0)

    run(settings, scenario)


def test_expired_marks_leave_with_the_next_commit(isolated: Isolated) -> None:
    settings = isolated.settings()

    async def scenario(s: Scorer) -> None:
        await s.feed(order("e1", "c-1", wall_ms() - DAY))
        key = s.store.keys.customer("c-1")
        await s.store.redis.hset(key, "e:stale", wall_ms() - 1)  # a mark past its window
        await s.feed(order("e2", "c-1", wall_ms() - DAY))
        fields = await s.fields("c-1")
        assert b"e:stale" not in fields
        assert {b"e:e1", b"e:e2"} <= set(fields)

    run(settings, scenario)


def test_marks_in_the_older_zset_are_still_honoured(isolated: Isolated) -> None:
    settings = isolated.settings()

    async def scenario(s: Scorer) -> None:
        await s.feed(order("e1", "c-1", wall_ms() - 2 * DAY))
        before = await s.fields("c-1")
        legacy = s.store.keys.applied("c-1")
        await s.store.redis.zadd(legacy, {"old-event": wall_ms() + DAY})
        stats = await s.feed(order("old-event", "c-1", wall_ms() - DAY))
        assert (stats.accepted, stats.duplicates) == (0, 1)
        assert await s.fields("c-1") == before

    run(settings, scenario)


def test_one_outbox_entry_per_call_and_older_entries_still_flush(isolated: Isolated) -> None:
    settings = isolated.settings()

    async def scenario(s: Scorer) -> None:
        outbox = s.store.keys.outbox()
        older = orjson.dumps({"event_id": "c-0:1", "customer_id": "c-0"})
        await s.store.redis.xadd(outbox, {"c": "c-0", "e": older})

        class Down(Collector):
            async def publish(self, messages: Sequence[tuple[str, bytes | None, bytes]]) -> None:
                raise ConnectionError("broker down")

        s.processor.publisher = Down()  # committed, never published: the outbox keeps them
        with pytest.raises(ConnectionError):
            await s.feed(*(order(f"e{n}", f"c-{n}", wall_ms() - DAY) for n in range(1, 6)))
        assert await s.store.redis.xlen(outbox) == 2  # the older entry and this call's one

        s.processor.publisher = s.out
        assert await s.processor.flush_outbox(min_age_ms=0) == 6
        assert await s.store.redis.xlen(outbox) == 0
        published = {key: orjson.loads(body) for _, key, body in s.out.messages}
        assert set(published) == {f"c-{n}".encode() for n in range(6)}
        assert all(change["customer_id"] == key.decode() for key, change in published.items())

    run(settings, scenario)


def test_scripts_a_restarted_redis_forgot_are_loaded_again(isolated: Isolated) -> None:
    settings = isolated.settings()

    async def scenario(s: Scorer) -> None:
        await s.feed(order("e1", "c-1", wall_ms() - DAY))
        await s.store.redis.script_flush()  # what a restart without persistence of scripts does
        stats = await s.feed(order("e2", "c-1", wall_ms() - DAY))
        assert stats.accepted == 1
        assert {b"e:e1", b"e:e2"} <= set(await s.fields("c-1"))

    run(settings, scenario)


def test_the_clock_index_is_bucketed_and_its_heads_lead_the_sweep(isolated: Isolated) -> None:
    settings = isolated.settings({"scoring": {"window_days": 0}, "store": {"dedupe_window": "1s"}})

    async def scenario(s: Scorer) -> None:
        ids = [f"c-{n}" for n in range(60)]
        await s.feed(*(order(f"e{n}", cid, wall_ms() - DAY) for n, cid in enumerate(ids)))
        k, r = s.store.keys, s.store.redis
        assert not await r.exists(k.due())  # nothing in the older single zset
        due = {cid: await r.zscore(k.due_of(cid), cid) for cid in ids}
        assert all(due.values()), due
        assert len({k.due_of(cid) for cid in ids}) > 1
        heads = dict(await r.zrange(k.due_heads(), 0, -1, withscores=True))
        assert {b.decode() for b in heads} == {k.due_of(cid) for cid in ids}
        assert all(heads[k.due_of(cid).encode()] <= due[cid] for cid in ids)

        assert await s.store.due_before(int(min(due.values())) - 1) == []
        latest = max(due.values())
        wait_for(lambda: wall_ms() > latest, timeout=10, what="every mark to expire")
        assert len(await s.store.due_before(wall_ms(), limit=7)) == 7
        assert sorted(await s.store.due_before(wall_ms())) == sorted(ids)
        assert await sweep_clock(s.processor) == 0  # no segment moves; the marks go ...
        assert not any([await r.zscore(k.due_of(cid), cid) for cid in ids])  # ... and entries
        assert await s.store.due_before(wall_ms()) == []
        assert await r.zcard(k.due_heads()) == 0  # each emptied bucket lost its head

    run(settings, scenario)


def test_an_erasure_leaves_no_due_time_behind(isolated: Isolated) -> None:
    settings = isolated.settings()

    async def scenario(s: Scorer) -> None:
        await s.feed(order("e1", "c-1", wall_ms() - DAY))
        k, r = s.store.keys, s.store.redis
        bucket = k.due_of("c-1")
        assert await r.zscore(k.due_heads(), bucket) == await r.zscore(bucket, "c-1")
        erasure = {"customer_id": "c-1", "requested_at": wall_ms()}
        topic = Topics(settings.topic_prefix).erasure
        await s.processor.process([Record(topic, 0, 99, b"c-1", orjson.dumps(erasure))])
        assert not await r.exists(bucket)  # it was the bucket's only member ...
        assert await r.zscore(k.due_heads(), bucket) is None  # ... and its head went with it

    run(settings, scenario)


def test_due_entries_of_the_older_single_zset_are_swept_and_drain(isolated: Isolated) -> None:
    settings = isolated.settings({"scoring": {"window_days": 0}})

    async def scenario(s: Scorer) -> None:
        await s.feed(order("e1", "c-1", wall_ms() - DAY), order("e2", "c-2", wall_ms() - DAY))
        k, r = s.store.keys, s.store.redis
        expires = await r.zscore(k.due_of("c-1"), "c-1")
        # c-1 as the older layout kept it: one zset for the shard, here already due
        await r.zrem(k.due_of("c-1"), "c-1")
        passed = wall_ms() - 1
        await r.zadd(k.due(), {"c-1": passed})
        standing = (await s.store.standings(["c-1"]))["c-1"]
        assert standing is not None and standing.due == passed

        assert await s.store.due_before(wall_ms()) == ["c-1"]
        await sweep_clock(s.processor)
        assert not await r.exists(k.due())  # drained by the re-score's commit
        assert await r.zscore(k.due_of("c-1"), "c-1") == expires
        assert await s.store.due_before(wall_ms()) == []

        # mid-upgrade, a worker of the older layout wrote an earlier time: the earlier counts
        later = await r.zscore(k.due_of("c-2"), "c-2")
        await r.zadd(k.due(), {"c-2": later - DAY})
        standing = (await s.store.standings(["c-2"]))["c-2"]
        assert standing is not None and standing.due == later - DAY

    run(settings, scenario)
