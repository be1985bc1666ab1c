"""End-to-end events/s: from the first order produced to the consumer saying all are applied.

"Applied" is the ``accepted`` counter in ``<prefix>stats``, which the commit script raises in
the same atomic step as the customer's state, indexes and outbox entry, so the clock stops
only once every event's effect is in Redis. The same procedure drives the Faust worker and
the raw baseline (``bench.baseline``): the two figures differ only in what consumes.
Producing runs concurrently with consuming, as it does in production; the orders are
encoded before the clock starts.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from bench import BenchError
from stream.config import Settings
from stream.kafka import KafkaPublisher
from stream.kafka.topics import Topics
from stream.process import Child, Children
from stream.store.keys import Keys
from stream.store.redis_store import connect

POLL_S = 0.02
CHUNK = 5000  # records per acknowledged publish, as `rfm import` sends them
READY_TIMEOUT_S = 120.0


@dataclass
class Throughput:
    events: int
    seconds: float  # first produce -> the last event applied
    produce_seconds: float  # first produce -> the last record acknowledged by the broker
    timeline: list[tuple[float, int]] = field(default_factory=list)  # (s, events applied)

    @property
    def events_per_s(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0


async def _accepted(redis: Any, keys: Keys) -> int:
    return int(await redis.hget(keys.stats(), "accepted") or 0)


async def wait_ready(settings: Settings, child: Child | Children, publisher: KafkaPublisher) -> int:
    """Block until the consumer applies events; returns its ``accepted`` counter then.

    The probes are erasures of customers that never existed: counted as accepted, they leave
    no state behind, so the population measured later is exactly the workload's.
    """
    keys = Keys(settings.key_prefix)
    topic = Topics(settings.topic_prefix).erasure
    probes = max(8, settings.partitions * 2)
    redis = connect(settings.redis_url)
    try:
        start = await _accepted(redis, keys)
        await publisher.publish(
            [
                (topic, f"warm-{n}".encode(), orjson.dumps({"customer_id": f"warm-{n}"}))
                for n in range(probes)
            ]
        )
        deadline = time.monotonic() + READY_TIMEOUT_S
        while (seen := await _accepted(redis, keys)) < start + probes:
            if not child.alive:
                raise BenchError(f"{child.name} exited before it was ready\n{child.tail()}")
            if time.monotonic() > deadline:
                raise BenchError(
                    f"{child.name} applied no warm-up event in {READY_TIMEOUT_S:.0f}s"
                    f"\n{child.tail()}"
                )
            await asyncio.sleep(0.1)
        return seen
    finally:
        await redis.aclose()


async def measure(
    settings: Settings,
    events: Sequence[tuple[bytes, bytes]],
    child: Child | Children,
    *,
    timeout_s: float,
    on_ready: Callable[[], object] = lambda: None,
) -> Throughput:
    """Produce ``events`` to the orders topic and time them until ``child`` applied them.

    ``on_ready`` runs once the consumer is up, just before the clock starts (a profiler).
    """
    keys = Keys(settings.key_prefix)
    topic = Topics(settings.topic_prefix).orders
    redis = connect(settings.redis_url)
    try:
        async with KafkaPublisher(settings) as publisher:
            base = await wait_ready(settings, child, publisher)
            on_ready()
            produced = 0.0
            started = time.perf_counter()

            async def produce() -> None:
                nonlocal produced
                for start in range(0, len(events), CHUNK):
                    chunk = events[start : start + CHUNK]
                    await publisher.publish([(topic, k, v) for k, v in chunk])
                produced = time.perf_counter() - started

            sender = asyncio.create_task(produce())
            timeline: list[tuple[float, int]] = []
            try:
                while True:
                    done = await _accepted(redis, keys) - base
                    elapsed = time.perf_counter() - started
                    timeline.append((elapsed, done))
                    if done >= len(events):
                        break
                    if sender.done() and sender.exception() is not None:
                        raise BenchError(f"producing failed: {sender.exception()!r}")
                    if not child.alive:
                        raise BenchError(f"{child.name} exited mid-run\n{child.tail()}")
                    if elapsed > timeout_s:
                        raise BenchError(
                            f"only {done} of {len(events)} events applied after {timeout_s:.0f}s"
                            f"\n{child.tail()}"
                        )
                    await asyncio.sleep(POLL_S)
                await sender
            finally:
                if not sender.done():
                    sender.cancel()
        return Throughput(len(events), timeline[-1][0], produced, timeline)
    finally:
        await redis.aclose()
