"""The worker's Faust consumer: its Kafka fetch wait (Faust alone would use 1,500 ms), and its
hand-off of records to the streams, which skips mode's four tasks only when nothing blocks."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from stream.config import settings_from
from stream.faust_consumer import FETCH_MAX_WAIT_MS, FastConsumer
from stream.worker import build_app


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


async def _consumer() -> Any:
    app = build_app(settings_from({}, {}))
    consumer = app.consumer
    assert isinstance(consumer, FastConsumer)
    return consumer


def test_a_delivery_that_does_not_block_wins_without_a_task() -> None:
    async def scenario() -> tuple[Any, int]:
        consumer = await _consumer()
        before = len(asyncio.all_tasks())

        async def deliver() -> str:
            return "delivered"

        tasks_seen = []

        async def observed() -> str:
            tasks_seen.append(len(asyncio.all_tasks()))
            return await deliver()

        result = await consumer.wait_first(observed(), consumer.suspend_flow.wait())
        return result, tasks_seen[0] - before

    result, extra_tasks = asyncio.run(scenario())
    assert (result.results, result.stopped) == (["delivered"], False)
    assert extra_tasks == 0


def test_a_blocked_delivery_still_yields_to_a_flow_suspension() -> None:
    async def scenario() -> tuple[Any, list[str]]:
        consumer = await _consumer()
        room = asyncio.Event()  # a full stream buffer: the delivery waits for room
        blocked = asyncio.Event()
        seen: list[str] = []

        async def deliver() -> str:
            seen.append("started")
            blocked.set()
            try:
                await room.wait()
                return "delivered"
            finally:
                seen.append("ended")

        waiting = asyncio.ensure_future(
            consumer.wait_first(deliver(), consumer.suspend_flow.wait())
        )
        await asyncio.wait_for(blocked.wait(), 5)  # the delivery now waits on the buffer
        consumer.suspend_flow.set()  # a rebalance
        return await asyncio.wait_for(waiting, 5), seen

    result, seen = asyncio.run(scenario())
    assert result.results == [True] and not result.stopped  # the suspension won ...
    assert seen == ["started", "ended"]  # ... and the blocked delivery was cancelled


def test_a_blocked_delivery_that_gets_room_is_finished_by_its_task() -> None:
    async def scenario() -> Any:
        consumer = await _consumer()
        room, blocked = asyncio.Event(), asyncio.Event()

        async def deliver() -> str:
            blocked.set()
            await room.wait()
            await asyncio.sleep(0)  # a bare yield (not a wait): one more step to resume
            return "delivered"

        waiting = asyncio.ensure_future(
            consumer.wait_first(deliver(), consumer.suspend_flow.wait())
        )
        await asyncio.wait_for(blocked.wait(), 5)
        room.set()
        return await asyncio.wait_for(waiting, 5)

    result = asyncio.run(scenario())
    assert result.results == ["delivered"] and not result.stopped


def test_a_failing_delivery_raises_as_before() -> None:
    async def scenario() -> None:
        consumer = await _consumer()

        async def deliver() -> None:
            raise ValueError("bad record")

        await consumer.wait_first(deliver(), consumer.suspend_flow.wait())

    with pytest.raises(ValueError, match="bad record"):
        asyncio.run(scenario())
