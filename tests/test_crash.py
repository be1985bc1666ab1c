"""A worker SIGKILLed in the middle of a stream and restarted (SPEC 2, 3, 6).

The kill lands while the worker is applying input, so it can hit any point of a batch:
between loading and committing (the batch is simply redelivered), between the atomic
commit and the publish (the restarted worker must publish the change from the Redis
outbox), or between the publish and the offset commit (the batch is redelivered and every
event in it must count as a duplicate). Whatever it hit, once the input is drained: no
order counted twice, no segment change missing from the change topic, and the worker's
counters (stats hash) equal the work actually done.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import signal
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import orjson
import pytest
import redis
from aiokafka.admin import AIOKafkaAdminClient

from stream.config import Settings
from stream.kafka import client_options, ensure_topics
from stream.kafka.topics import Topics
from tests.conftest import Isolated
from tests.support import WorkerProcess, produce, read_topic, rfm, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

DAY = 86_400_000
EVENT_CLOCK = """
[scoring]
clock = "event"
refresh_interval = "2s"
"""
CUSTOMERS = [f"{n:05d}" for n in range(1, 301)]  # zero-padded ids must stay strings
BEFORE_KILL = 15_000  # in the topic before the first worker starts
WHILE_DOWN = 3_000  # new events produced while no worker runs
REDELIVERED = 500  # exact re-sends (same event_id) of events produced before the kill
KILL_AT = 0.2  # the kill comes after this fraction of BEFORE_KILL is applied...
KILL_BY = 0.5  # ...and before this one


class Observer:
    """Reads the worker's Redis keys for this test's prefix (stats, outbox)."""

    def __init__(self, iso: Isolated) -> None:
        self.client = redis.Redis.from_url(iso.infra.redis_url)
        self.prefix = iso.name

    def stats(self) -> dict[str, int]:
        raw = self.client.hgetall(f"{self.prefix}:stats")
        return {k.decode(): int(v) for k, v in raw.items()}

    def processed(self) -> int:
        s = self.stats()
        return s.get("accepted", 0) + s.get("duplicates", 0) + s.get("rejected", 0)

    def outbox_len(self) -> int:
        return int(self.client.xlen(f"{self.prefix}:outbox"))

    def outbox(self) -> list[bytes]:
        """Every change in the outbox (an entry holds a commit call's changes as e<k>)."""
        return [
            body
            for _, fields in self.client.xrange(f"{self.prefix}:outbox")
            for name, body in fields.items()
            if name.startswith(b"e")
        ]

    def close(self) -> None:
        self.client.close()


def committed(settings: Settings, topic: str) -> int:
    """Records of ``topic`` the worker group has acknowledged (sum of committed offsets)."""

    async def run() -> int:
        admin = AIOKafkaAdminClient(**client_options(settings))
        await admin.start()
        try:
            offsets = await admin.list_consumer_group_offsets(settings.group_id)
            return sum(max(o.offset, 0) for tp, o in offsets.items() if tp.topic == topic)
        finally:
            await admin.close()

    return asyncio.run(asyncio.wait_for(run(), 60))


def orders(rng: random.Random, first: int, count: int, now: int) -> list[dict[str, Any]]:
    """Completed orders spread unevenly over the customers, all inside the 365-day window."""
    weights = [1 + (n % 7) ** 2 for n in range(len(CUSTOMERS))]
    events = []
    for n in range(first, first + count):
        cid = rng.choices(CUSTOMERS, weights)[0]
        events.append(
            {
                "event_id": f"evt-{n}",
                "type": "order_completed",
                "order_id": f"ord-{n}",
                "customer_id": cid,
                "amount": f"{Decimal(rng.randint(0, 500_000)) / 100:.2f}",
                "currency": "TWD",
                "occurred_at": now - rng.randint(0, 300 * DAY),
                "channel": rng.choice(["online", "pos", "app"]),
            }
        )
    return events


def encode(topic: str, events: list[dict[str, Any]]) -> list[tuple[str, bytes | None, bytes]]:
    return [(topic, e["customer_id"].encode(), orjson.dumps(e)) for e in events]


def test_sigkill_mid_stream_loses_no_change_and_counts_no_order_twice(
    isolated: Isolated, start_worker: Callable[..., WorkerProcess]
) -> None:
    rng = random.Random(20261124)
    now = int(time.time() * 1000) - DAY
    topics = Topics(f"{isolated.name}.")
    config = isolated.config_file(EVENT_CLOCK)
    settings = isolated.settings()
    seen = Observer(isolated)
    try:
        first = orders(rng, 1, BEFORE_KILL, now)
        asyncio.run(ensure_topics(settings))
        produce(settings, encode(topics.orders, first))

        # ---- run, and SIGKILL while the backlog is being applied -----------------------
        # Past KILL_AT of the backlog, aim for the worst moment: a batch committed to Redis
        # (its changes sit in the outbox) but not yet published; kill anyway past
        # KILL_BY so the test never depends on hitting that window.
        worker = start_worker(config, name="worker-1")
        wait_for(
            lambda: seen.processed() >= KILL_AT * BEFORE_KILL or not worker.alive,
            timeout=120,
            interval=0.02,
            what=f"the first worker to apply {KILL_AT:.0%} of the backlog",
            diagnose=lambda: f"stats={seen.stats()}\n{worker.tail()}",
        )
        wait_for(
            lambda: seen.outbox_len() or seen.processed() >= KILL_BY * BEFORE_KILL,
            timeout=60,
            interval=0.001,
            what="a committed but unpublished change, or more progress",
            diagnose=lambda: f"stats={seen.stats()}\n{worker.tail()}",
        )
        assert worker.alive, worker.tail()
        worker.stop(signal.SIGKILL)
        assert not worker.alive
        at_kill = seen.stats()
        processed_at_kill = seen.processed()
        acked = committed(settings, topics.orders)
        orphans = seen.outbox()  # committed to Redis by the dead worker, maybe never published
        # Genuinely mid-stream: the dead worker had applied part of the backlog, not all of
        # it, and left most of it unacknowledged (to be redelivered).
        assert KILL_AT * BEFORE_KILL <= processed_at_kill < BEFORE_KILL, at_kill
        assert acked < 0.9 * BEFORE_KILL, (acked, at_kill)
        print(
            f"\nkilled with {acked}/{BEFORE_KILL} records acknowledged, stats={at_kill}, "
            f"{len(orphans)} unpublished change(s) in the outbox",
            file=sys.stderr,
        )

        # ---- more input while nobody runs: new orders and exact re-sends ----------------
        later = orders(rng, BEFORE_KILL + 1, WHILE_DOWN, now)
        resent = rng.sample(first, REDELIVERED)
        produce(settings, encode(topics.orders, later + resent))
        distinct = first + later
        delivered = len(distinct) + len(resent)

        # ---- restart and drain ------------------------------------------------------------
        restarted = time.monotonic()
        worker = start_worker(config, name="worker-2")
        # Drained = the group acknowledged every record. Records the dead worker applied
        # but never acknowledged come back and count as duplicates, so the stats alone
        # cannot tell when the backlog is done.
        wait_for(
            lambda: committed(settings, topics.orders) >= delivered,
            timeout=300,
            interval=0.5,
            what=f"the restarted worker to acknowledge all {delivered} records",
            diagnose=lambda: (
                f"acknowledged={committed(settings, topics.orders)} stats={seen.stats()}\n"
                f"{worker.tail()}"
            ),
        )
        print(f"drained {time.monotonic() - restarted:.1f}s after the restart", file=sys.stderr)
        rfm(isolated, config, "refresh")
        wait_for(
            lambda: not seen.outbox(),
            timeout=60,
            what="the outbox to drain",
            diagnose=lambda: f"outbox={len(seen.outbox())}\n{worker.tail()}",
        )
        counted = seen.stats()
    finally:
        seen.close()

    exported = rfm(isolated, config, "export", "--format", "jsonl")
    rows = {r["customer_id"]: r for r in map(orjson.loads, exported.splitlines())}
    changes = read_topic(settings, topics.changes)
    assert worker.alive, worker.tail()

    # ---- (1) no order counted twice, none lost --------------------------------------
    want_orders: dict[str, int] = defaultdict(int)
    want_monetary: dict[str, Decimal] = defaultdict(Decimal)
    for e in distinct:
        want_orders[e["customer_id"]] += 1
        want_monetary[e["customer_id"]] += Decimal(e["amount"])
    assert set(rows) == set(want_orders)
    wrong = [
        (cid, row["metrics"]["orders"], want_orders[cid], row["metrics"]["monetary"])
        for cid, row in sorted(rows.items())
        if row["metrics"]["orders"] != want_orders[cid]
        or Decimal(row["metrics"]["monetary"]) != want_monetary[cid]
    ]
    assert not wrong, (
        f"{len(wrong)} customers' orders/monetary differ from the events produced "
        f"(cid, orders, expected orders, monetary): {wrong[:5]}"
    )

    # ---- (2) no change lost: every customer's chain is complete and ends at its state ---
    by_id: dict[str, bytes] = {}
    for message in changes:
        event_id = message.json()["event_id"]
        assert by_id.setdefault(event_id, message.value) == message.value, (
            f"two different bodies for change {event_id}"
        )
    for body in orphans:
        change = orjson.loads(body)
        assert by_id.get(change["event_id"]) == body, f"outbox change never published: {change}"
    chains: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for value in by_id.values():
        change = orjson.loads(value)
        chains[change["customer_id"]].append(change)
    assert set(chains) == set(rows)
    for cid, chain in chains.items():
        chain.sort(key=lambda c: c["seq"])
        assert [c["seq"] for c in chain] == list(range(1, len(chain) + 1)), (
            cid,
            [c["seq"] for c in chain],
        )
        assert chain[0]["from"] is None, (cid, chain[0])
        for before, after in itertools.pairwise(chain):
            assert after["from"] == before["to"] != after["to"], (cid, before, after)
        assert (chain[-1]["to"], chain[-1]["seq"]) == (rows[cid]["segment"], rows[cid]["seq"]), (
            cid,
            chain[-1],
            rows[cid],
        )

    # ---- the worker's own counters agree with what it did ----------------------------
    assert counted.get("rejected", 0) == 0, counted
    # Redelivery after the crash adds duplicates, never accepted events.
    assert counted["duplicates"] >= len(resent), counted
    wrong_counters = {
        name: (counted.get(name, 0), want)
        for name, want in (("accepted", len(distinct)), ("changes", len(by_id)))
        if counted.get(name, 0) != want
    }
    assert not wrong_counters, (
        f"stats counters (got, want) {wrong_counters}: the state is right but the counters "
        f"missed work the dead worker committed (stats={counted}, at kill={at_kill}, "
        f"{len(orphans)} change(s) left in the outbox at the kill)"
    )
