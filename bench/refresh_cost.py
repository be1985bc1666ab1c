"""Threshold-refresh time at two population sizes with the same number of customers moved.

SPEC section 4: a refresh costs in proportion to the customers whose score changes, not to
the population, so the two timings should be close. Each population goes in-process through
``Processor.process`` (the worker's own code path; Kafka is replaced by a collector because
it is not what is measured), with its final thresholds seeded first (``bench.thresholds``) so
it starts settled, as after a first refresh, without paying for re-scoring everyone. Then a
few newcomers with the latest and largest orders, and a few existing customers buying big,
shift every R and M edge by a few ranks (the same few whatever the population), and the
refresh that follows is timed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from bench import BenchError
from bench.thresholds import Population, seed, thresholds_of
from bench.workload import MAX_AMOUNT, customer_id, order_event, orders
from stream.config import Settings
from stream.core.scoring import moved_ranges
from stream.core.step import Record
from stream.kafka.topics import Topics
from stream.shell.processor import Processor, wall_ms
from stream.shell.refresh import refresh
from stream.shell.wiring import build_processor
from stream.store.keys import DIMS
from stream.store.redis_store import RedisStore, open_store
from stream.worker.tuning import tune_gc

NEWCOMERS = 20
REPEATERS = 5
BATCH = 5000  # records per Processor.process call while populating


@dataclass(frozen=True)
class RefreshCost:
    customers: int
    moved: int  # customers whose stored scores the timed refresh changed
    rescored: int  # customers it re-scored: its work
    changes: int  # segment changes it published
    seconds: float
    populate_seconds: float


class Collector:
    """The output port: counts what would have gone to Kafka and acknowledges at once."""

    def __init__(self) -> None:
        self.published = 0

    async def publish(self, messages: Sequence[tuple[str, bytes | None, bytes]]) -> None:
        self.published += len(messages)


async def _candidates(store: RedisStore, buckets: int) -> set[str]:
    """Who the next refresh can move: values between an old and a new edge (SPEC 4).

    Counting "moved" among these instead of snapshotting every customer keeps the measurement
    cheap at a million customers; tests/test_refresh_cost.py checks nobody else moves.
    """
    current, base = await store.thresholds()
    edges, _ = await store.quantile_edges(buckets)
    found: set[str] = set()
    for dim in DIMS:
        for old in {base.for_dim(dim), current.for_dim(dim)}:
            ranges = moved_ranges(old, edges.get(dim, ()))
            if ranges:
                found |= await store.members_in(dim, ranges)
    return found


async def _scores(store: RedisStore, ids: Sequence[str]) -> list[bytes | None]:
    pipe = store.redis.pipeline(transaction=False)
    for cid in ids:
        pipe.hget(store.keys.customer(cid), "sc")
    return list(await pipe.execute())


async def populate(
    processor: Processor, topic: str, events: Sequence[tuple[bytes, bytes]], what: str
) -> float:
    """Apply ``events`` through the worker's code path in batches; returns the seconds taken."""
    started = wall_ms()
    for start in range(0, len(events), BATCH):
        chunk = events[start : start + BATCH]
        stats = await processor.process(
            [Record(topic, 0, start + n, k, v) for n, (k, v) in enumerate(chunk)]
        )
        if stats.rejected or stats.accepted != len(chunk):
            raise BenchError(f"populating for {what}: {stats}")
    return (wall_ms() - started) / 1000


async def measure(
    settings: Settings,
    customers: int,
    say: Callable[[str], None] = lambda _: None,
    newcomers: int = NEWCOMERS,
) -> RefreshCost:
    store = open_store(settings)
    buckets = settings.scoring.buckets
    processor = build_processor(settings, Collector(), store)
    topic = Topics(settings.topic_prefix).orders
    cur, dec = settings.store.currency, settings.store.currency_decimals
    # The worker refreshes with its collector tuned (stream.worker.tuning); untuned, the collector
    # took a quarter of this process's CPU during the timed refresh of a compiled core.
    tune_gc()
    try:
        work = orders(customers, customers, now_ms=wall_ms(), tag="r", currency=cur, decimals=dec)
        population = Population.of(work.customer, work.amount, work.at)
        await seed(store, thresholds_of(population, buckets))
        populate_s = await populate(processor, topic, work.events, "the refresh bench")
        sent = len(work)
        del work  # the worker holds no workload: neither should the refresh's heap
        say(f"refresh: {customers:,} customers loaded in {populate_s:.1f}s")
        settled = await refresh(processor)
        if settled.candidates:
            say(f"refresh: the seeded population was not settled ({settled.candidates} re-scored)")

        now = wall_ms()
        nudge = [
            order_event(
                f"new-{j}",
                f"new-{j}",
                MAX_AMOUNT + 1_000 * (j + 1),
                now - j,
                currency=cur,
                decimals=dec,
            )
            for j in range(newcomers)
        ]
        nudge += [
            order_event(
                f"again-{j}",
                customer_id("r", (j * 7919) % customers),
                MAX_AMOUNT + 777 * (j + 1),
                now - newcomers - j,
                currency=cur,
                decimals=dec,
            )
            for j in range(min(REPEATERS, customers))
        ]
        stats = await processor.process(
            [Record(topic, 0, sent + n, None, v) for n, v in enumerate(nudge)]
        )
        if stats.rejected:
            raise BenchError(f"the refresh bench's nudge was rejected: {stats}")
        candidates = sorted(await _candidates(store, buckets))
        before = await _scores(store, candidates)
        report = await refresh(processor)
        after = await _scores(store, candidates)
        moved = sum(1 for b, a in zip(before, after, strict=True) if b != a)
        return RefreshCost(
            customers, moved, report.candidates, report.changes, report.seconds, populate_s
        )
    finally:
        await store.redis.aclose()
