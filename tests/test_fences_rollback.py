"""The refresh lease, threshold and model publication and the outbox when Redis comes back
holding an older copy of itself while the processes that acted on the newer state run on.

Each test takes a copy of its namespace (``tests.rollback``) at the moment that matters,
lets the processes go on, puts the copy back and lets them go on again: a lease taken after
the copy, a refresh published and lost after a worker committed against it, a refresh
whose publication survived but whose re-scores did not, and outbox entries deleted after
publishing and brought back. The real store and processor on the real Redis; scores and
segments are compared with the batch oracle (``tests.oracle``) of the events the store
still holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import random
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis

from stream.clv import model as clv
from stream.clv.prediction import Model
from stream.config import Settings
from stream.core.scoring import Thresholds
from stream.core.step import Record
from stream.kafka.topics import Topics
from stream.schemes import load_scheme
from stream.shell.processor import Processor
from stream.shell.refit import refit
from stream.shell.refresh import LeaseBusy, refresh
from stream.shell.wiring import build_processor
from stream.store.redis_store import RedisStore, open_store
from stream.worker.app import Runtime
from stream.worker.replay import Replay
from tests.conftest import Isolated
from tests.oracle import recompute
from tests.rollback import Copy, OwnRedis, own_redis  # noqa: F401 (a fixture)
from tests.support import wait_for

pytestmark = pytest.mark.integration

DAY = 86_400_000
LEASE_MS = 300  # a refresh of a few dozen customers takes milliseconds
T0 = 1_790_000_000_000  # a fixed event time: the event clock scores everything


@dataclass
class Collector:
    messages: list[tuple[bytes | None, bytes]] = field(default_factory=list)

    async def publish(self, messages: Sequence[tuple[str, bytes | None, bytes]]) -> None:
        self.messages.extend((key, body) for _, key, body in messages)


def orders(tag: str, customers: Sequence[str], amount: int, at: int) -> list[dict[str, Any]]:
    """One completed order per customer, ``amount`` minor units, ``at`` + its position."""
    return [
        {
            "event_id": f"{tag}-{cid}",
            "type": "order_completed",
            "order_id": f"{tag}-{cid}",
            "customer_id": cid,
            "amount": f"{(amount + 37 * n) // 100}.{(amount + 37 * n) % 100:02d}",
            "currency": "TWD",
            "occurred_at": at + n,
        }
        for n, cid in enumerate(customers)
    ]


class Worker:
    """A processor with its own store client: one worker process of the deployment."""

    def __init__(self, settings: Settings) -> None:
        self.out = Collector()
        self.store: RedisStore = open_store(settings)
        self.processor: Processor = build_processor(settings, self.out, self.store)
        self.topic = Topics(settings.topic_prefix).orders
        self.offset = 0

    def records(self, events: list[dict[str, Any]]) -> list[Record]:
        """The events as this worker's next records of partition 0."""
        records = []
        for e in events:
            records.append(
                Record(self.topic, 0, self.offset, e["customer_id"].encode(), orjson.dumps(e))
            )
            self.offset += 1
        return records

    async def apply(self, events: list[dict[str, Any]]) -> None:
        stats = await self.processor.process(self.records(events))
        assert stats.rejected == 0, stats

    async def close(self) -> None:
        await self.store.redis.aclose()


@contextlib.asynccontextmanager
async def workers(settings: Settings, count: int) -> AsyncIterator[list[Worker]]:
    made = [Worker(settings) for _ in range(count)]
    try:
        yield made
    finally:
        for w in made:
            await w.close()


async def assert_the_oracle(store: RedisStore, events: list[dict[str, Any]]) -> None:
    """Every stored customer's R, F, M scores and segment are the batch recomputation's."""
    expected = recompute(events, load_scheme("rfm-classic", 5))
    got = {}
    for cid in expected:
        c = await store.customer(cid)
        assert c is not None, cid
        got[cid] = (c.scores.r, c.scores.f, c.scores.m, c.segment)
    want = {
        cid: (e.scores["r"], e.scores["f"], e.scores["m"], e.segment) for cid, e in expected.items()
    }
    assert got == want


