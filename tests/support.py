"""Test-side plumbing: waiting on conditions, producing and reading topics, a worker process.

Nothing here imitates the system under test; it only drives real Kafka, Redis and worker
processes and observes them.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from stream.config import Settings
from stream.kafka import KafkaPublisher, client_options
from stream.kafka.topics import Topics
from stream.process import Child, wait_until
from stream.schemes import load_scheme
from stream.store.keys import Keys
from tests.oracle import recompute

T = TypeVar("T")


def wait_for(
    probe: Callable[[], T | None],
    *,
    timeout: float,
    what: str,
    interval: float = 0.1,
    diagnose: Callable[[], str] | None = None,
) -> T:
    """Poll ``probe`` until it returns something truthy; fail naming ``what`` at the deadline."""
    value = wait_until(probe, deadline=time.monotonic() + timeout, interval=interval)
    if not value:
        extra = f"\n{diagnose()}" if diagnose else ""
        raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}{extra}")
    return value


def produce(settings: Settings, messages: Sequence[tuple[str, bytes | None, bytes]]) -> None:
    async def run() -> None:
        async with KafkaPublisher(settings) as publisher:
            for start in range(0, len(messages), 2000):
                await publisher.publish(messages[start : start + 2000])

    asyncio.run(run())


@dataclass(frozen=True)
class Message:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes

    def json(self) -> Any:
        return orjson.loads(self.value)


def read_topic(settings: Settings, topic: str) -> list[Message]:
    """Everything currently in ``topic`` (up to the end offsets at call time), in order."""

    async def run() -> list[Message]:
        consumer = AIOKafkaConsumer(
            **client_options(settings), enable_auto_commit=False, group_id=None
        )
        await consumer.start()
        try:
            parts = [TopicPartition(topic, p) for p in await _partitions(settings, topic)]
            if not parts:
                return []
            consumer.assign(parts)
            await consumer.seek_to_beginning(*parts)
            ends = await consumer.end_offsets(parts)
            out: list[Message] = []
            remaining = {tp for tp in parts if ends[tp] > 0}
            while remaining:
                batch = await consumer.getmany(*remaining, timeout_ms=1000, max_records=5000)
                for tp, records in batch.items():
                    for r in records:
                        out.append(Message(topic, tp.partition, r.offset, r.key, r.value))
                    if records and records[-1].offset + 1 >= ends[tp]:
                        remaining.discard(tp)
            return out
        finally:
            await _stop(consumer)

    async def with_metadata() -> list[Message]:
        return await asyncio.wait_for(run(), 60)

    return asyncio.run(with_metadata())


async def _partitions(settings: Settings, topic: str) -> list[int]:
    admin = AIOKafkaAdminClient(**client_options(settings))
    await admin.start()
    try:
        [described] = await admin.describe_topics([topic])
        return sorted(p["partition"] for p in described.get("partitions", []))
    finally:
        await admin.close()


async def _stop(consumer: AIOKafkaConsumer) -> None:
    # aiokafka (0.14) re-raises the CancelledError of its own never-started no-group task
    # from stop(); swallow only that, never a cancellation aimed at us.
    try:
        await consumer.stop()
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise


class WorkerProcess(Child):
    """`rfm worker` as a child process, with its log kept for failure reports."""

    def __init__(self, env: dict[str, str], log: Path, loglevel: str = "warn") -> None:
        argv = [sys.executable, "-m", "stream.cli", "worker", "--loglevel", loglevel]
        super().__init__("worker", argv, env, log)


def rfm_child(env: dict[str, str], log: Path, *args: str) -> Child:
    """``rfm ARGS`` started in the background (a session of its own), its output in ``log``."""
    return Child(f"rfm {args[0]}", [sys.executable, "-m", "stream.cli", *args], env, log).start()


def rfm_run(
    iso: Any, config: Path | None, *args: str, timeout: float = 240
) -> subprocess.CompletedProcess[str]:
    """Run the real CLI in ``iso``'s deployment, whatever its exit code."""
    return subprocess.run(
        [sys.executable, "-m", "stream.cli", *args],
        env=iso.process_env(config),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def rfm(iso: Any, config: Path | None, *args: str, timeout: float = 240) -> str:
    """Run the real CLI in ``iso``'s deployment; fail with its output if it fails."""
    done = rfm_run(iso, config, *args, timeout=timeout)
    assert done.returncode == 0, f"rfm {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def lines(path: Path, records: Iterable[dict[str, Any]]) -> Path:
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
    return path


def events_applied(client: Any, prefix: str) -> int:
    """Input events the scorer has dealt with (accepted, duplicate or rejected)."""
    raw = client.hgetall(f"{prefix}:stats")
    return sum(int(raw.get(k, 0)) for k in (b"accepted", b"duplicates", b"rejected"))


def configuration_recorded(client: Any, prefix: str) -> bool:
    """The worker's first periodic round recorded the scoring configuration. Until then a
    round may re-score every customer as a reconfiguration (cause "reconfigure"), so a test
    asserting another cause waits for this before it makes a customer move."""
    return bool(client.exists(Keys(f"{prefix}:").scoring_fingerprint))


def clock_swept(client: Any, prefix: str, *, now: int | None = None) -> bool:
    """No customer's clock-driven re-score is still due at ``now`` (default: the event
    clock, which must have started), and every committed change has left the outbox.

    Reads the clock index as the store keeps it (``stream.store.keys``), in every shard:
    the bucket heads, which are only lower bounds, so each bucket whose head has passed is
    checked entry by entry; and the single ``due`` zset of the older layout. A clock that
    moved while this looked is "not yet": the answer holds for one clock value.
    """
    keys = Keys(f"{prefix}:", int(client.get(Keys(f"{prefix}:").layout) or 1))

    def clock() -> int:
        pipe = client.pipeline(transaction=False)
        for s in keys.all_shards:
            pipe.get(keys.clock(s))
        return max(int(raw or 0) for raw in pipe.execute())

    started = clock()
    at = started if now is None else now
    if at <= 0:
        return False
    pipe = client.pipeline(transaction=False)
    for s in keys.all_shards:
        pipe.zcount(keys.due(s), "-inf", at)
        pipe.zrangebyscore(keys.due_heads(s), "-inf", at)
        pipe.xlen(keys.outbox(s))
    replies = pipe.execute()
    if any(replies[0::3]) or any(replies[2::3]):
        return False
    passed = [bucket for heads in replies[1::3] for bucket in heads]
    if passed:
        pipe = client.pipeline(transaction=False)
        for bucket in passed:
            pipe.zcount(bucket, "-inf", at)
        if any(pipe.execute()):
            return False
    return now is not None or clock() == started


def changes_of(settings: Settings, customer_id: str) -> list[dict[str, Any]]:
    """One customer's change events in seq order, redeliveries (same event_id) counted once."""
    unique: dict[str, dict[str, Any]] = {}
    for message in read_topic(settings, Topics(settings.topic_prefix).changes):
        change = message.json()
        if change["customer_id"] == customer_id:
            unique[change["event_id"]] = change
    return sorted(unique.values(), key=lambda c: c["seq"])


def random_orders(seed: int, count: int, customers: int, days: int = 330) -> list[dict[str, Any]]:
    """``count`` valid orders from ``customers`` customers over the last ``days`` days."""
    rng = random.Random(seed)
    now = int(time.time() * 1000)
    return [
        {
            "event_id": f"e{n}",
            "type": "order_completed",
            "order_id": f"o{n}",
            "customer_id": f"{rng.randrange(customers):05d}",
            "amount": f"{Decimal(rng.randrange(100, 300_000)) / 100:.2f}",
            "currency": "TWD",
            "occurred_at": now - rng.randrange(1, days * 24) * 3_600_000,
        }
        for n in range(count)
    ]


def assert_export_is_the_oracle(
    export: str, events: Sequence[dict[str, Any]], *, scores: bool = True
) -> dict[str, dict[str, Any]]:
    """``rfm export`` JSONL equals the batch recomputation of ``events`` (rfm-classic, 5
    buckets): same customers, segments, orders and money (and R/F/M scores). Returns the rows."""
    expected = recompute(list(events), load_scheme("rfm-classic", 5))
    rows = {r["customer_id"]: r for r in map(orjson.loads, export.splitlines())}
    assert set(rows) == set(expected)
    for cid, want in expected.items():
        got = rows[cid]
        assert (got["segment"], got["metrics"]["orders"]) == (want.segment, want.orders), cid
        assert Decimal(got["metrics"]["monetary"]) == want.monetary, cid
        if scores:
            s = got["scores"]
            assert (s["r"], s["f"], s["m"]) == (
                want.scores["r"],
                want.scores["f"],
                want.scores["m"],
            ), cid
    return rows


def assert_change_chains(messages: Iterable[Message], rows: dict[str, dict[str, Any]]) -> None:
    """Per customer, seq runs 1..n with no gap, each change starts where the previous ended,
    a re-sent change is byte-identical, and the last lands on the exported segment."""
    chains: dict[str, dict[int, bytes]] = defaultdict(dict)
    for message in messages:
        change = message.json()
        known = chains[change["customer_id"]].setdefault(change["seq"], message.value)
        assert known == message.value
    for cid, chain in chains.items():
        assert sorted(chain) == list(range(1, len(chain) + 1)), cid
        docs = [orjson.loads(chain[seq]) for seq in sorted(chain)]
        assert docs[0]["from"] is None, cid
        for before, after in itertools.pairwise(docs):
            assert after["from"] == before["to"], cid
        assert docs[-1]["to"] == rows[cid]["segment"], cid


async def index_entries(store: Any, dim: str) -> list[tuple[bytes, float]]:
    """Every entry of one score index (unsharded), in index order, across its buckets."""
    k, r = store.keys, store.redis
    out: list[tuple[bytes, float]] = []
    for b in await r.zrange(k.index_directory(dim), 0, -1):
        out += await r.zrange(k.index_bucket(dim, b), 0, -1, withscores=True)
    return out


def group_drained(settings: Settings, group_id: str, *topics: str) -> bool:
    """Consumer group ``group_id`` has committed every record now in ``topics``."""

    async def run() -> bool:
        admin = AIOKafkaAdminClient(**client_options(settings))
        consumer = AIOKafkaConsumer(**client_options(settings), group_id=None)
        await admin.start()
        await consumer.start()
        try:
            parts = [
                TopicPartition(d["topic"], p["partition"])
                for d in await admin.describe_topics(list(topics))
                for p in d.get("partitions", [])
            ]
            committed = await admin.list_consumer_group_offsets(group_id)
            ends = await consumer.end_offsets(parts)
            return all(
                end == 0 or (tp in committed and committed[tp].offset >= end)
                for tp, end in ends.items()
            )
        finally:
            await admin.close()
            await _stop(consumer)

    return asyncio.run(asyncio.wait_for(run(), 30))
