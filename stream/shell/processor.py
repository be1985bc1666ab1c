"""One batch of input records -> committed customer transitions -> changes and dead letters.

This is the imperative shell around the pure core (``stream.core.step`` is one customer's
whole step): it owns the order of I/O (load, compute, commit, publish) and the retry on a
lost race, and it knows nothing of Faust, so the benchmark's raw baseline and the CLI reuse
it as is.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

from stream.clv.prediction import Model
from stream.config import Settings
from stream.core.events import (
    ErasureEvent,
    Event,
    Rejected,
    parse_erasure,
    parse_interaction,
    parse_order,
)
from stream.core.rescore import ScoringContext, fixed_thresholds
from stream.core.scheme import Scheme
from stream.core.scoring import Thresholds
from stream.core.step import (
    DeadLetter,
    Record,
    StepResult,
    fold,
    rescored,
    rescored_standing,
    standing_suffices,
)
from stream.kafka.topics import Topics
from stream.shell.ports import Publisher, Store
from stream.store.commits import Commit, CommitResult, Loaded, Standing

log = logging.getLogger("rfm.processor")
MAX_ATTEMPTS = 20
# customers per pipeline step: small enough that Redis and Python overlap, big enough that
# a script call's fixed cost stays small
PIPELINE_CHUNK = 250
State = TypeVar("State", Loaded, Standing | None)


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


def _rescore_one(ctx: ScoringContext, cause: str, _cid: str, loaded: Loaded) -> StepResult:
    return rescored(ctx, cause, loaded)


def _rescore_standing(
    ctx: ScoringContext, cause: str, stale: set[str], cid: str, standing: Standing | None
) -> StepResult:
    """From the standing when it suffices; else ``cid`` joins ``stale`` for a full re-score."""
    out = None if standing is None else rescored_standing(ctx, cause, standing)
    if out is None:
        stale.add(cid)
        return StepResult()
    return out


@dataclass
class BatchStats:
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    changes: int = 0
    conflicts: int = 0

    def add(self, other: BatchStats) -> None:
        for name in ("accepted", "duplicates", "rejected", "changes", "conflicts"):
            setattr(self, name, getattr(self, name) + getattr(other, name))


def _published(commit: Commit, result: CommitResult) -> list[tuple[str, bytes, bytes]]:
    cid = commit.customer.customer_id
    oid = result.outbox_id or b""
    return [(cid, body, oid) for body in commit.bodies]


def _settle(
    attempted: list[tuple[str, StepResult, CommitResult | None]],
    changes: list[tuple[str, bytes, bytes]],
) -> tuple[set[str], bool]:
    """Collect what committed into ``changes``; returns who must be retried, and whether
    the thresholds (or model) moved under them."""
    retry: set[str] = set()
    reload = False
    for cid, outcome, result in attempted:
        if result is None or outcome.commit is None:
            continue
        if not result.ok:
            retry.add(cid)
            reload = reload or result.reason == "thresholds"
        else:
            changes.extend(_published(outcome.commit, result))
    return retry, reload


def _event_ids(pending: dict[str, list[tuple[Record, Event]]], cid: str) -> list[str]:
    """The ids whose dedupe marks to read: an erasure has none."""
    return [e.event_id for _, e in pending[cid] if not isinstance(e, ErasureEvent)]


class Processor:
    def __init__(
        self, settings: Settings, store: Store, scheme: Scheme, publisher: Publisher
    ) -> None:
        self.settings = settings
        self.store = store
        self.scheme = scheme
        self.publisher = publisher
        self.topics = Topics(settings.topic_prefix)
        self._thresholds: Thresholds | None = None
        self._model: Model | None = None
        self._model_loaded = False  # "no model yet" is cached too: the fence catches a new one
        self._parsers: dict[str, Callable[[bytes, object, int], Event]] = {
            self.topics.orders: parse_order,  # type: ignore[dict-item]
            self.topics.interactions: parse_interaction,  # type: ignore[dict-item]
            self.topics.erasure: parse_erasure,  # type: ignore[dict-item]
        }

    # ---- context -----------------------------------------------------------------------

    def forget_published(self) -> None:
        """Drop the cached thresholds and model: the Redis server that published them
        restarted (or another took its place) and may have come back without them, and a
        version number it lost can be handed out again to other edges or parameters."""
        self._thresholds = None
        self._model = None
        self._model_loaded = False

    async def thresholds(self, reload: bool = False) -> Thresholds:
        if self.settings.scoring.mode == "fixed":
            return fixed_thresholds(self.settings)
        if self._thresholds is None or reload:
            self._thresholds, _ = await self.store.thresholds()
        return self._thresholds

    async def model(self, reload: bool = False) -> Model | None:
        """The CLV model, cached like the thresholds: a commit made against an older one is
        refused by the store's fence and retried after a reload."""
        if self.settings.prediction.churn_threshold <= 0:
            return None
        if not self._model_loaded or reload:
            self._model = await self.store.model()
            self._model_loaded = True
        return self._model

    async def context(self, reload: bool = False) -> ScoringContext:
        """On the event clock ``now`` is the store's; each event then moves it (``fold``)."""
        wall = wall_ms()
        if self.settings.scoring.clock == "event":
            now = await self.store.event_clock()
        else:
            now = wall
        return ScoringContext(
            settings=self.settings,
            thresholds=await self.thresholds(reload),
            scheme=self.scheme,
            now=now,
            wall=wall,
            model=await self.model(reload),
        )

    # ---- input batches ------------------------------------------------------------------

    async def process(self, records: Sequence[Record]) -> BatchStats:
        """Apply a batch; returns only after changes and dead letters are acknowledged."""
        stats = BatchStats()
        wall = wall_ms()
        dead: list[DeadLetter] = []
        pending: dict[str, list[tuple[Record, Event]]] = {}
        for record in records:
            parse = self._parsers.get(record.topic)
            if parse is None:
                dead.append(DeadLetter(record, f"unexpected topic {record.topic}"))
                continue
            try:
                event = parse(record.value, self.settings.store, wall)
            except Rejected as exc:
                dead.append(DeadLetter(record, str(exc)))
                continue
            except Exception as exc:  # a parser bug must not kill the worker either
                log.exception(
                    "parser failed on %s:%s@%s", record.topic, record.partition, record.offset
                )
                dead.append(
                    DeadLetter(record, f"internal error while parsing: {type(exc).__name__}")
                )
                continue
            pending.setdefault(event.customer_id, []).append((record, event))
        stats.rejected += len(dead)

        changes: list[tuple[str, bytes, bytes]] = []
        reload = False
        for _attempt in range(MAX_ATTEMPTS):
            if not pending:
                break
            ctx = await self.context(reload)
            attempted = await self._pipeline(
                list(pending),
                partial(self._load_for, pending),
                partial(self._fold_one, pending, ctx),
            )
            retry: set[str] = set()
            reload = False
            for cid, outcome, result in attempted:
                if result is not None and not result.ok:
                    retry.add(cid)
                    stats.conflicts += 1
                    reload = reload or result.reason == "thresholds"
                    continue
                if result is not None and outcome.commit is not None:
                    changes.extend(_published(outcome.commit, result))
                stats.accepted += outcome.accepted
                stats.duplicates += outcome.duplicates
                stats.rejected += len(outcome.dead)
                dead.extend(outcome.dead)
            pending = {cid: pending[cid] for cid in retry}
        else:
            raise RuntimeError(
                f"could not commit {len(pending)} customers after {MAX_ATTEMPTS} tries"
            )
        stats.changes = len(changes)
        await self._publish(changes, dead)
        # accepted and changes were counted inside each commit; these two are at-least-once
        await self.store.add_stats(duplicates=stats.duplicates, rejected=stats.rejected)
        return stats

    def _load_for(
        self, pending: dict[str, list[tuple[Record, Event]]], chunk: list[str]
    ) -> Coroutine[Any, Any, dict[str, Loaded]]:
        return self.store.load({cid: _event_ids(pending, cid) for cid in chunk})

    async def _pipeline(
        self,
        ids: list[str],
        read: Callable[[list[str]], Coroutine[Any, Any, dict[str, State]]],
        fold: Callable[[str, State], StepResult],
    ) -> list[tuple[str, StepResult, CommitResult | None]]:
        """Read, fold and commit each customer once, in chunks of disjoint customers run as
        a pipeline: Redis reads the next chunk and commits the previous one while this
        process folds the current one, so the two work side by side instead of waiting on
        each other. Returns each customer's outcome and commit result (``None`` when
        nothing needed committing)."""
        chunks = [ids[i : i + PIPELINE_CHUNK] for i in range(0, len(ids), PIPELINE_CHUNK)]
        if not chunks:
            return []

        def load(chunk: list[str]) -> asyncio.Task[dict[str, State]]:
            return asyncio.ensure_future(read(chunk))

        tasks: list[asyncio.Task[Any]] = []
        folded: list[tuple[list[tuple[str, StepResult]], asyncio.Task[list[CommitResult]]]] = []
        try:
            loading = load(chunks[0])
            tasks.append(loading)
            for n, chunk in enumerate(chunks):
                loaded = await loading
                if n + 1 < len(chunks):
                    loading = load(chunks[n + 1])
                    tasks.append(loading)
                    await asyncio.sleep(0)  # the request leaves before this chunk is folded
                outcomes = [(cid, fold(cid, loaded[cid])) for cid in chunk]
                commits = [o.commit for _, o in outcomes if o.commit is not None]
                committing = asyncio.ensure_future(self.store.commit(commits))
                tasks.append(committing)
                folded.append((outcomes, committing))
            out: list[tuple[str, StepResult, CommitResult | None]] = []
            for outcomes, committing in folded:
                results = iter(await committing)
                for cid, o in outcomes:
                    out.append((cid, o, None if o.commit is None else next(results)))
            return out
        finally:  # a failed step must not leave the others running unobserved
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    @staticmethod
    def _fold_one(
        pending: dict[str, list[tuple[Record, Event]]],
        ctx: ScoringContext,
        cid: str,
        loaded: Loaded,
    ) -> StepResult:
        return fold(loaded, pending[cid], ctx)

    # ---- re-scoring without input (refresh, clock) -------------------------------------

    async def rescore(
        self,
        customer_ids: Iterable[str],
        cause: str,
        batch: int = 1000,
        before_batch: Callable[[], Awaitable[None]] | None = None,
        standing: bool = False,
    ) -> int:
        """Re-score the given customers against the current context; returns changes made.

        ``standing``: only the thresholds moved since these customers were committed (a
        refresh), so each starts from its standing (``stream.store.commits.Standing``)
        unless the clock or the context needs its full state.
        """
        ids = list(customer_ids)
        made = 0
        for start in range(0, len(ids), batch):
            if before_batch is not None:
                await before_batch()
            chunk = set(ids[start : start + batch])
            lean, full = (chunk, set()) if standing else (set(), chunk)
            reload = True
            changes: list[tuple[str, bytes, bytes]] = []
            for _attempt in range(MAX_ATTEMPTS):
                if not lean and not full:
                    break
                ctx = await self.context(reload=reload)
                if not standing_suffices(ctx):
                    lean, full = set(), lean | full
                stale: set[str] = set()
                retry_lean: set[str] = set()
                reload = False
                if lean:
                    attempted = await self._pipeline(
                        sorted(lean),
                        self.store.standings,
                        partial(_rescore_standing, ctx, cause, stale),
                    )
                    retry_lean, reload = _settle(attempted, changes)
                full |= stale
                retry_full: set[str] = set()
                if full:
                    attempted = await self._pipeline(
                        sorted(full), self._load_whole, partial(_rescore_one, ctx, cause)
                    )
                    retry_full, again = _settle(attempted, changes)
                    reload = reload or again
                lean, full = retry_lean, retry_full
            else:
                raise RuntimeError(f"could not re-score {len(lean | full)} customers")
            await self._publish(changes, [])
            made += len(changes)
        return made

    def _load_whole(self, chunk: list[str]) -> Coroutine[Any, Any, dict[str, Loaded]]:
        return self.store.load({cid: [] for cid in chunk})

    # ---- output -----------------------------------------------------------------------

    async def _publish(
        self, changes: list[tuple[str, bytes, bytes]], dead: list[DeadLetter]
    ) -> None:
        """``changes`` are (customer id, body, outbox id) as committed."""
        messages: list[tuple[str, bytes | None, bytes]] = [
            (self.topics.changes, cid.encode("utf-8"), body) for cid, body, _ in changes
        ]
        messages.extend((self.topics.dlq, d.record.key, d.encode()) for d in dead)
        if messages:
            await self.publisher.publish(messages)
        await self.store.outbox_delete([oid for _, _, oid in changes if oid])

    async def flush_outbox(self, min_age_ms: int = 5_000) -> int:
        """Publish changes a dead process committed but never published (at-least-once)."""
        total = 0
        while True:
            entries = await self.store.outbox_older_than(wall_ms() - min_age_ms)
            if not entries:
                return total
            await self.publisher.publish(
                [(self.topics.changes, cid.encode("utf-8"), body) for _, cid, body in entries]
            )
            await self.store.outbox_delete([eid for eid, _, _ in entries])
            total += len(entries)