def settings_of(isolated: Isolated, shards: int = 1) -> Settings:
    s = isolated.settings({"scoring": {"clock": "event"}})
    return dataclasses.replace(s, redis_shards=shards)


ALL = [f"c{n:02d}" for n in range(40)]
BIG = [f"b{n:02d}" for n in range(20)]


# ---- the refresh lease ----------------------------------------------------------------


def test_a_lease_taken_after_the_copy_is_nobody_elses_after_the_rollback(
    isolated: Isolated,
) -> None:
    """The token is random: a holder whose lease Redis forgot cannot renew, publish, settle,
    record a configuration or release under the lease a second process then takes."""

    async def run() -> None:
        settings = settings_of(isolated)
        first, second = open_store(settings), open_store(settings)
        try:
            copy = await Copy.take(first.redis, settings.key_prefix)
            mine = await first.acquire_lease(60_000)
            assert mine is not None
            await copy.restore(first.redis)
            theirs = await second.acquire_lease(60_000)
            assert theirs is not None
            assert not await first.renew_lease(mine, 60_000)
            late = Thresholds(version=1, edges={"f": (1, 2, 3, 4)}, computed_at=T0)
            assert await first.publish_thresholds(mine, 0, late) == -1
            assert await first.settle_thresholds(mine, late) == -1
            assert not await first.set_fingerprint(mine, "stale")
            await first.release_lease(mine)
            assert await second.renew_lease(theirs, 60_000)  # still theirs
            assert await second.publish_thresholds(theirs, 0, late) == 1
        finally:
            await first.redis.aclose()
            await second.redis.aclose()

    asyncio.run(run())


# ---- a threshold publication lost after a worker committed against it -----------------


@pytest.mark.timeout(120)
def test_a_refresh_lost_after_commits_against_it_is_redone_above_their_fence(
    isolated: Isolated,
) -> None:
    """Sharded: a worker that cached the lost version commits against it and so raises its
    shards' fences. The next refresh publishes above those fences (the lost number never
    means two versions), re-scores every customer, and a worker still holding the lost
    version is refused and reloads: the end is the oracle of the events Redis holds."""

    async def run() -> None:
        settings = settings_of(isolated, shards=2)
        async with workers(settings, 2) as (w, x):
            kept = orders("p1", ALL, 1_000, T0)
            await w.apply(kept)
            assert (await refresh(w.processor)).version == 1
            copy = await Copy.take(w.store.redis, settings.key_prefix)

            # big buyers move every edge; w publishes v2 and caches it
            await w.apply(orders("p2", BIG, 900_000, T0 + DAY))
            assert (await refresh(w.processor)).version == 2
            assert (await w.processor.thresholds()).version == 2

            await copy.restore(w.store.redis)  # v2 and the big buyers are gone
            # two customers buy again: scored against the lost v2, their fences now say 2
            later = orders("p3", ALL[:2], 50_000, T0 + 2 * DAY)
            await w.apply(later)
            kept += later

            assert await x.store.refreshed_at() == 0  # the periodic round redoes it now
            rescore = x.processor.rescore

            async def dies(*args: Any, **kwargs: Any) -> int:
                raise ConnectionError("the refresh's process died before re-scoring")

            x.processor.rescore = dies  # type: ignore[method-assign]
            with pytest.raises(ConnectionError):
                await refresh(x.processor)  # published v3 above the fences, then died
            x.processor.rescore = rescore  # type: ignore[method-assign]
            assert await x.store.lost_publication() == (False, False)
            again = await refresh(x.processor)  # still redone from the start
            assert again.version == 3 and not again.published  # above the fences: never a 2nd v2
            assert again.candidates == len(ALL)  # nobody knows who was scored against v2
            await assert_the_oracle(x.store, kept)

            more = orders("p4", ALL[12:24], 70_000, T0 + 3 * DAY)
            await x.apply(more)
            kept += more
            last = orders("p5", ALL[24:30], 20_000, T0 + 4 * DAY)
            await w.apply(last)  # refused under v2, reloaded: v3
            kept += last
            assert (await w.processor.thresholds()).version == 3
            await refresh(x.processor)
            await assert_the_oracle(x.store, kept)

    asyncio.run(run())


# ---- a model publication lost after a worker committed against it ---------------------


