"""A threshold refresh costs in proportion to the customers who move (SPEC section 4).

"A refresh must cost in proportion to the customers whose score actually changes, not to the
number of customers." Acceptance: with 200,000 customers and a refresh that moves about 100 of
them, the number of customers re-scored stays within a small constant factor of 100. The work is
counted (``RefreshReport.candidates``), never timed.

Everything runs in process against the real Redis: events go through ``Processor.process``
exactly as the worker applies them, the refresh is the real ``refresh()``. Only the output port
is replaced by a collector (Kafka is not what is measured here). Who "actually changed" is
observed in the stored customer hashes, and the stored scores are checked against an
independent recomputation from the generated events, so a refresh that merely skipped work
could not pass.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest

from stream.core.step import Record
from stream.kafka.topics import Topics
from stream.shell.refresh import RefreshReport, refresh
from stream.shell.wiring import build_processor
from stream.store.redis_store import RedisStore, open_store
from tests.conftest import Isolated

pytestmark = pytest.mark.integration

SEED = 20_261_123
CUSTOMERS = 200_000
BATCH = 5_000  # records per Processor.process call while populating
BUCKETS = 5
DAY = 86_400_000
SPREAD_MS = 200 * DAY  # history spans 200 days: inside the 365-day window, nothing ages out
MAX_AMOUNT = 5_000_000  # minor units; the newcomers below all spend more than this
NEWCOMERS = 20  # new customers with the latest and largest orders: they push every edge up
REPEATERS = 5  # existing customers who buy again, jumping from the middle to the top
TAIPEI = timezone(timedelta(hours=8))
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass
class Collector:
    """The output port: keeps what would have gone to Kafka, acknowledges at once."""

    messages: list[tuple[str, bytes | None, bytes]] = field(default_factory=list)

    async def publish(self, messages: Sequence[tuple[str, bytes | None, bytes]]) -> None:
        self.messages.extend(messages)


def say(text: str) -> None:
    print(f"[refresh cost] {text}", flush=True)


def rfc3339(ms: int) -> str:
    return (
        (EPOCH + timedelta(milliseconds=ms)).astimezone(TAIPEI).isoformat(timespec="milliseconds")
    )


def order(n: int, cid: str, amount: int, at: int) -> dict[str, Any]:
    return {
        "event_id": f"evt-{n}",
        "type": "order_completed",
        "order_id": f"o-{n}",
        "customer_id": cid,
        "amount": f"{amount // 100}.{amount % 100:02d}",
        "currency": "TWD",
        "occurred_at": rfc3339(at),
        "channel": "online",
    }


def records(topic: str, events: Sequence[dict[str, Any]], first_offset: int) -> list[Record]:
    return [
        Record(topic, 0, first_offset + n, e["customer_id"].encode("utf-8"), orjson.dumps(e))
        for n, e in enumerate(events)
    ]


@dataclass
class Truth:
    """What the generated events imply per customer (R = last order, F = orders, M = spent)."""

    last: dict[str, int] = field(default_factory=dict)
    orders: dict[str, int] = field(default_factory=dict)
    spent: dict[str, int] = field(default_factory=dict)

    def add(self, e: dict[str, Any], at: int, amount: int) -> None:
        cid = e["customer_id"]
        self.last[cid] = max(self.last.get(cid, at), at)
        self.orders[cid] = self.orders.get(cid, 0) + 1
        self.spent[cid] = self.spent.get(cid, 0) + amount

    def scores(self) -> dict[str, str]:
        """Stored ``sc`` field ("r,f,m,i") per SPEC 4: t_k = v(ceil(k*N/B)), 1 + #{k: v > t_k}."""
        per_dim = []
        for values in (self.last, self.orders, self.spent):
            ordered = sorted(values.values())
            n = len(ordered)
            edges = [ordered[-(-k * n // BUCKETS) - 1] for k in range(1, BUCKETS)]
            per_dim.append({cid: 1 + sum(v > t for t in edges) for cid, v in values.items()})
        r, f, m = per_dim
        return {cid: f"{r[cid]},{f[cid]},{m[cid]}," for cid in self.last}


async def snapshot(store: RedisStore, ids: Sequence[str]) -> dict[str, tuple[str, str]]:
    """(scores, segment) as stored in every customer's hash (fields ``sc`` and ``sg``)."""
    out: dict[str, tuple[str, str]] = {}
    for start in range(0, len(ids), 10_000):
        chunk = ids[start : start + 10_000]
        pipe = store.redis.pipeline(transaction=False)
        for cid in chunk:
            pipe.hmget(store.keys.customer(cid), ["sc", "sg"])
        for cid, (sc, sg) in zip(chunk, await pipe.execute(), strict=True):
            out[cid] = ((sc or b"").decode(), (sg or b"").decode())
    return out


def mismatches(stored: dict[str, tuple[str, str]], expected: dict[str, str]) -> list[Any]:
    assert set(stored) == set(expected)
    return [(cid, stored[cid][0], want) for cid, want in expected.items() if stored[cid][0] != want]


@pytest.mark.timeout(900)
def test_refresh_rescores_only_customers_who_move(isolated: Isolated) -> None:
    settings = isolated.settings({"scoring": {"clock": "event", "buckets": BUCKETS}})
    topics = Topics(settings.topic_prefix)
    rng = random.Random(SEED)
    # A fixed shape relative to "today": ranks, hence every count below, do not depend on the day.
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    t0 = (today - timedelta(days=30) - EPOCH) // timedelta(milliseconds=1)

    ids = [f"c-{n:06d}" for n in range(CUSTOMERS)]
    offsets = rng.sample(range(1, SPREAD_MS), CUSTOMERS)  # distinct: no ties on R
    amounts = rng.sample(range(100, MAX_AMOUNT), CUSTOMERS)  # distinct: no ties on M
    truth = Truth()
    history = []
    for n, (cid, back, amount) in enumerate(zip(ids, offsets, amounts, strict=True)):
        e = order(n, cid, amount, t0 - back)
        truth.add(e, t0 - back, amount)
        history.append(e)

    async def run() -> None:
        store = open_store(settings)
        out = Collector()
        processor = build_processor(settings, out, store)
        try:
            # -- 200,000 customers through the real code path -------------------------------
            started = time.perf_counter()
            for start in range(0, len(history), BATCH):
                stats = await processor.process(
                    records(topics.orders, history[start : start + BATCH], start)
                )
                assert stats.rejected == 0 and stats.conflicts == 0, stats
                assert stats.accepted == len(history[start : start + BATCH])
            populate_s = time.perf_counter() - started
            say(f"populated {CUSTOMERS} customers in {populate_s:.1f}s")
            assert Counter(t for t, _, _ in out.messages) == {topics.changes: CUSTOMERS}
            out.messages.clear()

            # -- first refresh: from "no thresholds" nearly everyone moves, as expected ---------
            first: RefreshReport = await refresh(processor)
            current, base = await store.thresholds()
            say(
                f"refresh 1: candidates={first.candidates} changes={first.changes}"
                f" seconds={first.seconds:.1f}; thresholds v{current.version},"
                f" settled (base) v{base.version}"
            )
            assert first.published and first.version == 1
            assert first.candidates > CUSTOMERS // 2
            settled = await snapshot(store, ids)
            wrong = mismatches(settled, truth.scores())
            assert not wrong, f"{len(wrong)} customers wrong after refresh 1: {wrong[:5]}"
            out.messages.clear()

            # -- a small batch that shifts every R and M edge by a few ranks --------------------
            nudge = []
            n = len(history)
            for j in range(NEWCOMERS):
                at, amount = t0 + (j + 1) * 60_000, MAX_AMOUNT + 1_000 * (j + 1)
                nudge.append(order(n + j, f"new-{j:03d}", amount, at))
                truth.add(nudge[-1], at, amount)
            for j, cid in enumerate(rng.sample(ids, REPEATERS)):
                at, amount = t0 + (NEWCOMERS + j + 1) * 60_000, MAX_AMOUNT + 777 * (j + 1)
                nudge.append(order(n + NEWCOMERS + j, cid, amount, at))
                truth.add(nudge[-1], at, amount)
            stats = await processor.process(records(topics.orders, nudge, n))
            assert stats.accepted == len(nudge) and stats.rejected == 0, stats
            everyone = [*ids, *(f"new-{j:03d}" for j in range(NEWCOMERS))]
            out.messages.clear()

            before = await snapshot(store, everyone)
            second = await refresh(processor)
            after = await snapshot(store, everyone)
            published = list(out.messages)

            # The refresh left every customer exactly where a batch recomputation puts them ...
            wrong = mismatches(after, truth.scores())
            assert not wrong, f"{len(wrong)} customers wrong after refresh 2: {wrong[:5]}"
            moved = [cid for cid in everyone if before[cid][0] != after[cid][0]]
            resegmented = [cid for cid in everyone if before[cid][1] != after[cid][1]]
            say(
                f"refresh 2: moved={len(moved)} candidates={second.candidates}"
                f" changes={second.changes} seconds={second.seconds:.3f}"
            )

            # ... and did it by re-scoring about as many customers as actually moved.
            assert second.published and second.version == 2
            assert 50 <= len(moved) <= 300, len(moved)
            assert len(moved) <= second.candidates <= 3 * len(moved) + 10, (
                f"re-scored {second.candidates} customers for {len(moved)} that moved"
                f" (after refresh 1, which took {first.seconds:.1f}s, the thresholds were"
                f" v{current.version} and the settled base v{base.version})"
            )
            assert second.candidates < CUSTOMERS // 100
            # Segment changes are a subset of score changes, each published exactly once.
            assert second.changes == len(resegmented) <= len(moved)
            assert set(resegmented) <= set(moved)
            changed = [orjson.loads(v) for t, _, v in published if t == topics.changes]
            assert len(changed) == len(published) == second.changes
            assert {c["customer_id"] for c in changed} == set(resegmented)
            assert {c["cause"] for c in changed} <= {"threshold_refresh"}
        finally:
            await store.redis.aclose()

    asyncio.run(run())
