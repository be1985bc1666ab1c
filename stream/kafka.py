"""Plain aiokafka plumbing: topic creation, connection settings, and the batching producer
behind the worker's change and dead-letter output, `rfm import` and `rfm refresh`."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, TopicAlreadyExistsError, for_code
from aiokafka.partitioner import DefaultPartitioner

from stream.config import Settings
from stream.partitioning import partition_for
from stream.topics import Topics


def client_options(settings: Settings) -> dict[str, Any]:
    """Connection options shared by every aiokafka client we build (SASL/TLS included)."""
    opts: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap,
        "security_protocol": settings.kafka_security_protocol,
    }
    if settings.kafka_sasl_mechanism:
        opts["sasl_mechanism"] = settings.kafka_sasl_mechanism
        opts["sasl_plain_username"] = settings.kafka_sasl_username
        opts["sasl_plain_password"] = settings.kafka_sasl_password
    if settings.kafka_security_protocol in ("SSL", "SASL_SSL"):
        from aiokafka.helpers import create_ssl_context

        opts["ssl_context"] = create_ssl_context(cafile=settings.kafka_ssl_cafile)
    return opts


class TopicsUnavailable(KafkaConnectionError):
    """Our topics did not show up in the broker's metadata in time: creation was refused, or
    the broker never finished it. A ``KafkaConnectionError``, so every caller that reports an
    unusable Kafka in one line (the CLI, the benchmark) reports this one the same way."""


async def ensure_topics(settings: Settings, *, timeout: float = 10.0) -> None:
    """Create our topics if missing; keyed by customer, so partitions bound parallelism.

    Faust's leader-election topic is created here too (one partition), because the worker runs
    with topic declaration off: topic layout is ours to decide, not the framework's.

    Returns once the broker's metadata lists every topic; raises ``TopicsUnavailable``, naming
    the missing topics, the broker and why it refused them, if they are not all there within
    ``timeout`` seconds.
    """
    wanted = {t: settings.partitions for t in Topics(settings.topic_prefix).all}
    wanted[f"{settings.group_id}-__assignor-__leader"] = 1
    admin = AIOKafkaAdminClient(**client_options(settings))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [NewTopic(t, n, 1) for t, n in wanted.items() if t not in existing]
        refused: dict[str, str] = {}
        if missing:
            response = await admin.create_topics(missing)
            for topic, code, *detail in response.topic_errors:
                if code and code != TopicAlreadyExistsError.errno:  # someone else created it
                    refused[topic] = (detail and detail[0]) or for_code(code).__name__
        # wait until metadata shows them, so consumers never race topic creation
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            absent = sorted(set(wanted) - set(await admin.list_topics()))
            if not absent:
                return
            if loop.time() >= deadline:
                break
            await asyncio.sleep(0.1)
    finally:
        await admin.close()
    why = "; ".join(f"{t}: {refused[t]}" for t in absent if t in refused)
    raise TopicsUnavailable(
        f"topic{'s' if len(absent) > 1 else ''} {', '.join(absent)} did not appear on "
        f"{settings.kafka_bootstrap} (RFM_KAFKA_BOOTSTRAP) within {timeout:g}s"
        + (f"; the broker refused: {why}" if why else "")
    )


async def delete_topics(settings: Settings, *prefixes: str) -> int:
    """Delete every topic whose name starts with one of ``prefixes``; returns how many.

    For throw-away namespaces (tests, benchmarks): each partition left behind costs the
    broker heap (metrics, index handles) for good, and a few thousand of them pushed a 512 MiB
    broker into back-to-back full collections that stalled every produce for a second.
    """
    admin = AIOKafkaAdminClient(**client_options(settings))
    await admin.start()
    try:
        ours = [t for t in await admin.list_topics() if t.startswith(prefixes)]
        for start in range(0, len(ours), 50):
            await admin.delete_topics(ours[start : start + 50])
        return len(ours)
    finally:
        await admin.close()


class KeyPartitioner:
    """Kafka's default partitioner, exactly as aiokafka's ``send`` applies it, once per key.

    A customer's events must stay in one partition, in order, whichever client produced
    them: a key goes where aiokafka's ``DefaultPartitioner`` and the Java client send it
    (``stream.partitioning``, compiled with the core), and each key's partition is
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