def model(a: float) -> Model:
    return Model(
        version=0,  # the store numbers it
        fitted_at=T0,
        as_of=T0,
        customers=len(ALL),
        repeat_buyers=len(ALL),
        purchases=clv.BgNbd(r=0.25, alpha=4.0, a=a, b=2.5),
        spend=None,
    )


def buyers(rng: random.Random, count: int) -> list[dict[str, Any]]:
    """A year of purchases as BG/NBD tells them: each buyer at its own rate until it drops
    out, so that a fit on them succeeds."""
    events = []
    for n in range(count):
        rate, dropout = rng.gammavariate(2.0, 0.01), rng.betavariate(1.0, 4.0)
        at = T0 - 360 * DAY + rng.randrange(180 * DAY)
        k = 0
        while at < T0 - DAY:
            events += orders(f"h{k}", [f"y{n}"], rng.randrange(500, 90_000), at)
            k += 1
            if rng.random() < dropout:
                break
            at += int(rng.expovariate(rate) * DAY) + 1
    return sorted(events, key=lambda e: e["occurred_at"])


async def publish(store: RedisStore, m: Model) -> int:
    token = await store.acquire_lease(60_000)
    assert token is not None
    try:
        return await store.publish_model(token, await store.model_version(), m, b"")
    finally:
        await store.release_lease(token)


@pytest.mark.timeout(120)
def test_a_model_lost_after_commits_against_it_is_published_again_above_their_fence(
    isolated: Isolated,
) -> None:
    """With churn events on every commit is fenced on its model. A worker that judged
    customers by a fit Redis lost raises its shards' fences to that version: until a model
    is published above them, every other worker is refused. The next refresh publishes the
    model Redis holds again, above the fences, and re-scores every customer; the worker
    holding the lost fit is refused and reloads."""

    async def run() -> None:
        base = settings_of(isolated, shards=2)
        settings = dataclasses.replace(
            base, prediction=dataclasses.replace(base.prediction, churn_threshold=0.5)
        )
        async with workers(settings, 2) as (w, x):
            await w.apply(orders("p1", ALL, 1_000, T0))
            await w.apply(orders("p2", ALL, 2_000, T0 + 30 * DAY))  # repeat buyers
            held = model(a=0.2)
            assert await publish(w.store, held) == 1
            await refresh(w.processor)
            copy = await Copy.take(w.store.redis, settings.key_prefix)
            assert await publish(w.store, model(a=9.0)) == 2  # judges far more at risk
            assert (await w.processor.model(reload=True)).version == 2  # type: ignore[union-attr]

            await copy.restore(w.store.redis)  # model 2 is gone
            await w.apply(orders("p3", ALL[:6], 5_000, T0 + 60 * DAY))  # judged by it
            assert await x.store.lost_publication() == (False, True)
            assert await x.store.refreshed_at() == 0 and await x.store.fitted_at(T0) == 0

            redo = await refresh(x.processor)
            assert redo.candidates == len(ALL)
            again = await x.store.model()
            assert again is not None and again.version == 3  # above the fences
            assert again.doc() == held.doc()
            assert await x.store.lost_publication() == (False, False)
            await x.apply(orders("p4", ALL[6:12], 5_000, T0 + 61 * DAY))  # not refused
            await w.apply(orders("p5", ALL[12:18], 5_000, T0 + 62 * DAY))  # refused: reload
            assert (await w.processor.model()).version == 3  # type: ignore[union-attr]

    asyncio.run(run())


