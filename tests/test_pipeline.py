"""End to end through a real broker, real Redis and a real `rfm worker` process (SPEC 2-6)."""

from __future__ import annotations

import asyncio
import base64
import itertools
import random
import time
from collections import defaultdict
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
from tests.support import WorkerProcess, lines, produce, read_topic, rfm, wait_for

pytestmark = pytest.mark.integration

DAY = 86_400_000
EVENT_CLOCK = """
[scoring]
clock = "event"
refresh_interval = "2s"
"""


def stats(iso: Isolated) -> dict[str, int]:
    client = redis.Redis.from_url(iso.infra.redis_url)
    try:
        raw = client.hgetall(f"{iso.name}:stats")
        return {k.decode(): int(v) for k, v in raw.items()}
    finally:
        client.close()


def outbox_len(iso: Isolated) -> int:
    client = redis.Redis.from_url(iso.infra.redis_url)
    try:
        return int(client.xlen(f"{iso.name}:outbox"))
    finally:
        client.close()


def history(rng: random.Random, customers: list[str], now: int) -> list[dict[str, Any]]:
    """Realistic shapes: many one-time buyers, a loyal core, a few whales, some who stopped."""
    events: list[dict[str, Any]] = []
    n = 0
    for index, cid in enumerate(customers):
        kind = index % 10
        count = (
            1
            if kind < 4
            else rng.randint(2, 5)
            if kind < 7
            else rng.randint(8, 25)
            if kind < 9
            else rng.randint(3, 12)
        )
        stopped = kind == 6
        for _ in range(count):
            n += 1
            age_days = rng.uniform(200, 360) if stopped else rng.uniform(1, 330)
            cents = rng.randint(0, 2_000_000 if kind == 9 else 300_000)
            events.append(
                {
                    "event_id": f"evt-{n}",
                    "type": "order_completed",
                    "order_id": f"ord-{n}",
                    "customer_id": cid,
                    "amount": f"{Decimal(cents) / 100:.2f}",
                    "currency": "TWD",
                    "occurred_at": now - int(age_days * DAY) - rng.randint(0, DAY),
                    "channel": rng.choice(["online", "pos", "app"]),
                }
            )
    rng.shuffle(events)
    return events


