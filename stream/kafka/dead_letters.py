"""Reading the dead-letter topic to its current end, and producing replays (`rfm dlq`).

The read is a plain assignment without a consumer group: it never commits an offset, never
joins or disturbs a group, and stops at the end offsets it saw when it began (records
dead-lettered meanwhile wait for the next look), so it never hangs on a quiet topic."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from stream.config import Settings
from stream.deadletters import Letter, Replay, read_letter
from stream.kafka.options import client_options

STALL = 30.0  # seconds without progress before a read gives up, naming the partitions


class ReadStalled(RuntimeError):
    """The broker stopped handing out records before the end offsets were reached."""


async def _stop(consumer: AIOKafkaConsumer) -> None:
    # aiokafka 0.14 may re-raise its group-less helper task's cancellation from stop()
    with contextlib.suppress(asyncio.CancelledError):
        await consumer.stop()


async def _partitions(settings: Settings, topic: str) -> list[int]:
    """The topic's partitions; none when it does not exist (yet)."""
    admin = AIOKafkaAdminClient(**client_options(settings))
    await admin.start()
    try:
        if topic not in await admin.list_topics():
            return []
        [described] = await admin.describe_topics([topic])
        return sorted(p["partition"] for p in described.get("partitions", []))
    finally:
        await admin.close()


async def read_letters(
    settings: Settings, topic: str, *, since_ms: int | None = None
) -> AsyncIterator[Letter]:
    """Every record of ``topic`` up to its end offsets at the start, partition by partition
    as fetched; with ``since_ms``, each partition from its first record at or after then
    (the broker's time index), so an old, long topic is not read from its beginning.
    Nothing at all when the topic does not exist yet."""
    consumer = AIOKafkaConsumer(
        **client_options(settings),
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        parts = [TopicPartition(topic, p) for p in await _partitions(settings, topic)]
        if not parts:
            return
        consumer.assign(parts)
        ends = await consumer.end_offsets(parts)
        if since_ms is None:
            await consumer.seek_to_beginning(*parts)
        else:
            found = await consumer.offsets_for_times({tp: since_ms for tp in parts})
            for tp in parts:
                at = found.get(tp)
                consumer.seek(tp, ends[tp] if at is None else at.offset)
        remaining = {tp for tp in parts if await consumer.position(tp) < ends[tp]}
        loop = asyncio.get_running_loop()
        give_up = loop.time() + STALL
        while remaining:
            batch = await consumer.getmany(*remaining, timeout_ms=500, max_records=2000)
            for tp, records in batch.items():
                for r in records:
                    if r.offset < ends[tp]:
                        yield read_letter(tp.partition, r.offset, r.timestamp, r.key, r.value)
            if batch:
                give_up = loop.time() + STALL
            for tp in list(remaining):
                if await consumer.position(tp) >= ends[tp]:
                    remaining.discard(tp)
            if remaining and loop.time() > give_up:
                where = ", ".join(f"{tp.topic}[{tp.partition}]" for tp in sorted(remaining))
                raise ReadStalled(f"no records from {where} for {STALL:.0f}s before its end")
    finally:
        await _stop(consumer)


async def produce_replays(settings: Settings, replays: Sequence[Replay]) -> list[tuple[int, int]]:
    """Produce each replay to its topic under its key (the partition every producer picks
    for that key), acknowledged by all in-sync replicas; (partition, offset) of each."""
    producer = AIOKafkaProducer(**client_options(settings), acks="all", enable_idempotence=True)
    await producer.start()
    try:
        sent = [await producer.send(r.topic, r.value, key=r.key) for r in replays]
        return [(meta.partition, meta.offset) for meta in await asyncio.gather(*sent)]
    finally:
        await producer.stop()
