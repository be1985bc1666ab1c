"""The batching producer behind the worker's change and dead-letter output, `rfm import` and
`rfm refresh`: keys partitioned as every Kafka client does, sends awaited as a batch."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner

from stream.config import Settings
from stream.core.partitioning import partition_for
from stream.kafka.options import client_options


class KeyPartitioner:
    """Kafka's default partitioner, exactly as aiokafka's ``send`` applies it, once per key.

    A customer's events must stay in one partition, in order, whichever client produced
    them: a key goes where aiokafka's ``DefaultPartitioner`` and the Java client send it
    (``stream.core.partitioning``, compiled with the core), and each key's partition is
    remembered. Records without a key go to a random partition, as with ``send``.
    """

    def __init__(self, partitions: Iterable[int], remember: int = 1_000_000) -> None:
        self.partitions = sorted(partitions)
        if not self.partitions:
            raise ValueError("a topic has at least one partition")
        self._partitioner = DefaultPartitioner()
        self._remember = remember
        self._known: dict[bytes, int] = {}

    def __call__(self, key: bytes | None) -> int:
        if key is None:
            return int(self._partitioner(None, self.partitions, self.partitions))
        partition = self._known.get(key)
        if partition is None:
            if len(self._known) >= self._remember:
                self._known.clear()  # bounded memory for very many customers
            partition = self.partitions[partition_for(key, len(self.partitions))]
            self._known[key] = partition
        return partition


class BatchSender:
    """Appends records to one aiokafka batch per (topic, partition) instead of one ``send``
    and one future each, which costs several times more per record.

    Order per key holds: a key always maps to the same partition, its batches are submitted
    in order, and aiokafka sends one batch per partition at a time (a retried batch goes
    before the next). ``send_batch`` waits while a partition already has a batch queued, so
    memory stays bounded.
    """

    def __init__(
        self,
        producer: AIOKafkaProducer,
        partitioners: dict[str, KeyPartitioner],
        remember: int = 100_000,
    ):
        self.producer = producer
        self.partitioners = partitioners
        self.remember = remember
        self._open: dict[tuple[str, int], Any] = {}
        self._pending: list[asyncio.Future[Any]] = []

    async def add(self, topic: str, key: bytes | None, value: bytes) -> None:
        partition_of = self.partitioners.get(topic)
        if partition_of is None:
            partitions = await self.producer.partitions_for(topic)
            partition_of = KeyPartitioner(partitions, self.remember)
            self.partitioners[topic] = partition_of
        where = (topic, partition_of(key))
        batch = self._open.get(where)
        if batch is None:
            batch = self._open[where] = self.producer.create_batch()
        if batch.append(key=key, value=value, timestamp=None) is None:
            self._pending.append(
                await self.producer.send_batch(batch, *where[:1], partition=where[1])
            )
            batch = self._open[where] = self.producer.create_batch()
            # an empty batch always takes its first record; the broker judges its size
            batch.append(key=key, value=value, timestamp=None)

    def raise_rejected(self) -> None:
        """Forget settled batches; raise the error of one the broker rejected."""
        rejected: BaseException | None = None
        still = []
        for future in self._pending:
            if not future.done():
                still.append(future)
            elif (error := future.exception()) is not None and rejected is None:
                rejected = error  # every settled error is retrieved; the first one is raised
        self._pending = still
        if rejected is not None:
            raise rejected

    async def flush(self) -> None:
        """Send what is open and return once the broker acknowledged everything."""
        for (topic, partition), batch in self._open.items():
            if batch.record_count():
                self._pending.append(
                    await self.producer.send_batch(batch, topic, partition=partition)
                )
        self._open.clear()
        if self._pending:
            await asyncio.wait(self._pending)
        self.raise_rejected()


class KafkaPublisher:
    """aiokafka producer that returns only once every record is acknowledged."""

    def __init__(self, settings: Settings, **overrides: Any) -> None:
        opts = {"acks": "all", "linger_ms": 5, "max_batch_size": 256 * 1024, **overrides}
        self.producer = AIOKafkaProducer(**client_options(settings), **opts)
        self.partitioners: dict[str, KeyPartitioner] = {}

    async def start(self) -> None:
        await self.producer.start()

    async def stop(self) -> None:
        await self.producer.stop()

    def sender(self, remember: int = 100_000) -> BatchSender:
        """``remember``: keys whose partition is cached (a long-lived worker keeps it small;
        an import of a whole history may want more)."""
        return BatchSender(self.producer, self.partitioners, remember)

    async def publish(self, messages: Sequence[tuple[str, bytes | None, bytes]]) -> None:
        sender = self.sender()
        for topic, key, value in messages:
            await sender.add(topic, key, value)
        await sender.flush()

    async def __aenter__(self) -> KafkaPublisher:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
