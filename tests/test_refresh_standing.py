"""A refresh re-scores from standings; the result is what re-scoring full states gives.

Two namespaces of the real Redis receive the same event log through the real processor,
with an event clock that runs well past many customers' due times and no clock sweep in
between, so a refresh meets both kinds of customer: those whose indexed metrics are still
exact, and those whose orders have left the window since their last commit. One namespace
refreshes as the worker does; the other re-scores every candidate from its full state (the
path every other re-score takes). Every stored byte that does not hold a wall-clock time
must come out the same, and so must the change events.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest

from stream.config import Settings
from stream.core.step import Record
from stream.kafka.topics import Topics
from stream.shell.processor import Processor
from stream.shell.refresh import refresh
from stream.shell.wiring import build_processor
from stream.store.history import segment_history
from stream.store.keys import DIMS
from stream.store.redis_store import RedisStore, open_store
from tests.conftest import Isolated
from tests.support import index_entries

pytestmark = pytest.mark.integration

DAY = 86_400_000
T0 = (time.time_ns() // 1_000_000 // DAY - 200) * DAY  # all events in the past
CUSTOMERS = 300
BATCH = 50


@dataclass
class Collector:
    messages: list[bytes] = field(default_factory=list)

    async def publish(self, messages: Sequence[tuple[str, bytes | None, bytes]]) -> None:
        self.messages.extend(body for _, _, body in messages)


class FullState(Processor):
    """The reference: every re-score reads and rewrites the customer's whole state."""

    async def rescore(  # type: ignore[override]
        self,
        customer_ids: Iterable[str],
        cause: str,
        batch: int = 1000,
        before_batch: Callable[[], Awaitable[None]] | None = None,
        standing: bool = False,
    ) -> int:
        return await super().rescore(customer_ids, cause, batch, before_batch, standing=False)


def event_log(rng: random.Random) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    for n in range(CUSTOMERS):
        cid = f"c{n}"
        for k in range(rng.randint(0, 4)):
            at = T0 + rng.randrange(90 * DAY)
            oid = f"{cid}-o{k}"
            amount = rng.randint(1, 90_000)
            events.append(order("order_completed", f"{oid}-c", cid, oid, amount, at))
            if rng.random() < 0.2:
                part = amount if rng.random() < 0.5 else amount // 2
                events.append(order("order_refunded", f"{oid}-r", cid, oid, part, at + 1))
        for k in range(rng.randint(0, 3)):
            at = T0 + rng.randrange(90 * DAY)
            events.append(
                {
                    "event_id": f"{cid}-i{k}",
                    "type": "interaction",
                    "kind": "like",
                    "customer_id": cid,
                    "occurred_at": at,
                }
            )
    events.sort(key=lambda e: e["occurred_at"])
    return events


def order(kind: str, eid: str, cid: str, oid: str, amount: int, at: int) -> dict[str, Any]:
    e = {
        "event_id": eid,
        "type": kind,
        "order_id": oid,
        "customer_id": cid,
        "amount": f"{amount // 100}.{amount % 100:02d}",
        "currency": "TWD",
        "occurred_at": at,
    }
    if kind == "order_refunded":
        e["full"] = amount % 2 == 0
    return e


class Spy:
    """Counts the customers each kind of read served (the reads themselves are real)."""

    def __init__(self, store: RedisStore) -> None:
        self.standings = self.loads = 0
        standings, load = store.standings, store.load

        async def counted_standings(ids: Sequence[str]) -> Any:
            self.standings += len(ids)
            return await standings(ids)

        async def counted_load(wanted: Any) -> Any:
            self.loads += len(wanted)
            return await load(wanted)

        store.standings = counted_standings  # type: ignore[method-assign]
        store.load = counted_load  # type: ignore[method-assign]


def _without_wall_time(field: bytes, value: bytes) -> bytes:
    if field.startswith(b"h:"):
        return value.rsplit(b" ", 1)[0]
    return b"" if field.startswith(b"e:") else value