@pytest.mark.timeout(120)
def test_a_first_model_lost_after_commits_against_it_is_fitted_again_above_their_fence(
    isolated: Isolated,
) -> None:
    """No model left to publish again: the refresh steps aside (its re-scores would all be
    refused), the fit is due at once and publishes above the fences."""

    async def run() -> None:
        base = settings_of(isolated, shards=2)
        settings = dataclasses.replace(
            base, prediction=dataclasses.replace(base.prediction, churn_threshold=0.5)
        )
        async with workers(settings, 2) as (w, x):
            await w.apply(buyers(random.Random(31), 300))
            await refresh(w.processor)
            copy = await Copy.take(w.store.redis, settings.key_prefix)
            assert await publish(w.store, model(a=9.0)) == 1
            assert (await w.processor.model(reload=True)).version == 1  # type: ignore[union-attr]

            await copy.restore(w.store.redis)  # no model any more
            await w.apply(orders("p3", ALL[:6], 5_000, T0 + 60 * DAY))  # judged by model 1
            assert await x.store.fitted_at(T0) == 0
            with pytest.raises(LeaseBusy):
                await refresh(x.processor)
            fit = await refit(x.processor)
            assert fit.model is not None and fit.model.version == 2  # above the fences
            assert (await x.store.model()).version == 2  # type: ignore[union-attr]
            await x.apply(orders("p4", ALL[6:12], 5_000, T0 + 61 * DAY))
            await w.apply(orders("p5", ALL[12:18], 5_000, T0 + 62 * DAY))  # refused: reload
            assert (await w.processor.model()).version == 2  # type: ignore[union-attr]
            await refresh(x.processor)  # now it can: every customer against model 2
            assert await x.store.lost_publication() == (False, False)

    asyncio.run(run())


# ---- a refresh published whose re-scores were lost ------------------------------------


@pytest.mark.timeout(120)
def test_a_refresh_whose_rescores_were_lost_is_redone_not_half_kept(
    isolated: Isolated,
) -> None:
    """Redis comes back with the new version published but not one customer re-scored
    against it and the refresh not settled: the next refresh, finding the edges current,
    still re-scores from the settled version and ends at the oracle."""

    async def run() -> None:
        settings = settings_of(isolated)
        async with workers(settings, 1) as (w,):
            kept = orders("p1", ALL, 1_000, T0) + orders("p2", BIG, 900_000, T0 + DAY)
            await w.apply(kept[: len(ALL)])
            await refresh(w.processor)
            await w.apply(kept[len(ALL) :])
            copies: list[Copy] = []
            members_in = w.store.members_in

            async def copied_first(dim: str, ranges: Any) -> set[str]:
                if not copies:  # published, fences raised, nothing re-scored yet
                    copies.append(await Copy.take(w.store.redis, settings.key_prefix))
                return await members_in(dim, ranges)

            w.store.members_in = copied_first  # type: ignore[method-assign]
            assert (await refresh(w.processor, lease_ms=LEASE_MS)).version == 2
            w.store.members_in = members_in  # type: ignore[method-assign]
            await copies[0].restore(w.store.redis)
            # the copy holds the lease too (its release was lost): the next refresh waits
            # for it to expire, as a worker's periodic round would
            with redis.Redis.from_url(settings.redis_url) as client:
                lease = w.store.keys.lease
                wait_for(lambda: not client.exists(lease), timeout=10, what="the lease to expire")
            current, base = await w.store.thresholds()
            assert (current.version, base.version) == (2, 1)

            redo = await refresh(w.processor)
            assert redo.version == 2 and not redo.published and redo.candidates > 0
            await assert_the_oracle(w.store, kept)

    asyncio.run(run())


# ---- the outbox -----------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_outbox_entries_brought_back_are_published_again_byte_identical(
    isolated: Isolated,
) -> None:
    """Entries deleted once their changes were published come back with the rollback; the
    relay publishes them again under the same key, byte for byte, and none stays behind."""

    async def run() -> None:
        settings = settings_of(isolated, shards=2)
        async with workers(settings, 1) as (w,):
            await w.apply(orders("p1", ALL, 1_000, T0))
            await refresh(w.processor)
            w.out.messages.clear()
            copies: list[Copy] = []
            delete = w.store.outbox_delete

            async def copied_first(ids: Sequence[bytes]) -> None:
                if not copies:
                    copies.append(await Copy.take(w.store.redis, settings.key_prefix))
                await delete(ids)

            w.store.outbox_delete = copied_first  # type: ignore[method-assign]
            await w.apply(orders("p2", ALL, 400_000, T0 + DAY))
            w.store.outbox_delete = delete  # type: ignore[method-assign]
            first = list(w.out.messages)
            assert len(first) > 10 and await w.store.outbox_length() == 0

            await copies[0].restore(w.store.redis)
            assert await w.store.outbox_length() > 0
            w.out.messages.clear()
            assert await w.processor.flush_outbox(min_age_ms=0) == len(first)
            assert sorted(w.out.messages) == sorted(first)
            assert await w.store.outbox_length() == 0

    asyncio.run(run())


