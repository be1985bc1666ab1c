"""Scale-out on Kafka's own terms (consumer groups): three workers over twelve partitions, one
killed mid-stream; and the refresh lease + version fence that keeps one leader's result."""

from __future__ import annotations

import asyncio
import signal
import time
from dataclasses import dataclass

import orjson
import pytest
import redis
from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment

from stream.config import Settings, settings_from
from stream.core.scoring import Thresholds
from stream.kafka import client_options, ensure_topics
from stream.kafka.topics import Topics
from stream.store.redis_store import open_store
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


@dataclass(frozen=True)
class Group:
    """A consumer group as the broker sees it: its state, each member's input partitions
    (by client id) and the offsets committed for them."""

    state: str
    members: dict[str, frozenset[TopicPartition]]
    committed: dict[TopicPartition, int]

    def stable_with(self, clients: set[str]) -> bool:
        """Stable, with exactly ``clients`` as members, each holding partitions."""
        return (
            self.state == "Stable" and set(self.members) == clients and all(self.members.values())
        )


def describe(settings: Settings, inputs: list[str]) -> Group:
    async def run() -> Group:
        admin = AIOKafkaAdminClient(**client_options(settings))
        await admin.start()
        try:
            [response] = await admin.describe_consumer_groups([settings.group_id])
            [(error, _group, state, _ptype, _protocol, members, *_)] = response.groups
            assert error == 0, f"DescribeGroups error {error}"
            owned: dict[str, frozenset[TopicPartition]] = {}
            for _member_id, client_id, _host, _metadata, raw in members:
                assert client_id not in owned, f"two members named {client_id}"
                parts = ConsumerProtocolMemberAssignment.decode(raw).assignment if raw else []
                owned[client_id] = frozenset(
                    TopicPartition(topic, p)
                    for topic, partitions in parts
                    if topic in inputs
                    for p in partitions
                )
            offsets = await admin.list_consumer_group_offsets(settings.group_id)
            committed = {tp: meta.offset for tp, meta in offsets.items() if tp.topic in inputs}
            return Group(state, owned, committed)
        finally:
            await admin.close()

    return asyncio.run(asyncio.wait_for(run(), 30))


def test_three_workers_one_killed_mid_stream_end_at_the_oracle(isolated: Isolated) -> None:
    env = {**isolated.env, "RFM_PARTITIONS": "12"}
    settings = settings_from(env, {"scoring": {"clock": "event"}})
    topics = Topics(settings.topic_prefix)
    asyncio.run(ensure_topics(settings))
    config = isolated.config_file('[scoring]\nclock = "event"\nrefresh_interval = "2s"\n')
    process_env = {**isolated.process_env(config), "RFM_PARTITIONS": "12"}
    # Faust takes its Kafka client id from BROKER_CLIENT_ID: one per process, so the broker's
    # view of the group says which process holds which partitions.
    names = [f"{isolated.name}-w{n}" for n in range(3)]
    workers = [
        WorkerProcess({**process_env, "BROKER_CLIENT_ID": name}, isolated.tmp / f"{name}.log")
        for name in names
    ]
    for worker in workers:
        worker.start()
    victim = names[1]
    events = random_orders(12, 40_000, customers=2_000)
    client = redis.Redis.from_url(isolated.infra.redis_url)

    def accepted() -> int:
        return int(client.hget(f"{isolated.name}:stats", "accepted") or 0)

    def group() -> Group:
        return describe(settings, topics.inputs)

    def tails() -> str:
        return "\n".join(w.tail(15) for w in workers)

    try:
        everyone = set(names)
        baseline: list[Group | None] = [
            wait_for(
                lambda: found if (found := group()).stable_with(everyone) else None,
                timeout=120,
                what="a stable group of the three workers, each holding partitions",
                diagnose=lambda: f"{group()}\n{tails()}",
            )
        ]
        first, rest = events[:20_000], events[20_000:]
        send = [(topics.orders, e["customer_id"].encode(), orjson.dumps(e)) for e in first]
        produce(settings, send)

        def victim_applied() -> tuple[Group, Group] | None:
            """Two looks at the group, stable with one assignment throughout, between which
            the offsets committed on the victim's partitions advanced: the victim's own
            work. A rebalance in between starts the comparison again."""
            then, now = baseline[0], group()
            if not now.stable_with(everyone):
                baseline[0] = None
                return None
            if then is None or then.members != now.members:
                baseline[0] = now
                return None
            mine = now.members[victim]
            progress = sum(now.committed.get(tp, 0) - then.committed.get(tp, 0) for tp in mine)
            return (then, now) if progress > 0 and accepted() >= 4_000 else None

        then, before_kill = wait_for(
            victim_applied,
            timeout=120,
            what="the victim to commit events of its own partitions, mid-stream",
            diagnose=lambda: f"accepted={accepted()}\n{group()}\n{tails()}",
        )
        # Kafka's view right before the kill: a stable group of three in which the victim
        # holds partitions and has committed events on them.
        held = before_kill.members[victim]
        assert before_kill.stable_with(everyone) and held, before_kill
        assert any(before_kill.committed.get(tp, 0) > then.committed.get(tp, 0) for tp in held)
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
        survivors = {names[0], names[2]}
        after = wait_for(
            lambda: found if (found := group()).stable_with(survivors) else None,
            timeout=60,
            what="a stable group of the two survivors",
            diagnose=lambda: f"{group()}\n{tails()}",
        )
        assert held <= after.members[names[0]] | after.members[names[2]]  # taken over
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
        store = open_store(isolated.settings())
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