def test_scores_and_segments_equal_the_batch_oracle(
    isolated: Isolated, start_worker: Callable[..., WorkerProcess]
) -> None:
    rng = random.Random(20261123)
    now = int(time.time() * 1000) - DAY
    customers = [f"{n:05d}" for n in range(1, 401)]  # zero-padded ids must stay strings
    events = history(rng, customers, now)
    assert len(events) > 2000
    # Exact re-deliveries (same event_id) and re-sent orders (new event_id, same order_id).
    redelivered = rng.sample(events, 150)
    resent = [
        {**e, "event_id": e["event_id"] + "-again", "amount": "99999.00"}
        for e in rng.sample(events, 100)
    ]
    log = list(events)
    for extra in (*redelivered, *resent):
        log.insert(rng.randint(len(log) // 2, len(log)), extra)  # after the original
    config = isolated.config_file(EVENT_CLOCK)
    worker = start_worker(config)
    rfm(
        isolated,
        config,
        "import",
        str(lines(isolated.tmp / "orders.jsonl", log)),
        "--kind",
        "orders",
    )

    total = len(log)
    wait_for(
        lambda: (
            sum(stats(isolated).get(k, 0) for k in ("accepted", "duplicates", "rejected")) >= total
        ),
        timeout=180,
        what=f"the worker to apply all {total} events",
        diagnose=lambda: f"stats={stats(isolated)}\n{worker.tail()}",
    )
    rfm(isolated, config, "refresh")
    wait_for(lambda: outbox_len(isolated) == 0, timeout=60, what="the outbox to drain")

    counted = stats(isolated)
    assert counted.get("rejected", 0) == 0
    assert counted["accepted"] == len(events)
    assert counted["duplicates"] == len(redelivered) + len(resent)

    scheme = load_scheme("rfm-classic", 5)
    expected = recompute(log, scheme)
    exported = rfm(isolated, config, "export", "--format", "jsonl")
    rows = {r["customer_id"]: r for r in map(orjson.loads, exported.splitlines())}
    assert set(rows) == set(customers) == set(expected)
    mismatches = []
    for cid, want in expected.items():
        row = rows[cid]
        got = (row["scores"]["r"], row["scores"]["f"], row["scores"]["m"], row["segment"])
        wanted = (want.scores["r"], want.scores["f"], want.scores["m"], want.segment)
        metrics_ok = (
            row["metrics"]["orders"] == want.orders
            and Decimal(row["metrics"]["monetary"]) == want.monetary
        )
        if got != wanted or not metrics_ok:
            mismatches.append((cid, got, wanted, row["metrics"], want))
    assert not mismatches, f"{len(mismatches)} customers differ from the oracle: {mismatches[:5]}"

    # Live counts equal the per-segment tally of the final segments.
    client = redis.Redis.from_url(isolated.infra.redis_url)
    try:
        live = {k.decode(): int(v) for k, v in client.hgetall(f"{isolated.name}:counts").items()}
    finally:
        client.close()
    tally: dict[str, int] = defaultdict(int)
    for want in expected.values():
        tally[want.segment] += 1
    assert {k: v for k, v in live.items() if v} == dict(tally)

    # The change topic: exactly first assignments and moves, seq 1..n, ending where state is.
    changes = read_topic(isolated.settings(), Topics(f"{isolated.name}.").changes)
    by_id: dict[str, bytes] = {}
    for message in changes:
        assert by_id.setdefault(message.json()["event_id"], message.value) == message.value
    per_customer: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for value in by_id.values():
        change = orjson.loads(value)
        per_customer[change["customer_id"]].append(change)
    assert len(by_id) == counted["changes"]
    assert set(per_customer) == set(customers)
    for cid, chain in per_customer.items():
        chain.sort(key=lambda c: c["seq"])
        assert [c["seq"] for c in chain] == list(range(1, len(chain) + 1)), cid
        assert chain[0]["from"] is None
        for before, after in itertools.pairwise(chain):
            assert after["from"] == before["to"] != after["to"], (cid, before, after)
        assert chain[-1]["to"] == rows[cid]["segment"] and chain[-1]["seq"] == rows[cid]["seq"]
        assert all(c["scheme"] == "rfm-classic" for c in chain)
    assert worker.alive, worker.tail()


def test_bad_input_goes_to_the_dlq_and_valid_input_around_it_is_kept(
    isolated: Isolated, start_worker: Callable[..., WorkerProcess]
) -> None:
    topics = Topics(f"{isolated.name}.")
    now = int(time.time() * 1000)

    def order(n: int, cid: str, **over: Any) -> dict[str, Any]:
        base = {
            "event_id": f"e{n}",
            "type": "order_completed",
            "order_id": f"o{n}",
            "customer_id": cid,
            "amount": "120.50",
            "currency": "TWD",
            "occurred_at": now - 3_600_000,
        }
        base.update(over)
        return {k: v for k, v in base.items() if v is not None}

    odd_ids = ["00042", "{x}:y z", "客戶🙂", "-1", "=HYPERLINK()", "a" * 128]
    bad: list[tuple[bytes, str]] = [
        (b"this is not json", "json"),
        (b"\xff\xfe\x00 not utf-8", "utf-8"),
        (orjson.dumps(order(101, "x", customer_id=None)), "customer_id"),
        (orjson.dumps(order(102, "x", amount="-5.00")), "amount"),
        (orjson.dumps(order(103, "x", currency="USD")), "currency"),
        (orjson.dumps(order(104, "x", occurred_at=now + 3_600_000)), "future"),
        (orjson.dumps(order(105, "x", amount="1.005")), "decimal"),
        (orjson.dumps(order(106, "x", type="order_exploded")), "type"),
        (orjson.dumps(order(107, "")), "customer_id"),
        (orjson.dumps(order(108, "b" * 129)), "customer_id"),
        (orjson.dumps(order(109, "x", amount="1e400")), "amount"),
    ]
    messages: list[tuple[str, bytes | None, bytes]] = []
    valid = 0
    for n, (payload, _reason) in enumerate(bad):
        cid = odd_ids[n % len(odd_ids)]
        messages.append((topics.orders, cid.encode(), orjson.dumps(order(n, cid))))
        messages.append((topics.orders, cid.encode(), payload))
        valid += 1

    asyncio.run(ensure_topics(isolated.settings()))
    worker = start_worker(isolated.config_file(EVENT_CLOCK))
    produce(isolated.settings(), messages)

    def dlq() -> list[Any]:
        return read_topic(isolated.settings(), topics.dlq)

    letters = wait_for(
        lambda: found if len(found := dlq()) >= len(bad) else None,
        timeout=120,
        what=f"{len(bad)} dead letters",
        diagnose=lambda: f"stats={stats(isolated)}\n{worker.tail()}",
    )
    assert len(letters) == len(bad)
    by_payload = {}
    for letter in letters:
        doc = letter.json()
        assert set(doc) >= {"topic", "partition", "offset", "error", "payload"}
        assert doc["topic"] == topics.orders
        raw = (
            base64.b64decode(doc["payload"])
            if doc.get("payload_encoding") == "base64"
            else doc["payload"].encode()
        )
        assert "\n" not in doc["error"] and doc["error"]
        by_payload[raw] = doc["error"]
    for payload, reason in bad:
        assert payload in by_payload, f"missing from the DLQ: {payload!r}"
        assert reason in by_payload[payload].lower(), (reason, by_payload[payload])

    # The worker keeps consuming after the bad input.
    later = [order(500 + n, cid) for n, cid in enumerate(odd_ids)]
    produce(
        isolated.settings(),
        [(topics.orders, e["customer_id"].encode(), orjson.dumps(e)) for e in later],
    )
    valid += len(later)
    wait_for(
        lambda: stats(isolated).get("accepted", 0) >= valid,
        timeout=60,
        what=f"{valid} accepted events",
        diagnose=lambda: f"stats={stats(isolated)}\n{worker.tail()}",
    )
    assert stats(isolated)["accepted"] == valid
    assert stats(isolated)["rejected"] == len(bad)
    assert worker.alive, worker.tail()

    exported = rfm(isolated, isolated.config_file(EVENT_CLOCK), "export")
    ids = {orjson.loads(line)["customer_id"] for line in exported.splitlines()}
    assert ids == set(odd_ids)  # exactly as sent: "00042" stays "00042"


def bad_payloads_sample(now: int) -> list[bytes]:
    """A few rejects of different kinds, for tests that need some bad input around."""
    order = {
        "event_id": "bad",
        "type": "order_completed",
        "order_id": "bad",
        "customer_id": "secret-customer-bad",
        "amount": "4242.17",
        "currency": "USD",
        "occurred_at": now,
    }
    return [
        b"{not json",
        orjson.dumps(order),
        orjson.dumps({**order, "currency": "TWD", "amount": "-1"}),
    ]
