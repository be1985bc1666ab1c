"""The worker's Faust adapter keeps its Kafka fetch wait (Faust alone would use 1,500 ms)."""

from __future__ import annotations

import asyncio

from stream.config import settings_from
from stream.worker import FETCH_MAX_WAIT_MS, build_app


def test_the_worker_consumer_fetches_with_our_short_wait() -> None:
    async def created() -> int:
        app = build_app(settings_from({}, {}))
        thread = app.consumer._new_consumer_thread()  # type: ignore[attr-defined]
        consumer = thread._create_worker_consumer(app.transport)
        wait: int = consumer._fetch_max_wait_ms
        await consumer.stop()  # never started: releases nothing but keeps aiokafka quiet
        return wait

    assert FETCH_MAX_WAIT_MS < 1500
    assert asyncio.run(created()) == FETCH_MAX_WAIT_MS
