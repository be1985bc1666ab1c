"""Topic administration: create our topics before anything consumes them, and delete a
throw-away namespace's topics."""

from __future__ import annotations

import asyncio

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, TopicAlreadyExistsError, for_code

from stream.config import Settings
from stream.kafka.options import client_options
from stream.kafka.topics import Topics


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
