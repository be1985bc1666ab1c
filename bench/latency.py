"""Latency from an order being produced to its segment change being readable downstream.

Orders go out at a fixed rate, each for a brand-new customer, so every one of them causes
exactly one change (the first assignment). An order's ``occurred_at`` is the instant it is
handed to the producer (the bench also keeps that instant per customer at full precision);
the latency is the instant a consumer of the changes topic holds the customer's change minus
that. So it covers producer batching, the broker twice, the worker's batching and Redis
commit, and a downstream consumer's fetch: what a campaign tool would see.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field

import numpy as np
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from bench.workload import order_event
from stream.config import Settings
from stream.kafka import client_options
from stream.kafka.topics import Topics

TICK_S = 0.005
# The below-capacity probe's rate, as a share of the worker's measured throughput.
CALM_SHARE = 0.6
DRAIN_TIMEOUT_S = 30.0


@dataclass
class Latency:
    target_rate: float
    rate: float  # achieved produce rate
    sent: int
    samples_ms: list[float] = field(default_factory=list)

    @property
    def missing(self) -> int:
        return self.sent - len(self.samples_ms)

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.samples_ms, q)) if self.samples_ms else float("nan")


async def _stop(consumer: AIOKafkaConsumer) -> None:
    # aiokafka 0.14 may re-raise its group-less helper task's cancellation from stop().
    with contextlib.suppress(asyncio.CancelledError):
        await consumer.stop()


async def measure(settings: Settings, *, rate: float, seconds: float, tag: str) -> Latency:
    """Send ``rate`` orders/s for ``seconds`` to a running worker; collect every change."""
    topics = Topics(settings.topic_prefix)
    consumer = AIOKafkaConsumer(
        topics.changes,
        **client_options(settings),
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="latest",
        fetch_max_wait_ms=5,
    )
    producer = AIOKafkaProducer(**client_options(settings), acks="all", linger_ms=1)
    await consumer.start()
    await producer.start()
    sent_at: dict[str, int] = {}  # customer id -> time.time_ns() when handed to the producer
    samples: list[float] = []
    receiver: asyncio.Task[None] | None = None
    try:
        # Pin every changes partition to its current end before the first order goes out.
        while not consumer.assignment():
            await asyncio.sleep(0.05)
        for tp in consumer.assignment():
            await consumer.position(tp)

        async def receive(stop: asyncio.Event) -> None:
            while not stop.is_set():
                batch = await consumer.getmany(timeout_ms=10)
                now = time.time_ns()
                for messages in batch.values():
                    for m in messages:
                        cid = orjson.loads(m.value)["customer_id"]
                        at = sent_at.pop(cid, None)
                        if at is not None:
                            samples.append((now - at) / 1e6)

        done = asyncio.Event()
        receiver = asyncio.create_task(receive(done))
        acks = []
        total = int(rate * seconds)
        started = time.perf_counter()
        n = 0
        while n < total:
            due = min(total, int((time.perf_counter() - started) * rate) + 1)
            while n < due:
                cid = f"{tag}-{n}"
                now_ns = time.time_ns()
                sent_at[cid] = now_ns
                value = order_event(
                    cid,
                    cid,
                    10_000 + n,
                    now_ns // 1_000_000,
                    currency=settings.store.currency,
                    decimals=settings.store.currency_decimals,
                )
                acks.append(await producer.send(topics.orders, value, key=cid.encode()))
                n += 1
            await asyncio.sleep(TICK_S)
        achieved = n / max(time.perf_counter() - started, 1e-9)
        await asyncio.gather(*acks)
        deadline = time.monotonic() + DRAIN_TIMEOUT_S
        while sent_at and time.monotonic() < deadline and not receiver.done():
            await asyncio.sleep(0.05)
        done.set()
        await receiver
        return Latency(rate, achieved, total, samples)
    finally:
        if receiver is not None and not receiver.done():
            receiver.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await receiver
        await producer.stop()
        await _stop(consumer)
