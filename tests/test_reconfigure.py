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
from stream.kafka.topics import Topics
from stream.schemes import load_scheme
from stream.store.keys import Keys
from tests.conftest import Isolated
from tests.oracle import recompute
from tests.support import WorkerProcess, produce, read_topic, rfm, wait_for

pytestmark = pytest.mark.integration


def test_switching_scheme_reclassifies_everyone_once(
    isolated: Isolated, start_worker: Callable[..., WorkerProcess]
) -> None:
    rng = random.Random(8)
    settings = isolated.settings()
    topics = Topics(settings.topic_prefix)
    keys = Keys(settings.key_prefix, settings.redis_shards)
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
    # Independently of the scorer: each customer's segment under either scheme, from the raw
    # events (event clock, default window), and so who must move when the scheme changes.
    before = recompute(docs, load_scheme("rfm-classic", 5))
    after = recompute(docs, load_scheme("simple", 5))
    must_move = {cid: (before[cid].segment, after[cid].segment) for cid in before}
    must_move = {cid: pair for cid, pair in must_move.items() if pair[0] != pair[1]}
    assert 0 < len(must_move) < len(before)  # some stay (at_risk is in both schemes)

    classic = isolated.config_file('[scoring]\nclock = "event"\nrefresh_interval = "1s"\n')
    worker = start_worker(classic, name="classic")
    produce(settings, [(topics.orders, d["customer_id"].encode(), orjson.dumps(d)) for d in docs])
    client = redis.Redis.from_url(isolated.infra.redis_url, decode_responses=True)

    def outbox_length() -> int:
        return sum(int(client.xlen(keys.outbox(s))) for s in keys.all_shards)

    try:
        wait_for(
            lambda: int(client.hget(f"{isolated.name}:stats", "accepted") or 0) >= len(docs),
            timeout=120,
            what="the history applied",
            diagnose=worker.tail,
        )
        rfm(isolated, classic, "refresh")
        customers = len(set(d["customer_id"] for d in docs))
        assert customers == len(before)
        classic_print = wait_for(
            lambda: client.get(keys.scoring_fingerprint),
            timeout=60,
            what="the classic configuration recorded",
            diagnose=worker.tail,
        )
        worker.stop()

        simple = isolated.tmp / "simple.toml"
        simple.write_text(
            '[scoring]\nclock = "event"\nrefresh_interval = "1s"\nscheme = "simple"\n',
            encoding="utf-8",
        )
        worker = start_worker(simple, name="simple")
        samples: list[int] = []

        def reconfigured() -> bool:
            counts = {k: int(v) for k, v in client.hgetall(f"{isolated.name}:counts").items()}
            samples.append(sum(counts.values()))
            # the fingerprint is recorded only once every customer has been re-scored
            return client.get(keys.scoring_fingerprint) not in (None, classic_print)

        wait_for(
            reconfigured,
            timeout=120,
            what="the re-score under the 'simple' scheme to finish",
            diagnose=worker.tail,
        )
        wait_for(
            lambda: outbox_length() == 0,
            timeout=60,
            what="every committed change published (outbox drained)",
            diagnose=lambda: f"outbox={outbox_length()}\n{worker.tail()}",
        )
        assert set(samples) == {customers}  # counts stayed exact while customers moved
        live = {k: int(v) for k, v in client.hgetall(f"{isolated.name}:counts").items() if int(v)}
    finally:
        client.close()

    rows = [orjson.loads(line) for line in rfm(isolated, simple, "export").splitlines()]
    assert len(rows) == customers
    assert dict(Counter(r["segment"] for r in rows)) == live
    assert {r["customer_id"]: r["segment"] for r in rows} == {
        cid: want.segment for cid, want in after.items()
    }
    reconfigure = [
        m.json() for m in read_topic(settings, topics.changes) if m.json()["cause"] == "reconfigure"
    ]
    assert all(c["scheme"] == "simple" for c in reconfigure)
    unique = {c["event_id"]: c for c in reconfigure}  # a re-sent change keeps its event_id
    per_customer = Counter(c["customer_id"] for c in unique.values())
    assert [cid for cid, n in per_customer.items() if n > 1] == []  # once per customer
    assert len(unique) == len(must_move)
    assert {c["customer_id"]: (c["from"], c["to"]) for c in unique.values()} == must_move
