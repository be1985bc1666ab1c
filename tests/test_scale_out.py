"""Scale-out on Kafka's own terms (consumer groups): three workers over twelve partitions, one
killed mid-stream; and the refresh lease + version fence that keeps one leader's result."""

from __future__ import annotations

import asyncio
import signal
import time

import orjson
import pytest
import redis

from stream.config import settings_from
from stream.kafka import ensure_topics
from stream.scoring import Thresholds
from stream.store.keys import Keys
from stream.store.redis_store import RedisStore, connect
from stream.topics import Topics
from tests.conftest import Isolated
from tests.support import (
    WorkerProcess,
    assert_change_chains,
    assert_export_is_the_oracle,
    produce,
    random_orders,
    read_topic,
    rfm,
    wait_for,
)

pytestmark = pytest.mark.integration

DAY = 86_400_000


def test_three_workers_one_killed_mid_stream_end_at_the_oracle(isolated: Isolated) -> None:
    env = {**isolated.env, "RFM_PARTITIONS": "12"}
    settings = settings_from(env, {"scoring": {"clock": "event"}})
    topics = Topics(settings.topic_prefix)
    asyncio.run(ensure_topics(settings))
    config = isolated.config_file('[scoring]\nclock = "event"\nrefresh_interval = "2s"\n')
    process_env = {**isolated.process_env(config), "RFM_PARTITIONS": "12"}
    workers = [
        WorkerProcess(process_env, isolated.tmp / f"worker-{n}.log").start() for n in range(3)
    ]
    events = random_orders(12, 40_000, customers=2_000)
    client = redis.Redis.from_url(isolated.infra.redis_url)

    def accepted() -> int:
        return int(client.hget(f"{isolated.name}:stats", "accepted") or 0)

    try:
        first, rest = events[:20_000], events[20_000:]
        send = [(topics.orders, e["customer_id"].encode(), orjson.dumps(e)) for e in first]
        produce(settings, send)
        wait_for(
            lambda: accepted() >= 4_000,
            timeout=120,
            what="the group to be mid-stream",
            diagnose=workers[0].tail,
        )
        workers[1].stop(signal.SIGKILL)
        send = [(topics.orders, e["customer_id"].encode(), orjson.dumps(e)) for e in rest]
        produce(settings, send)
        wait_for(
            lambda: accepted() >= len(events),
            timeout=240,
            what="the survivors to take over and drain",
            diagnose=lambda: f"accepted={accepted()}\n{workers[0].tail()}\n{workers[2].tail()}",
        )
        assert accepted() == len(events)
        assert workers[0].alive and workers[2].alive
        rfm(isolated, config, "refresh")
        wait_for(
            lambda: client.xlen(f"{isolated.name}:outbox") == 0, timeout=60, what="outbox drained"
        )
    finally:
        client.close()
        for worker in workers:
            worker.stop()

    rows = assert_export_is_the_oracle(rfm(isolated, config, "export"), events)
    assert_change_chains(read_topic(settings, topics.changes), rows)


def test_a_stale_refresh_leader_cannot_overwrite_a_newer_result(isolated: Isolated) -> None:
    async def scenario() -> None:
        store = RedisStore(connect(isolated.infra.redis_url), Keys(f"{isolated.name}:"))
        try:
            stale = await store.acquire_lease(ttl_ms=200)
            assert stale is not None
            assert await store.acquire_lease(ttl_ms=10_000) is None  # one leader at a time
            wait_until = time.monotonic() + 5
            fresh = None
            while fresh is None and time.monotonic() < wait_until:  # the stale lease expires
                fresh = await store.acquire_lease(ttl_ms=10_000)
                await asyncio.sleep(0.05)
            assert fresh is not None
            newer = Thresholds(version=1, edges={"f": (1, 2, 3, 4)})
            assert await store.publish_thresholds(fresh, 0, newer) == 1
            older = Thresholds(version=1, edges={"f": (9, 9, 9, 9)})
            assert await store.publish_thresholds(stale, 0, older) == -1  # lease lost
            assert not await store.renew_lease(stale, 10_000)
            # Even holding the lease, a result computed from an old version is fenced off.
            assert await store.publish_thresholds(fresh, 0, older) == -2
            current, _ = await store.thresholds()
            assert (current.version, current.for_dim("f")) == (1, (1, 2, 3, 4))
        finally:
            await store.redis.aclose()

    asyncio.run(scenario())
