"""Hostile input at volume (SPEC section 2 "Bad input"): thousands of malformed messages
interleaved with valid ones. The worker never dies, every valid event counts exactly once and
the state equals the oracle, every invalid message is in the DLQ with a one-line reason."""

from __future__ import annotations

import asyncio
import base64
import random
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import orjson
import pytest
import redis

from stream.kafka import ensure_topics
from stream.kafka.topics import Topics
from stream.schemes import load_scheme
from tests.conftest import Isolated
from tests.oracle import recompute
from tests.support import WorkerProcess, produce, read_topic, rfm, wait_for

pytestmark = pytest.mark.integration

VALID, HOSTILE = 4_000, 4_000
REQUIRED = ("event_id", "type", "order_id", "customer_id", "amount", "currency", "occurred_at")
JUNK: list[Any] = [None, True, [], {}, [1, 2], {"a": 1}]  # wrong for every required field


def valid_order(rng: random.Random, n: int, now: int) -> dict[str, Any]:
    return {
        "event_id": f"ok-{n}",
        "type": "order_completed",
        "order_id": f"ord-{n}",
        "customer_id": f"{rng.randrange(600):05d}",
        "amount": f"{Decimal(rng.randrange(0, 500_000)) / 100:.2f}",
        "currency": "TWD",
        "occurred_at": now - rng.randrange(1, 300) * 86_400_000,
    }


def hostile(rng: random.Random, n: int, now: int) -> bytes:
    """One message that must be rejected, from a mix of structural and semantic attacks."""
    base = valid_order(rng, 10_000_000 + n, now)
    attack = rng.randrange(14)
    if attack == 0:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(1, 64))) + b"\xff"
    if attack == 1:
        raw = orjson.dumps(base)
        return raw[: rng.randrange(1, len(raw) - 1)]
    if attack == 2:
        del base[rng.choice(REQUIRED)]
    elif attack == 3:
        base[rng.choice(REQUIRED)] = rng.choice(JUNK)
    elif attack == 4:
        base["amount"] = rng.choice(
            ["-0.01", "-5", "10000000.01", "1e400", "NaN", "1.234", "12,00", "0x10", " "]
        )
    elif attack == 5:
        base["currency"] = rng.choice(["USD", "twd", "", "TWDX"])
    elif attack == 6:
        base["occurred_at"] = rng.choice(
            [now + 3_600_000, "yesterday", "2026-13-01T00:00:00Z", -5, "2026-11-20T10:15:00"]
        )
    elif attack == 7:
        base["customer_id"] = rng.choice(["", "y" * 129, 42.5, ["a"]])
    elif attack == 8:
        base["type"] = rng.choice(["order_cancelled", "", "ORDER_COMPLETED", 7])
    elif attack == 9:
        return rng.choice([b"[]", b"1", b'"order"', b"null", b"true", b"{}"])
    elif attack == 10:
        depth = rng.randrange(1100, 3000)
        return b"[" * depth + b"]" * depth
    elif attack == 11:
        base["type"] = "order_refunded"  # a refund of an order that never existed
        base["order_id"] = f"ghost-{n}"
    elif attack == 12:
        base["channel"] = rng.choice(["fax", ["online"], {"x": 1}, 3])
    else:
        base["full"] = True  # only meaningful on refunds
    return orjson.dumps(base)


def test_thousands_of_malformed_messages_never_hurt_the_valid_ones(
    isolated: Isolated, start_worker: Callable[..., WorkerProcess]
) -> None:
    rng = random.Random(5)
    now = int(time.time() * 1000)
    settings = isolated.settings()
    topics = Topics(settings.topic_prefix)
    asyncio.run(ensure_topics(settings))
    good = [valid_order(rng, n, now) for n in range(VALID)]
    bad = [hostile(rng, n, now) for n in range(HOSTILE)]
    messages: list[tuple[str, bytes | None, bytes]] = []
    for doc in good:
        messages.append((topics.orders, doc["customer_id"].encode(), orjson.dumps(doc)))
    for payload in bad:
        key = rng.choice([None, b"", b"\xff\xfe", b"00001", "客".encode()])
        messages.insert(rng.randrange(len(messages) + 1), (topics.orders, key, payload))
    config = isolated.config_file('[scoring]\nclock = "event"\nrefresh_interval = "2s"\n')
    worker = start_worker(config)
    produce(settings, messages)

    client = redis.Redis.from_url(isolated.infra.redis_url)
    try:

        def counted() -> dict[str, int]:
            raw = client.hgetall(f"{isolated.name}:stats")
            return {k.decode(): int(v) for k, v in raw.items()}

        wait_for(
            lambda: counted().get("accepted", 0) + counted().get("rejected", 0) >= VALID + HOSTILE,
            timeout=180,
            what="every message handled",
            diagnose=lambda: f"{counted()}\n{worker.tail()}",
        )
        assert counted()["accepted"] == VALID
        assert counted()["rejected"] == HOSTILE
        assert worker.alive, worker.tail()
    finally:
        client.close()

    letters = read_topic(settings, topics.dlq)
    assert len(letters) == HOSTILE
    dead: list[bytes] = []
    for letter in letters:
        doc = letter.json()
        assert doc["error"] and "\n" not in doc["error"] and len(doc["error"]) < 300
        if doc["payload_encoding"] == "base64":
            dead.append(base64.b64decode(doc["payload"]))
        else:
            dead.append(doc["payload"].encode())
    assert sorted(dead) == sorted(bad)

    rfm(isolated, config, "refresh")
    expected = recompute(good, load_scheme("rfm-classic", 5))
    rows = {
        r["customer_id"]: r for r in map(orjson.loads, rfm(isolated, config, "export").splitlines())
    }
    assert set(rows) == set(expected)
    for cid, want in expected.items():
        got = rows[cid]
        assert (got["segment"], got["metrics"]["orders"]) == (want.segment, want.orders), cid
        assert Decimal(got["metrics"]["monetary"]) == want.monetary, cid
