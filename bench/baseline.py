"""The raw baseline: what the hardware does with the same work and no stream framework.

A plain aiokafka consumer reads every input partition (no consumer group, no offset commits:
nothing a restart would need), hands batches of the same size the worker takes to the same
``Processor`` (decode, fold, one Lua commit per customer), whose changes go out through an
aiokafka producer. ``rfm bench`` runs it as a child process (``python -m bench.baseline``)
exactly like the worker, so both get a core of their own and are timed the same way; the gap
between the two figures is the price of Faust.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal

from aiokafka import AIOKafkaConsumer

from stream.config import Settings, load_settings
from stream.core.step import Record
from stream.kafka import KafkaPublisher, client_options, ensure_topics
from stream.kafka.topics import Topics
from stream.shell.wiring import build_processor
from stream.store.redis_store import open_store
from stream.worker.tuning import tune_gc, use_uvloop

# The worker's batch shape (stream.worker.app, not imported: that would import Faust), which
# tests/test_bench_smoke.py keeps equal: at most BATCH_MAX, else whatever has arrived
# (getmany returns at once when records are there; IDLE_WAIT_MS only bounds an idle wait).
BATCH_MAX = 2000
IDLE_WAIT_MS = 20


async def consume(settings: Settings, stop: asyncio.Event) -> None:
    await ensure_topics(settings)
    store = open_store(settings)
    consumer = AIOKafkaConsumer(
        *Topics(settings.topic_prefix).inputs,
        **client_options(settings),
        group_id=None,  # every partition is ours
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=BATCH_MAX,
    )
    async with KafkaPublisher(settings) as publisher:
        processor = build_processor(settings, publisher, store)
        await consumer.start()
        try:
            while not stop.is_set():
                batch = await consumer.getmany(timeout_ms=IDLE_WAIT_MS, max_records=BATCH_MAX)
                records = [
                    Record(tp.topic, tp.partition, m.offset, m.key, m.value, m.timestamp)
                    for tp, messages in batch.items()
                    for m in messages
                ]
                if records:
                    await processor.process(records)
        finally:
            # aiokafka 0.14 may re-raise the cancellation of its own group-less helper task
            # from stop(); it means nothing here, where we are shutting down anyway.
            with contextlib.suppress(asyncio.CancelledError):
                await consumer.stop()
            await store.redis.aclose()


async def _main() -> None:
    tune_gc()  # as the worker does, so the two differ only by Faust
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await consume(load_settings(), stop)


if __name__ == "__main__":
    use_uvloop()
    asyncio.run(_main())
