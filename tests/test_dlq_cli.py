"""`rfm dlq` and `rfm dlq replay` against a real broker and a real worker: the dead letters
the worker wrote are shown with its reasons and the records' own places and bytes, filters
choose among them, nothing is committed for the read, and a replay is refused while the
worker's parser would reject it, and once fixed lands keyed by customer and is applied."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import orjson
import pytest
import redis
from aiokafka.admin import AIOKafkaAdminClient

from stream.config import Settings
from stream.kafka import client_options
from stream.kafka.topics import Topics
from tests.conftest import Isolated
from tests.support import Message, WorkerProcess, produce, read_topic, rfm, wait_for

pytestmark = pytest.mark.integration

ORDER = {
    "event_id": "b1",
    "type": "order_completed",
    "order_id": "o-1",
    "customer_id": "c-1",
    "amount": "120.00",
    "currency": "TWD",
    "occurred_at": "2026-11-20T10:15:00+08:00",
    "channel": "shopify",
}
INTERACTION = {
    "event_id": "b2",
    "type": "interaction",
    "customer_id": "c-2",
    "kind": "zzz",
    "occurred_at": "2026-11-20T10:15:00Z",
}


def rfm_fails(iso: Isolated, *args: str, stdin: bytes = b"") -> str:
    """The error output of an `rfm` command that must fail."""
    done = subprocess.run(
        [sys.executable, "-m", "stream.cli", *args],
        env=iso.process_env(),
        input=stdin,
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert done.returncode != 0, f"rfm {' '.join(args)} should have failed:\n{done.stdout!r}"
    return done.stderr.decode()


def shown(iso: Isolated, *args: str) -> list[dict[str, Any]]:
    return [
        orjson.loads(line)
        for line in rfm(iso, None, "dlq", "--format", "jsonl", *args).splitlines()
    ]


def groups_holding(settings: Settings, topic: str) -> list[str]:
    """Consumer groups (any on the broker) with a committed offset in ``topic``."""

    async def run() -> list[str]:
        admin = AIOKafkaAdminClient(**client_options(settings))
        await admin.start()
        try:
            holding = []
            for group, *_ in await admin.list_consumer_groups():
                offsets = await admin.list_consumer_group_offsets(group)
                if any(tp.topic == topic for tp in offsets):
                    holding.append(group)
            return holding
        finally:
            await admin.close()

    return asyncio.run(run())


def test_dead_letters_shown_filtered_and_replayed(
    isolated: Isolated, start_worker: Callable[..., WorkerProcess]
) -> None:
    settings = isolated.settings()
    topics = Topics(settings.topic_prefix)
    out = rfm(isolated, None, "dlq")
    assert out == "", "no topic yet: nothing shown, and the read ends"

    worker = start_worker()
    produce(
        settings,
        [
            (topics.orders, b"c-1", orjson.dumps(ORDER)),
            (topics.interactions, b"c-2", orjson.dumps(INTERACTION)),
            (topics.orders, b"c-3", b"\xff\xfe not utf-8"),
        ],
    )
    client = redis.Redis.from_url(isolated.infra.redis_url)
    wait_for(
        lambda: int(client.hget(f"{isolated.name}:stats", "rejected") or 0) == 3,
        timeout=90,
        what="three rejects",
        diagnose=worker.tail,
    )
    sent: dict[bytes | None, Message] = {
        m.key: m for t in (topics.orders, topics.interactions) for m in read_topic(settings, t)
    }
    written = {m.key: m for m in read_topic(settings, topics.dlq)}

    every = shown(isolated)
    assert len(every) == 3
    for doc in every:
        key = doc["key"].encode()
        source, dead = sent[key], written[key]
        assert (doc["dlq_partition"], doc["dlq_offset"]) == (dead.partition, dead.offset)
        assert doc["id"] == f"{dead.partition}:{dead.offset}"
        assert (doc["topic"], doc["partition"], doc["offset"]) == (
            source.topic,
            source.partition,
            source.offset,
        )
        payload = doc["payload"].encode() if doc["payload_encoding"] == "utf-8" else None
        assert payload is None or payload == source.value
    by_key = {d["key"]: d for d in every}
    assert "channel" in by_key["c-1"]["error"] and "shopify" in by_key["c-1"]["error"]
    assert "kind" in by_key["c-2"]["error"]
    assert "UTF-8" in by_key["c-3"]["error"] and by_key["c-3"]["payload_encoding"] == "base64"
    assert [d["time"] for d in every] == sorted(d["time"] for d in every)

    human = rfm(isolated, None, "dlq")
    assert human.count("dead letter ") == 3 and "payload (base64): " in human
    assert f"  reason:  {by_key['c-1']['error']}\n" in human

    # filters: reason (any case), time (absolute and as an age), limit (the newest)
    assert [d["key"] for d in shown(isolated, "--reason", "CHANNEL")] == ["c-1"]
    assert shown(isolated, "--since", "1h") == every
    assert shown(isolated, "--until", "1h") == []
    assert shown(isolated, "--since", "2099-01-01T00:00:00Z") == []
    assert shown(isolated, "--limit", "2") == every[1:]
    assert "--since" in rfm_fails(isolated, "dlq", "--since", "yesterday")
    assert groups_holding(settings, topics.dlq) == [], "reading must commit nothing"

    # a replay the worker would reject again is refused, naming the field; nothing is sent
    c1 = by_key["c-1"]["id"]
    still = orjson.dumps({**ORDER, "channel": "shopee"})
    refused = rfm_fails(isolated, "dlq", "replay", c1, "--payload", "-", stdin=still)
    assert "channel" in refused and "nothing replayed" in refused
    assert "UTF-8" in rfm_fails(isolated, "dlq", "replay", by_key["c-3"]["id"])
    assert "choose" in rfm_fails(isolated, "dlq", "replay")
    several = rfm_fails(isolated, "dlq", "replay", "--since", "1h", "--payload", "-", stdin=still)
    assert "3 match" in several
    assert len(read_topic(settings, topics.orders)) == 2

    # fixed: produced keyed by the customer, where the original went, and applied
    fixed = orjson.dumps({**ORDER, "channel": "online"})
    path = isolated.tmp / "fixed.json"
    path.write_bytes(fixed + b"\n")
    out = rfm(isolated, None, "dlq", "replay", c1, "--payload", str(path))
    assert out.startswith(f"replayed dead letter {c1} to {topics.orders} partition ")
    replayed = [m for m in read_topic(settings, topics.orders) if m.value == fixed]
    assert [(m.key, m.partition) for m in replayed] == [(b"c-1", sent[b"c-1"].partition)]
    wait_for(
        lambda: int(client.hget(f"{isolated.name}:stats", "accepted") or 0) == 1,
        timeout=60,
        what="the replayed order applied",
        diagnose=worker.tail,
    )
    export = [orjson.loads(line) for line in rfm(isolated, None, "export").splitlines()]
    assert [(r["customer_id"], r["metrics"]["orders"]) for r in export] == [("c-1", 1)]
    assert len(shown(isolated)) == 3, "the dead letters stay in the topic"
    client.close()
