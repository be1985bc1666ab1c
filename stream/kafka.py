"""Plain aiokafka plumbing for everything that is not the Faust worker: topic creation,
the producer behind `rfm import` / `rfm refresh`, and connection settings in one place."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from stream.config import Settings
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


async def ensure_topics(settings: Settings) -> None:
    """Create our topics if missing; keyed by customer, so partitions bound parallelism.

    Faust's leader-election topic is created here too (one partition), because the worker runs
    with topic declaration off: topic layout is ours to decide, not the framework's.
    """
    wanted = {t: settings.partitions for t in Topics(settings.topic_prefix).all}
    wanted[f"{settings.group_id}-__assignor-__leader"] = 1
    admin = AIOKafkaAdminClient(**client_options(settings))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [NewTopic(t, n, 1) for t, n in wanted.items() if t not in existing]
        if missing:
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(missing)
        # wait until metadata shows them, so consumers never race topic creation
        for _ in range(100):
            if set(wanted) <= set(await admin.list_topics()):
                return
            await asyncio.sleep(0.1)
    finally:
        await admin.close()


class KafkaPublisher:
    """aiokafka producer that returns only once every record is acknowledged."""

    def __init__(self, settings: Settings, **overrides: Any) -> None:
        opts = {"acks": "all", "linger_ms": 5, "max_batch_size": 256 * 1024, **overrides}
        self.producer = AIOKafkaProducer(**client_options(settings), **opts)

    async def start(self) -> None:
        await self.producer.start()

    async def stop(self) -> None:
        await self.producer.stop()

    async def publish(self, messages: Sequence[tuple[str, bytes | None, bytes]]) -> None:
        futures = [await self.producer.send(t, value=v, key=k) for t, k, v in messages]
        if futures:
            await asyncio.gather(*futures)

    async def __aenter__(self) -> KafkaPublisher:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
