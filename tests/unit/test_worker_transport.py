"""The worker's Faust consumer: its Kafka fetch wait (Faust alone would use 1,500 ms), its
hand-off of records to the streams, which skips mode's four tasks only when nothing blocks,
its poll while a full stream buffer holds a partition back (Faust alone waits 1 s), and the
agent's events taken from its stream's queue with the two duties of Faust's stream kept."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from typing import Any

import pytest
from faust.agents.actor import AwaitableActor
from faust.events import Event
from faust.types import TP
from faust.types.tuples import ConsumerMessage

from stream.config import settings_from
from stream.worker.app import TICK_S, build_app
from stream.worker.faust_patches import (
    BUFFERED_POLL_S,
    FETCH_MAX_WAIT_MS,
    AgentEvents,
    FastConsumer,
)


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


HELD, OTHER = TP("rfm.orders", 0), TP("rfm.interactions", 0)


def _polls(consumer: Any) -> list[tuple[set[TP], float]]:
    """Record what the consumer asks its Kafka thread for; the thread is not started here
    (the poll policy above it is under test), so every poll returns no records."""
    polls: list[tuple[set[TP], float]] = []

    async def getmany(active_partitions: Any, timeout: float) -> dict[TP, list[Any]]:
        polls.append((set(active_partitions), timeout))
        return {}

    consumer._getmany = getmany
    return polls


def test_without_a_full_buffer_the_poll_keeps_fausts_timeout() -> None:
    async def scenario() -> list[tuple[set[TP], float]]:
        consumer = await _consumer()
        polls = _polls(consumer)
        consumer._active_partitions = {HELD, OTHER}
        await consumer._wait_next_records(1.0)
        return polls

    assert asyncio.run(scenario()) == [({HELD, OTHER}, 1.0)]


def test_a_partition_held_back_by_its_full_buffer_is_polled_for_again_soon() -> None:
    async def scenario() -> list[tuple[set[TP], float]]:
        consumer = await _consumer()
        polls = _polls(consumer)
        consumer._active_partitions = {HELD, OTHER}
        consumer.on_buffer_full(HELD)  # its stream buffer is full: Faust stops fetching it
        await consumer._wait_next_records(1.0)
        return polls

    assert asyncio.run(scenario()) == [({OTHER}, BUFFERED_POLL_S)]


def test_with_every_partition_held_back_the_poll_waits_for_one_to_drain() -> None:
    async def scenario() -> tuple[Any, list[tuple[set[TP], float]]]:
        consumer = await _consumer()
        polls = _polls(consumer)
        consumer._active_partitions = {HELD}
        consumer.on_buffer_full(HELD)
        # the stream drains its buffer a few polls later (Faust alone sleeps 1 s here and
        # returns no partitions at all, whatever happens meanwhile)
        asyncio.get_running_loop().call_later(3 * BUFFERED_POLL_S, consumer.on_buffer_drop, HELD)
        return await asyncio.wait_for(consumer._wait_next_records(1.0), 5), polls

    (records, active), polls = asyncio.run(scenario())
    assert (records, active) == ({}, {HELD})
    assert polls == [({HELD}, BUFFERED_POLL_S)]


async def _agent_events(wait_empty: bool = False) -> tuple[Any, AgentEvents]:
    app = build_app(settings_from({}, {}))
    app.conf.stream_wait_empty = wait_empty
    topic = app.topic("rfm.orders", key_serializer="raw", value_serializer="raw")
    app.topics.add(topic)  # subscribed, as the agent's source is: its messages are acked
    await app.topics._update_indices()  # what the conductor does on a subscription change
    return app, AgentEvents(app.stream(topic))


def _event(app: Any, offset: int, generation: int | None = None) -> Any:
    generation = app.consumer_generation_id if generation is None else generation
    message = ConsumerMessage(  # what the consumer makes of a record
        "rfm.orders", 0, offset, 0.0, 0, {}, b"c1", b"{}", None, generation_id=generation
    )
    return Event(app, b"c1", b"{}", {}, message)


def test_an_agent_event_is_acked_and_tracked_only_where_faust_waits_for_it() -> None:
    async def scenario(wait_empty: bool) -> tuple[bool, bool, bool]:
        app, events = await _agent_events(wait_empty)
        app.flow_control.resume()  # as a worker does once its partitions are assigned
        events.queue.put_nowait(_event(app, 5))
        event = await asyncio.wait_for(anext(events), 5)
        tracked = event.message in app.consumer.unacked
        events.ack(event)
        return tracked, event.message.acked, event.message in app.consumer.unacked

    assert build_app(settings_from({}, {})).conf.stream_wait_empty is False  # the worker's
    assert asyncio.run(scenario(False)) == (False, True, False)
    assert asyncio.run(scenario(True)) == (True, True, False)  # as Faust's stream tracks


def test_events_fetched_before_a_rebalance_are_acked_and_dropped() -> None:
    """(Faust's stream drops them the same way; so are events while the flow is stopped.)"""

    async def scenario() -> tuple[int, bool]:
        app, events = await _agent_events()
        app.flow_control.resume()
        stale = _event(app, 5, generation=app.consumer_generation_id - 1)
        events.queue.put_nowait(stale)
        events.queue.put_nowait(_event(app, 6))
        event = await asyncio.wait_for(anext(events), 5)
        return event.message.offset, stale.message.acked

    assert asyncio.run(scenario()) == (6, True)


def test_an_error_faust_throws_into_the_channel_reaches_the_agent() -> None:
    async def scenario() -> None:
        _, events = await _agent_events()
        await events.queue.throw(ValueError("decode failed"))
        await asyncio.wait_for(anext(events), 5)

    with pytest.raises(ValueError, match="decode failed"):
        asyncio.run(scenario())


def test_faust_stopping_the_agent_ends_its_events_without_an_error() -> None:
    """Faust stops an agent by throwing StopAsyncIteration into its stream's channel
    (``Actor.cancel``): the agent's ``async for`` over its events ends there instead of the
    agent crashing. An event still queued is left unacked, for the next owner."""

    async def scenario() -> tuple[list[int], bool]:
        app = build_app(settings_from({}, {}))
        topic = app.topic("rfm.orders", key_serializer="raw", value_serializer="raw")
        app.topics.add(topic)
        await app.topics._update_indices()
        stream = app.stream(topic)
        events = AgentEvents(stream)
        app.flow_control.resume()
        queued = _event(app, 5)
        events.queue.put_nowait(queued)
        AwaitableActor(app.agents["score"], stream, None).cancel()  # what stopping the agent does
        seen = []
        async with asyncio.timeout(5):
            async for event in events:
                seen.append(event.message.offset)
        return seen, queued.message.acked

    assert asyncio.run(scenario()) == ([], False)


def test_periodic_rounds_longer_than_the_tick_are_spaced_not_reported_as_overlapping(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A round of periodic work may take longer than TICK_S (a large refresh, a refit): the
    next starts TICK_S after it ends, without mode's `Timer ... is overlapping` warning."""

    async def scenario() -> list[float]:
        app = build_app(settings_from({}, {}))
        starts: list[float] = []

        async def slow_round() -> None:
            starts.append(asyncio.get_running_loop().time())
            await asyncio.sleep(TICK_S + 0.2)  # longer than the tick

        app.rfm_runtime.tick = slow_round  # type: ignore[attr-defined]
        [periodic] = app._app_tasks
        task = asyncio.ensure_future(periodic())
        while len(starts) < 2:
            await asyncio.sleep(0.05)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return starts

    with caplog.at_level(logging.DEBUG):
        starts = asyncio.run(scenario())
    assert "overlapping" not in caplog.text
    gaps = [later - earlier for earlier, later in itertools.pairwise(starts)]
    assert gaps and all(gap >= 2 * TICK_S + 0.15 for gap in gaps), gaps
