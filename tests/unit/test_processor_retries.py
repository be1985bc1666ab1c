"""The processor's retries when a commit is refused, against an in-memory store.

A commit is refused when its customer was written meanwhile ("version": recompute that one)
or when the thresholds moved under the whole batch ("thresholds": reload them, recompute).
Either way every event is applied exactly once, the stats count each conflict, and what is
published is what finally committed, once. The store below keeps just enough state to
refuse like commit.lua does; Redis itself is covered by the integration tests.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from stream.clv.prediction import Model
from stream.config import Settings, settings_from
from stream.core.customer import Customer
from stream.core.scoring import Thresholds
from stream.core.step import Record
from stream.kafka.topics import Topics
from stream.shell.processor import MAX_ATTEMPTS, PIPELINE_CHUNK, Processor
from stream.shell.wiring import build_processor
from stream.store.commits import Commit, CommitResult, Loaded, Standing

SETTINGS = settings_from({}, {})
TOPICS = Topics(SETTINGS.topic_prefix)
YESTERDAY = (datetime.now(UTC) - timedelta(days=1)).isoformat()


class MemoryStore:
    """Customers by id with a version each, and a thresholds version: a commit applies
    only over the version it loaded, and only while its thresholds are current.
    ``before_commit`` runs ahead of each commit call (a concurrent writer, say)."""

    def __init__(self) -> None:
        self.customers: dict[str, Customer] = {}
        self.thresholds_version = 0
        self.thresholds_reads = 0
        self.commit_calls = 0
        self.outbox: dict[bytes, list[bytes]] = {}
        self.stats: dict[str, int] = {}
        self.before_commit: Callable[[MemoryStore, Sequence[Commit]], None] | None = None

    def write_behind(self, cid: str) -> None:
        """Another writer commits ``cid`` (its version moves; nothing else does)."""
        self.customers.setdefault(cid, Customer(cid)).version += 1

    async def aclose(self) -> None:
        pass

    async def load(self, wanted: Mapping[str, Sequence[str]]) -> dict[str, Loaded]:
        out = {}
        for cid, asked in wanted.items():
            c = copy.deepcopy(self.customers.get(cid, Customer(cid)))
            c.seen_events = {e for e in asked if e in c.seen_events}
            c.new_events = []
            out[cid] = Loaded(c, {})
        return out

    async def standings(self, ids: Sequence[str]) -> dict[str, Standing | None]:
        return {cid: None for cid in ids}  # always the full path

    async def commit(self, commits: Sequence[Commit]) -> list[CommitResult]:
        self.commit_calls += 1
        if self.before_commit is not None:
            self.before_commit(self, commits)
        head = commits[0] if commits else None
        if head and head.check_thresholds and head.thresholds_version != self.thresholds_version:
            return [CommitResult(False, reason="thresholds") for _ in commits]
        results = []
        for c in commits:
            cid = c.customer.customer_id
            stored = self.customers.get(cid, Customer(cid))
            if c.customer.version != stored.version:
                results.append(CommitResult(False, reason="version"))
                continue
            kept = copy.deepcopy(c.customer)
            kept.version += 1
            kept.seen_events = stored.seen_events | set(c.customer.new_events)
            self.customers[cid] = kept
            entry = f"{self.commit_calls}-{cid}".encode()
            self.outbox[entry] = list(c.bodies)
            results.append(CommitResult(True, outbox_id=entry if c.bodies else None))
        return results

    async def thresholds(self) -> tuple[Thresholds, Thresholds]:
        self.thresholds_reads += 1
        current = Thresholds(version=self.thresholds_version)
        return current, current

    async def model(self) -> Model | None:
        return None

    async def event_clock(self) -> int:
        return 0

    async def add_stats(self, **deltas: int) -> None:
        for name, n in deltas.items():
            self.stats[name] = self.stats.get(name, 0) + n

    async def outbox_older_than(
        self, max_id_ms: int, count: int = 10
    ) -> list[tuple[bytes, str, bytes]]:
        return []

    async def outbox_delete(self, ids: Sequence[bytes]) -> None:
        for oid in ids:
            del self.outbox[oid]


class Collector:
    def __init__(self) -> None:
        self.messages: list[tuple[str, bytes | None, bytes]] = []

    async def publish(self, messages: Sequence[tuple[str, bytes | None, bytes]]) -> None:
        self.messages.extend(messages)


def order(n: int, cid: str) -> Record:
    doc: dict[str, Any] = {
        "event_id": f"e{n}",
        "type": "order_completed",
        "order_id": f"o{n}",
        "customer_id": cid,
        "amount": "10.00",
        "currency": SETTINGS.store.currency,
        "occurred_at": YESTERDAY,
        "channel": "online",
    }
    return Record(TOPICS.orders, 0, n, cid.encode(), orjson.dumps(doc))


def scorer(store: MemoryStore, settings: Settings = SETTINGS) -> tuple[Processor, Collector]:
    out = Collector()
    return build_processor(settings, out, store), out


def changes_of(out: Collector) -> list[dict[str, Any]]:
    return [orjson.loads(body) for topic, _, body in out.messages if topic == TOPICS.changes]


def test_a_customer_written_meanwhile_is_recomputed_alone() -> None:
    store = MemoryStore()
    raced: list[str] = []

    def race(s: MemoryStore, commits: Sequence[Commit]) -> None:
        if not raced:
            raced.append("b")
            s.write_behind("b")

    store.before_commit = race
    processor, out = scorer(store)
    stats = asyncio.run(processor.process([order(1, "a"), order(2, "b"), order(3, "c")]))
    assert (stats.accepted, stats.conflicts, stats.duplicates, stats.rejected) == (3, 1, 0, 0)
    assert store.commit_calls == 2  # the batch, then "b" alone
    assert {cid: len(c.orders) for cid, c in store.customers.items()} == {"a": 1, "b": 1, "c": 1}
    assert store.customers["b"].version == 2  # the other writer's, then ours
    published = changes_of(out)
    assert sorted(ch["customer_id"] for ch in published) == ["a", "b", "c"]
    assert stats.changes == len(published)
    assert store.outbox == {}  # each published entry was deleted
    assert store.thresholds_reads == 1  # a version conflict keeps the thresholds


def test_thresholds_that_moved_are_reloaded_and_the_whole_batch_recomputed() -> None:
    store = MemoryStore()

    def refresh_once(s: MemoryStore, commits: Sequence[Commit]) -> None:
        if s.thresholds_version == 0:
            s.thresholds_version = 1  # a refresh published while this batch was scored

    store.before_commit = refresh_once
    processor, out = scorer(store)
    stats = asyncio.run(processor.process([order(1, "a"), order(2, "b")]))
    assert (stats.accepted, stats.conflicts) == (2, 2)
    assert store.thresholds_reads == 2
    assert {ch["thresholds_version"] for ch in changes_of(out)} == {1}
    assert sorted(ch["customer_id"] for ch in changes_of(out)) == ["a", "b"]


def test_a_redelivered_event_is_a_duplicate_and_publishes_nothing() -> None:
    store = MemoryStore()
    processor, out = scorer(store)
    asyncio.run(processor.process([order(1, "a")]))
    published = len(out.messages)
    stats = asyncio.run(processor.process([order(1, "a")]))
    assert (stats.accepted, stats.duplicates, stats.changes) == (0, 1, 0)
    assert len(out.messages) == published
    assert store.stats == {"duplicates": 1, "rejected": 0}


def test_conflicts_that_never_end_fail_the_batch_without_publishing() -> None:
    store = MemoryStore()
    store.before_commit = lambda s, commits: [
        s.write_behind(c.customer.customer_id) for c in commits
    ]
    processor, out = scorer(store)
    with pytest.raises(RuntimeError, match="after 20 tries"):
        asyncio.run(processor.process([order(1, "a")]))
    assert store.commit_calls == MAX_ATTEMPTS
    assert out.messages == []


def test_chunks_of_one_batch_commit_apart_and_retry_together() -> None:
    ids = [f"c{n:04d}" for n in range(PIPELINE_CHUNK * 2 + 1)]  # three pipeline chunks
    store = MemoryStore()

    def race_second_chunk(s: MemoryStore, commits: Sequence[Commit]) -> None:
        if s.commit_calls == 2:
            s.write_behind(commits[0].customer.customer_id)

    store.before_commit = race_second_chunk
    processor, out = scorer(store)
    stats = asyncio.run(processor.process([order(n, cid) for n, cid in enumerate(ids)]))
    assert (stats.accepted, stats.conflicts) == (len(ids), 1)
    assert store.commit_calls == 4
    assert all(len(store.customers[cid].orders) == 1 for cid in ids)
    assert len(changes_of(out)) == stats.changes


def test_a_rescore_retries_what_was_written_meanwhile() -> None:
    store = MemoryStore()
    processor, _ = scorer(store)
    asyncio.run(processor.process([order(1, "a"), order(2, "b")]))
    store.thresholds_version = 1
    tried: list[list[str]] = []

    def race(s: MemoryStore, commits: Sequence[Commit]) -> None:
        if commits:
            tried.append([c.customer.customer_id for c in commits])
        if len(tried) == 1 and commits:
            s.write_behind("a")

    store.before_commit = race
    asyncio.run(processor.rescore(["a", "b"], "threshold_refresh", standing=True))
    assert tried == [["a", "b"], ["a"]]
    assert store.customers["a"].version == 3  # ours, the other writer's, the re-score
    assert store.customers["b"].version == 2
