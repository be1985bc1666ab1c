"""The durable producer behind every 2xx of ``rfm collect``.

A request is answered only once Kafka acknowledged every one of its events (acks=all on an
idempotent producer, keys partitioned as every producer of ours does), and within a bound:
a storefront stops waiting after 5 s and sends again, so past ``timeout_s`` the request is
refused (``Unavailable``, a 503) rather than left hanging.

A refused request may still reach Kafka later (the producer keeps its batches and retries
them in order when the broker is back); the sender's retry carries the same event ids, and
the worker drops the second copy. What can never happen is a 2xx for an event Kafka does
not hold.

A request of a few events (a webhook) sends each record on its own: aiokafka then groups
the records of concurrent requests into one produce request per partition, where a batch of
its own per request would wait for the partition's previous batch. A large request (a batch
of ``/v1/events``) appends to batches of its own, which costs far less per record.

Connecting (topics ensured, producer id obtained) runs in the background from ``start``
until it succeeds, so the service comes up and answers 503 while Kafka is still down.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence

import orjson
from aiokafka.errors import KafkaError

from stream.collect.outgoing import Outgoing
from stream.config import Settings
from stream.kafka import KafkaPublisher, ensure_topics
from stream.kafka.topics import Topics

log = logging.getLogger("rfm.collect")

SMALL_REQUEST = 4  # events at most sent record by record; more go out as batches
RECONNECT_DELAYS = (0.5, 1.0, 2.0, 5.0)  # seconds between attempts; the last one repeats
STOP_TIMEOUT = 10.0  # a producer being replaced flushes for this long at most


class Unavailable(Exception):
    """Kafka did not acknowledge the request's events in time, or refused them; the message
    names the broker's error, never the events."""


class DurableProducer:
    def __init__(self, settings: Settings, *, timeout_s: float) -> None:
        self.settings = settings
        self.timeout_s = timeout_s
        topics = Topics(settings.topic_prefix)
        self.topics = {
            "orders": topics.orders,
            "interactions": topics.interactions,
            "erasure": topics.erasure,
        }
        self._connecting: asyncio.Task[KafkaPublisher] | None = None
        self._retiring: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        """Begin connecting; ``send_all`` waits for it (within its bound)."""
        if self._connecting is None:
            self._connecting = asyncio.create_task(self._connect())

    async def stop(self) -> None:
        task, self._connecting = self._connecting, None
        if task is not None:
            if task.done() and not task.cancelled() and task.exception() is None:
                await self._retire(task.result())
            else:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._retiring:
            await asyncio.wait(self._retiring)

    @property
    def connected(self) -> bool:
        task = self._connecting
        return task is not None and task.done() and not task.cancelled()

    async def send_all(self, events: Sequence[Outgoing]) -> None:
        """Return once Kafka acknowledged every event; raise ``Unavailable`` otherwise."""
        if not events:
            return
        messages = [
            (self.topics[e.kind], e.customer_id.encode("utf-8"), orjson.dumps(e.doc))
            for e in events
        ]
        task = self._connecting
        if task is None:
            raise Unavailable("the producer is not running")
        publisher: KafkaPublisher | None = None
        try:
            async with asyncio.timeout(self.timeout_s):
                publisher = await asyncio.shield(task)
                if len(messages) <= SMALL_REQUEST:
                    await _send_each(publisher, messages)
                else:
                    await publisher.publish(messages)
        except TimeoutError:
            raise Unavailable(
                f"Kafka ({self.settings.kafka_bootstrap}) did not acknowledge within "
                f"{self.timeout_s:g}s"
            ) from None
        except KafkaError as exc:
            if publisher is not None:
                self._replace(task)
            raise Unavailable(f"Kafka refused the events: {type(exc).__name__}") from None

    async def probe(self, timeout: float) -> str | None:
        """None when the broker answers a metadata request within ``timeout``, else why not."""
        task = self._connecting
        if task is None or not task.done():
            return "connecting"
        try:
            await asyncio.wait_for(task.result().producer.client.fetch_all_metadata(), timeout)
        except (KafkaError, OSError, TimeoutError) as exc:
            return type(exc).__name__
        return None

    async def _connect(self) -> KafkaPublisher:
        attempt = 0
        while True:
            publisher = KafkaPublisher(self.settings, enable_idempotence=True, linger_ms=0)
            try:
                await ensure_topics(self.settings)
                await publisher.start()
            except Exception as exc:  # any failure to connect is retried
                with contextlib.suppress(Exception):
                    await publisher.stop()
                delay = RECONNECT_DELAYS[min(attempt, len(RECONNECT_DELAYS) - 1)]
                log.warning(
                    "Kafka (RFM_KAFKA_BOOTSTRAP %s) not ready: %s; retrying in %gs",
                    self.settings.kafka_bootstrap,
                    (str(exc).splitlines() or [type(exc).__name__])[0][:200],
                    delay,
                )
                attempt += 1
                await asyncio.sleep(delay)
                continue
            if attempt:
                log.info("Kafka connected after %d failed attempts", attempt)
            return publisher

    def _replace(self, failed: asyncio.Task[KafkaPublisher]) -> None:
        """A producer whose sends the broker refused is replaced by a fresh one (a new
        producer id), once, however many requests saw the refusal."""
        if self._connecting is not failed:
            return
        self._connecting = asyncio.create_task(self._connect())
        log.warning("Kafka refused a request's events: reconnecting with a new producer")
        retiring = asyncio.create_task(self._retire(failed.result()))
        self._retiring.add(retiring)
        retiring.add_done_callback(self._retiring.discard)

    async def _retire(self, publisher: KafkaPublisher) -> None:
        try:
            await asyncio.wait_for(publisher.stop(), STOP_TIMEOUT)
        except Exception as exc:  # it is being dropped either way
            log.warning("closing the previous Kafka producer: %s", type(exc).__name__)


async def _send_each(
    publisher: KafkaPublisher, messages: Sequence[tuple[str, bytes, bytes]]
) -> None:
    """One ``send`` per record (partitioned by key, as the batches are), awaited together;
    raises the first rejection once every record settled, so none goes unretrieved."""
    producer = publisher.producer
    acks = [await producer.send(topic, value, key=key) for topic, key, value in messages]
    await asyncio.wait(acks)
    for error in [ack.exception() for ack in acks]:
        if error is not None:
            raise error