# ---- an idle worker holding a version its server lost in a restart ----------------------


@pytest.mark.timeout(120)
def test_an_idle_worker_reloads_what_it_cached_when_its_redis_server_restarted(
    isolated: Isolated,
    own_redis: OwnRedis,  # noqa: F811
    tmp_path: Path,
) -> None:
    """A worker that committed nothing under a lost version raised no fence, so the next
    refresh hands out that very number again, for other edges. Redis only loses writes by
    restarting (or by a failover to another server): the worker sees the server's run id
    change in its positions check before the next batch and reads thresholds and model
    again, instead of scoring by edges nobody can read. The real worker runtime's check and
    apply, on a redis-server of the test's own, restarted from an older copy of its files."""

    async def run() -> None:
        settings = dataclasses.replace(settings_of(isolated), redis_url=own_redis.url)
        async with workers(settings, 2) as (w, x):
            runtime = Runtime(settings, app=None)  # type: ignore[arg-type]
            runtime._processor, runtime._replay = w.processor, Replay(w.store)
            runtime._store = w.store
            kept = orders("p1", ALL, 1_000, T0)
            await x.apply(kept)
            assert (await refresh(x.processor)).version == 1
            first = w.records(orders("p2", ALL[:3], 2_000, T0 + DAY))
            assert await runtime.check(first) == {}
            await runtime.apply(first)
            kept += orders("p2", ALL[:3], 2_000, T0 + DAY)
            own_redis.copy_data(tmp_path / "copy")

            await x.apply(orders("lost", BIG, 900_000, T0 + 2 * DAY))
            assert (await refresh(x.processor)).version == 2
            assert (await w.processor.thresholds(reload=True)).version == 2  # idle: no fence

            own_redis.kill()
            own_redis.restore(tmp_path / "copy")
            own_redis.start()
            await wait_until_answering(x)
            newer = orders("p3", BIG[:10], 400_000, T0 + 3 * DAY)  # other big buyers
            await x.apply(newer)
            kept += newer
            republished = await refresh(x.processor)
            assert republished.version == 2  # the lost number, other edges

            later = orders("p4", ALL[3:20], 30_000, T0 + 4 * DAY)
            records = w.records(later)
            await runtime.check(records)
            await runtime.apply(records)
            kept += later
            assert (await w.processor.thresholds()).edges == (await x.store.thresholds())[0].edges
            await refresh(x.processor)
            await assert_the_oracle(x.store, kept)

    asyncio.run(run())


async def wait_until_answering(worker: Worker) -> None:
    """The server answers again (``OwnRedis.start`` waited for it); the client's first
    command after the restart may still meet its closed connection, the next reconnects."""
    with contextlib.suppress(redis.ConnectionError):
        await worker.store.redis.ping()
    assert await worker.store.redis.ping()


def test_a_batch_meets_a_restarted_server_and_is_read_again_not_applied(
    isolated: Isolated,
) -> None:
    """Between the batch's positions check and its commits the server changed (a restart
    from an older copy, a failover: redis-py reconnects on its own). Applied there, the
    batch would come on top of a state missing what came before it, out of order; its
    commits are refused instead and every partition of it is read again from its start."""

    async def run() -> None:
        settings = settings_of(isolated)
        async with workers(settings, 1) as (w,):
            runtime = Runtime(settings, app=None)  # type: ignore[arg-type]
            runtime._processor, runtime._replay = w.processor, Replay(w.store)
            runtime._store = w.store
            records = w.records(orders("p1", ALL[:5], 1_000, T0))
            assert await runtime.check(records) == {}
            runtime._replay.runs = [b"0" * 40]  # what the check read: another server
            again = await runtime.apply(records)
            assert again == {(records[0].topic, 0): records[0].offset}
            assert [await w.store.customer(cid) for cid in ALL[:5]] == [None] * 5
            assert w.out.messages == []
            assert await runtime.check(records) == {}  # the same server since: it applies
            assert await runtime.apply(records) == {}
            assert all([await w.store.customer(cid) for cid in ALL[:5]])

    asyncio.run(run())
