"""A scheme change rolled out without downtime: the new worker re-scores every customer once,
with cause "reconfigure", while live counts stay equal to the stored segments throughout."""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Callable
from decimal import Decimal

import orjson
import pytest
import redis

from stream.kafka import ensure_topics
from stream.segments import load_scheme
from stream.topics import Topics
from tests.conftest import Isolated
from tests.support import WorkerProcess, produce, read_topic, rfm, wait_for

pytestmark = pytest.mark.integration


def test_switching_scheme_reclassifies_everyone_once(
    isolated: Isolated, start_worker: Callable[..., WorkerProcess]
) -> None:
    rng = random.Random(8)
    settings = isolated.settings()
    topics = Topics(settings.topic_prefix)
    asyncio.run(ensure_topics(settings))
    now = int(time.time() * 1000)
    docs = [
        {
            "event_id": f"e{n}",
            "type": "order_completed",
            "order_id": f"o{n}",
            "customer_id": f"{rng.randrange(300):05d}",
            "amount": f"{Decimal(rng.randrange(100, 100_000)) / 100:.2f}",
            "currency": "TWD",
            "occurred_at": now - rng.randrange(1, 300) * 86_400_000,
        }
        for n in range(2_000)
    ]
    classic = isolated.config_file('[scoring]\nclock = "event"\nrefresh_interval = "1s"\n')
    worker = start_worker(classic, name="classic")
    produce(settings, [(topics.orders, d["customer_id"].encode(), orjson.dumps(d)) for d in docs])
    client = redis.Redis.from_url(isolated.infra.redis_url, decode_responses=True)
    try:
        wait_for(
            lambda: int(client.hget(f"{isolated.name}:stats", "accepted") or 0) >= len(docs),
            timeout=120,
            what="the history applied",
            diagnose=worker.tail,
        )
        rfm(isolated, classic, "refresh")
        customers = len(set(d["customer_id"] for d in docs))
        worker.stop()

        simple = isolated.tmp / "simple.toml"
        simple.write_text(
            '[scoring]\nclock = "event"\nrefresh_interval = "1s"\nscheme = "simple"\n',
            encoding="utf-8",
        )
        worker = start_worker(simple, name="simple")
        samples: list[int] = []

        def reclassified() -> bool:
            counts = {k: int(v) for k, v in client.hgetall(f"{isolated.name}:counts").items()}
            samples.append(sum(counts.values()))
            return {k for k, v in counts.items() if v} <= set(load_scheme("simple", 5).ids)

        wait_for(
            reclassified,
            timeout=120,
            what="every customer in a 'simple' segment",
            diagnose=worker.tail,
        )
        assert set(samples) == {customers}  # counts stayed exact while customers moved
        live = {k: int(v) for k, v in client.hgetall(f"{isolated.name}:counts").items() if int(v)}
    finally:
        client.close()

    rows = [orjson.loads(line) for line in rfm(isolated, simple, "export").splitlines()]
    assert len(rows) == customers
    assert dict(Counter(r["segment"] for r in rows)) == live
    moved = [
        m.json() for m in read_topic(settings, topics.changes) if m.json()["cause"] == "reconfigure"
    ]
    assert moved and all(c["scheme"] == "simple" for c in moved)
    assert len({c["customer_id"] for c in moved}) == len(moved)  # once per customer
