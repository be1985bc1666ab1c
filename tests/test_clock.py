"""Moves that happen because nothing happened (SPEC section 3): the clock alone re-scores."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import orjson
import pytest
import redis

from stream.config import settings_from
from stream.core.step import Record
from stream.kafka import ensure_topics
from stream.kafka.topics import Topics
from stream.shell.refresh import sweep_clock
from stream.shell.wiring import build_processor
from stream.store.keys import Keys
from stream.store.redis_store import open_store
from tests.api_support import Collector
from tests.conftest import Isolated
from tests.support import (
    WorkerProcess,
    changes_of,
    clock_swept,
    configuration_recorded,
    events_applied,
    produce,
    wait_for,
)

pytestmark = pytest.mark.integration

DAY = 86_400_000
FIXED = """
[scoring]
mode = "fixed"
clock = "event"
window_days = {window}
[scoring.edges]
r = [7, 14, 30, 60]
f = [1, 2, 4, 8]
m = [100, 500, 1000, 5000]
i = [1, 2, 4, 8]
"""


def order(n: int, cid: str, at: int, amount: str = "1000.00") -> dict[str, Any]:
    return {
        "event_id": f"e{n}",
        "type": "order_completed",
        "order_id": f"o{n}",
        "customer_id": cid,
        "amount": amount,
        "currency": "TWD",
        "occurred_at": at,
    }


class Probe:
    """Reads what the test asserts on: the change topic, exports and Redis bookkeeping."""

    def __init__(self, iso: Isolated) -> None:
        self.iso = iso
        self.settings = iso.settings()
        self.topics = Topics(self.settings.topic_prefix)
        self.redis = redis.Redis.from_url(iso.infra.redis_url)

    def send(self, *events: dict[str, Any]) -> None:
        produce(
            self.settings,
            [(self.topics.orders, e["customer_id"].encode(), orjson.dumps(e)) for e in events],
        )

    def changes(self, cid: str) -> list[dict[str, Any]]:
        return changes_of(self.settings, cid)

    def applied(self) -> int:
        return events_applied(self.redis, self.iso.name)

    def swept(self) -> bool:
        return clock_swept(self.redis, self.iso.name)

    def customer(self, cid: str) -> dict[bytes, bytes]:
        return self.redis.hgetall(f"{self.iso.name}:c:{cid}")


def settle(probe: Probe, sent: int, worker: WorkerProcess) -> None:
    wait_for(
        lambda: probe.applied() >= sent,
        timeout=90,
        what=f"{sent} events applied",
        diagnose=worker.tail,
    )
    wait_for(probe.swept, timeout=60, what="the clock sweep", diagnose=worker.tail)
    wait_for(
        lambda: configuration_recorded(probe.redis, probe.iso.name),
        timeout=60,
        what="the configuration recorded (else a clock move may be a re-configuration's)",
        diagnose=worker.tail,
    )


def test_a_customer_who_stops_buying_reaches_cant_lose_them_by_the_clock_alone(
    isolated: Isolated, start_worker: Callable[..., WorkerProcess]
) -> None:
    probe = Probe(isolated)
    asyncio.run(ensure_topics(probe.settings))
    worker = start_worker(isolated.config_file(FIXED.format(window=365)))
    t0 = int(time.time() * 1000) - 200 * DAY
    # A champion: ten big orders within a week (F 10 > 8, M 10,000 > 5,000, R 5).
    probe.send(*(order(n, "loyal", t0 + n * DAY // 2) for n in range(10)))
    settle(probe, 10, worker)
    # The orders may arrive over several batches, so the way up can take a few order moves.
    first = wait_for(
        lambda: (
            found if (found := probe.changes("loyal")) and found[-1]["to"] == "champions" else None
        ),
        timeout=30,
        what="'loyal' to reach champions",
    )
    assert first[0]["from"] is None and all(c["cause"] == "order" for c in first)

    # Someone else's order moves the event clock 70 days on: days since 'loyal' bought > 60.
    probe.send(order(100, "other", t0 + 75 * DAY, "50.00"))
    settle(probe, 11, worker)
    moved = wait_for(
        lambda: found if len(found := probe.changes("loyal")) > len(first) else None,
        timeout=30,
        what="the clock-driven move",
        diagnose=worker.tail,
    )
    assert moved[: len(first)] == first
    assert [(c["from"], c["to"], c["cause"]) for c in moved[len(first) :]] == [
        ("champions", "cant_lose_them", "clock"),
    ]
    assert moved[-1]["scores"] == {"r": 1, "f": 5, "m": 5, "i": None}

    # Exactly once: more clock, no further change (every recency edge is already passed).
    probe.send(order(101, "other", t0 + 150 * DAY, "50.00"))
    settle(probe, 12, worker)
    assert probe.changes("loyal") == moved
    # What is still scheduled for 'loyal' is the window, not a recency edge: day 365.
    assert probe.redis.zscore(Keys(f"{isolated.name}:").due_of("loyal"), "loyal") == t0 + 365 * DAY


def test_orders_leave_the_window_without_any_event_from_that_customer(
    isolated: Isolated, start_worker: Callable[..., WorkerProcess]
) -> None:
    probe = Probe(isolated)
    asyncio.run(ensure_topics(probe.settings))
    worker = start_worker(isolated.config_file(FIXED.format(window=30)))
    t0 = int(time.time() * 1000) - 100 * DAY
    # F = 3 (score 3), M = 3,000 (score 4): orders at day 0, 10 and 20.
    probe.send(*(order(n, "fading", t0 + n * 10 * DAY) for n in range(3)))
    settle(probe, 3, worker)
    assert probe.customer("fading")[b"sc"] == b"5,3,4,"

    # Day 45: the orders of day 0 and 10 are older than 30 days and leave F and M.
    probe.send(order(100, "other", t0 + 45 * DAY, "50.00"))
    settle(probe, 4, worker)
    wait_for(
        lambda: probe.customer("fading")[b"sc"] == b"3,1,3,",
        timeout=30,
        what="F and M to drop as orders age out",
        diagnose=lambda: f"{probe.customer('fading')}\n{worker.tail()}",
    )
    stored = probe.customer("fading")
    assert [k for k in stored if k.startswith(b"o:")] == [b"o:o2"]
    last = probe.changes("fading")[-1]
    assert last["cause"] == "clock"
    assert last["metrics"]["orders"] == 1 and last["metrics"]["monetary"] == "1000.00"


class Unreachable:
    """An output port whose broker is gone: what was committed stays in the outbox."""

    async def publish(self, messages: Any) -> None:
        raise ConnectionError("broker unreachable")


@pytest.mark.parametrize("shards", [1, 3])
def test_clock_swept_is_false_while_due_work_remains_anywhere(
    isolated: Isolated, shards: int
) -> None:
    """The helper the clock tests wait on, against a real store that still has due work:
    in the buckets, behind a stale head, in the older single zset, or in the outbox."""
    settings = settings_from(
        {**isolated.env, "RFM_REDIS_SHARDS": str(shards)},
        {"scoring": {"clock": "event", "window_days": 30}},
    )
    client = redis.Redis.from_url(isolated.infra.redis_url)

    def swept() -> bool:
        return clock_swept(client, isolated.name)

    t0 = int(time.time() * 1000) - 100 * DAY
    topic = Topics(settings.topic_prefix).orders
    people = [f"p{n}" for n in range(12)]

    async def scenario() -> None:
        store = open_store(settings)
        await store.check_layout()
        processor = build_processor(settings, Collector(), store)
        k = store.keys

        async def feed(*events: dict[str, Any]) -> None:
            await processor.process(
                [
                    Record(topic, 0, n, e["customer_id"].encode(), orjson.dumps(e))
                    for n, e in enumerate(events)
                ]
            )

        try:
            assert not swept()  # no event yet: the clock has not started
            await feed(*(order(n, cid, t0 + n * 1000) for n, cid in enumerate(people)))
            assert swept()  # every order leaves the window 30 days on: nothing due yet
            assert not clock_swept(client, isolated.name, now=t0 + 45 * DAY)  # then, all
            # Another order 45 days later: everyone else's orders have left the window.
            await feed(order(100, "late", t0 + 45 * DAY))
            if shards > 1:  # the work is spread: more than one shard holds some
                assert len({k.shard_of(cid) for cid in people}) > 1
            assert sorted(await store.due_before(t0 + 45 * DAY)) == sorted(people)
            assert not swept()
            await sweep_clock(processor)
            assert await store.due_before(t0 + 45 * DAY) == []
            assert swept()

            # A head may be early (a commit only lowers it): checked against its bucket.
            bucket = k.due_of("late")
            due = await store.redis.zscore(bucket, "late")
            assert due is not None and due > t0 + 45 * DAY
            await store.redis.zadd(k.due_heads(k.shard_of("late")), {bucket: t0})
            assert swept()

            # The older layout's single zset of the shard, still swept by the worker.
            shard = k.shard_of("p3")
            await store.redis.zadd(k.due(shard), {"p3": t0 + 40 * DAY})
            assert not swept()
            await sweep_clock(processor)
            assert not await store.redis.exists(k.due(shard))
            assert swept()

            # A committed change the broker never got: not swept until it is published.
            processor.publisher = Unreachable()
            with pytest.raises(ConnectionError):
                await feed(order(200, "new", t0 + 45 * DAY))
            assert await store.outbox_length() > 0
            assert not swept()
            processor.publisher = Collector()
            assert await processor.flush_outbox(min_age_ms=0) > 0
            assert swept()
        finally:
            await store.redis.aclose()

    try:
        asyncio.run(scenario())
    finally:
        client.close()