async def stored_state(store: RedisStore, ids: Sequence[str]) -> dict[str, Any]:
    """Everything a refresh writes, with wall-clock times (of history entries, dedupe
    mark expiries) cut off."""
    k, r = store.keys, store.redis
    out: dict[str, Any] = {}
    for cid in ids:
        fields = await r.hgetall(k.customer(cid))
        out[cid] = {f.decode(): _without_wall_time(f, v).decode() for f, v in fields.items()}
        kept = await r.lrange(k.history(cid), 0, -1)  # its segment history
        out[f"history:{cid}"] = [{**h, "at": None} for h in segment_history(kept, {}, len(kept))]
    for d in DIMS:
        out[f"ix:{d}"] = await index_entries(store, d)
    out["due"] = {cid: await r.zscore(k.due_of(cid), cid) for cid in ids}
    for key in (k.counts(), k.segment_report(), k.grid()):
        out[key.rsplit(":", 1)[-1]] = await r.hgetall(key)
    return out


def published(collector: Collector) -> list[dict[str, Any]]:
    """Change events without their wall-clock time, by customer: the standing re-scores
    those whose state sufficed before the others, so only per-customer order holds."""
    changes = [{**orjson.loads(m), "at": None} for m in collector.messages]
    return sorted(changes, key=lambda c: (c["customer_id"], c["seq"]))


async def scenario(settings: Settings, processor_type: type[Processor]) -> tuple[Any, ...]:
    store = open_store(settings)
    out = Collector()
    processor = build_processor(settings, out, store, kind=processor_type)
    topics = Topics(settings.topic_prefix)
    topic_of = {"interaction": topics.interactions}
    log = event_log(random.Random(20261201))
    ids = sorted({e["customer_id"] for e in log} | {f"new{j}" for j in range(8)})
    try:

        async def apply(events: list[dict[str, Any]], first: int) -> None:
            for start in range(0, len(events), BATCH):
                chunk = events[start : start + BATCH]
                stats = await processor.process(
                    [
                        Record(
                            topic_of.get(e["type"], topics.orders),
                            0,
                            first + start + n,
                            e["customer_id"].encode(),
                            orjson.dumps(e),
                        )
                        for n, e in enumerate(chunk)
                    ]
                )
                assert stats.rejected == 0, stats

        await apply(log, 0)
        out.messages.clear()
        spy = Spy(store)
        first = await refresh(processor)
        after_first = (await stored_state(store, ids), published(out), first.candidates)
        out.messages.clear()
        # big new buyers, forty days on: every edge moves, and more orders leave the window
        late = log[-1]["occurred_at"] + 40 * DAY
        nudge = [
            order("order_completed", f"new{j}-c", f"new{j}", f"new{j}-o", 95_000 + j, late + j)
            for j in range(8)
        ]
        await apply(nudge, len(log))
        out.messages.clear()
        second = await refresh(processor)
        after_second = (await stored_state(store, ids), published(out), second.candidates)
        return after_first, after_second, spy
    finally:
        await store.redis.aclose()


@pytest.mark.timeout(300)
def test_a_refresh_from_standings_leaves_what_full_states_would(isolated: Isolated) -> None:
    toml = {"scoring": {"clock": "event", "window_days": 30, "buckets": 5}}
    worker = isolated.settings(toml)
    reference = isolated.settings(toml)
    reference = dataclasses.replace(reference, key_prefix=f"{reference.key_prefix}ref:")

    async def both() -> tuple[Any, Any]:
        return await scenario(worker, Processor), await scenario(reference, FullState)

    (first, second, spy), (ref_first, ref_second, ref_spy) = asyncio.run(both())
    assert first[2] > 50 and second[2] > 10, "each refresh re-scores a good share"
    assert first == ref_first
    assert second == ref_second
    # both kinds of customer were met: the standing served most, the clock sent some back
    assert spy.standings >= first[2] + second[2]
    assert 0 < spy.loads < spy.standings
    assert ref_spy.standings == 0
