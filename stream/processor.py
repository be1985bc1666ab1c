"""One batch of input records -> committed customer transitions -> changes and dead letters.

This is the imperative shell around the pure core (events, customer, rescore): it owns
the order of I/O (load, compute, commit, publish) and the retry on a lost race, and it
knows nothing of Faust, so the benchmark's raw baseline and the CLI reuse it as is.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol

import orjson

from stream.changes import SegmentChange
from stream.config import Settings
from stream.customer import (
    Customer,
    Duplicate,
    apply_interaction,
    apply_order,
    expire,
    metrics,
    next_due,
)
from stream.events import (
    ErasureEvent,
    Event,
    InteractionEvent,
    OrderEvent,
    Rejected,
    parse_erasure,
    parse_interaction,
    parse_order,
)
from stream.prediction import Model
from stream.rescore import ScoringContext, assess_churn, fixed_thresholds, rescore
from stream.scoring import Thresholds, next_recency_move
from stream.segments import Scheme
from stream.store.commits import Commit, CommitResult, Loaded
from stream.store.redis_store import RedisStore
from stream.topics import Topics

log = logging.getLogger("rfm.processor")
MAX_ATTEMPTS = 20
# customers per pipeline step: small enough that Redis and Python overlap, big enough that
# a script call's fixed cost stays small
PIPELINE_CHUNK = 250


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True, slots=True)
class Record:
    """A Kafka record as the processor sees it (transport-neutral)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes


@dataclass(frozen=True, slots=True)
class DeadLetter:
    record: Record
    error: str

    def encode(self) -> bytes:
        try:
            payload, encoding = self.record.value.decode("utf-8"), "utf-8"
        except UnicodeDecodeError:
            payload, encoding = base64.b64encode(self.record.value).decode("ascii"), "base64"
        return orjson.dumps(
            {
                "topic": self.record.topic,
                "partition": self.record.partition,
                "offset": self.record.offset,
                "error": self.error,
                "payload": payload,
                "payload_encoding": encoding,
            }
        )


class Publisher(Protocol):
    """Sends records and returns once the broker has acknowledged every one of them."""

    async def publish(self, messages: Sequence[tuple[str, bytes | None, bytes]]) -> None: ...


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


@dataclass
class _Outcome:
    """What one customer's events did in one attempt; counted only once committed."""

    commit: Commit | None = None
    accepted: int = 0
    duplicates: int = 0
    dead: list[DeadLetter] = field(default_factory=list)


CAUSE_OF = {OrderEvent: "order", InteractionEvent: "interaction", ErasureEvent: "erasure"}


def _published(commit: Commit, result: CommitResult) -> list[tuple[str, bytes, bytes]]:
    cid = commit.customer.customer_id
    return [(cid, body, oid) for body, oid in zip(commit.bodies, result.outbox_ids, strict=True)]


def _event_ids(pending: dict[str, list[tuple[Record, Event]]], cid: str) -> list[str]:
    """The ids whose dedupe marks to read: an erasure has none."""
    return [e.event_id for _, e in pending[cid] if not isinstance(e, ErasureEvent)]


class Processor:
    def __init__(
        self, settings: Settings, store: RedisStore, scheme: Scheme, publisher: Publisher
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

    async def context(self, batch_clock: int = 0, reload: bool = False) -> ScoringContext:
        wall = wall_ms()
        if self.settings.scoring.clock == "event":
            now = max(batch_clock, await self.store.event_clock())
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

    def _commit_for(
        self,
        loaded: Loaded,
        ctx: ScoringContext,
        cause: str,
        clock: int | None = None,
        erase: bool = False,
        forget: bool = False,
    ) -> Commit:
        c = loaded.customer
        seg_before = c.segment
        window = self.settings.window_ms
        change: SegmentChange | None
        churn: SegmentChange | None = None
        if erase:
            change = None
            if seg_before is not None:
                change = SegmentChange(
                    customer_id=c.customer_id,
                    seq=c.seq + 1,
                    from_segment=seg_before,
                    to_segment=None,
                    scores={"r": None, "f": None, "m": None, "i": None},
                    metrics={},
                    cause="erasure",
                    thresholds_version=ctx.thresholds.version,
                    scheme=self.scheme.id,
                    at=ctx.wall,
                )
            index: dict[str, int | None] = {}
            due = None
        else:
            expire(c, window, ctx.now)
            m = metrics(c, window, ctx.now)
            change = rescore(c, ctx, cause, m)
            c.tally = (m.orders, m.monetary)
            index = {
                "r": m.last_order_at,
                "f": m.orders if c.has_orders else None,
                "m": m.monetary if c.has_orders else None,
                "i": m.interactions if c.has_interactions else None,
            }
            churn, at_risk_from = assess_churn(c, ctx)
            dues = [next_due(c, window), at_risk_from]
            if self.settings.scoring.mode == "fixed" and c.last_order_at is not None:
                dues.append(
                    next_recency_move(c.last_order_at, ctx.now, ctx.thresholds.for_dim("r"))
                )
            due = min((d for d in dues if d is not None), default=None)
        return Commit(
            customer=c,
            before=loaded.before,
            segment_before=seg_before,
            thresholds_version=ctx.thresholds.version,
            index=index,
            due=due,
            changes=[ch for ch in (change, churn) if ch is not None],
            clock=clock,
            erase=erase,
            forget=forget,
            check_thresholds=self.settings.scoring.mode == "quantile",
            model_version=self._fenced_model_version(ctx),
        )

    def _fenced_model_version(self, ctx: ScoringContext) -> int | None:
        """With churn events on, every commit is fenced on the model it was judged against,
        including "none yet" (0): a flag set by a newer model is never cleared by an older view."""
        if self.settings.prediction.churn_threshold <= 0:
            return None
        return ctx.model.version if ctx.model is not None else 0

    # ---- input batches ------------------------------------------------------------------

    async def process(self, records: Sequence[Record]) -> BatchStats:
        """Apply a batch; returns only after changes and dead letters are acknowledged."""
        stats = BatchStats()
        wall = wall_ms()
        dead: list[DeadLetter] = []
        pending: dict[str, list[tuple[Record, Event]]] = {}
        batch_clock = 0
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
            if not isinstance(event, ErasureEvent):
                batch_clock = max(batch_clock, event.occurred_at)
        stats.rejected += len(dead)

        changes: list[tuple[str, bytes, bytes]] = []
        reload = False
        for _attempt in range(MAX_ATTEMPTS):
            if not pending:
                break
            ctx = await self.context(batch_clock, reload)
            attempted = await self._pipeline(
                list(pending),
                partial(_event_ids, pending),
                partial(self._fold_one, pending, ctx, batch_clock),
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

    async def _pipeline(
        self,
        ids: list[str],
        wanted: Callable[[str], list[str]],
        fold: Callable[[str, Loaded], _Outcome],
    ) -> list[tuple[str, _Outcome, CommitResult | None]]:
        """Load, fold and commit each customer once, in chunks of disjoint customers run as
        a pipeline: Redis loads the next chunk and commits the previous one while this
        process folds the current one, so the two work side by side instead of waiting on
        each other. ``wanted(cid)``: the event ids whose dedupe marks to read. Returns each
        customer's outcome and commit result (``None`` when nothing needed committing)."""
        chunks = [ids[i : i + PIPELINE_CHUNK] for i in range(0, len(ids), PIPELINE_CHUNK)]
        if not chunks:
            return []

        def load(chunk: list[str]) -> asyncio.Task[dict[str, Loaded]]:
            return asyncio.ensure_future(self.store.load({cid: wanted(cid) for cid in chunk}))

        tasks: list[asyncio.Task[Any]] = []
        folded: list[tuple[list[tuple[str, _Outcome]], asyncio.Task[list[CommitResult]]]] = []
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
            out: list[tuple[str, _Outcome, CommitResult | None]] = []
            for outcomes, committing in folded:
                results = iter(await committing)
                for cid, o in outcomes:
                    out.append((cid, o, None if o.commit is None else next(results)))
            return out
        finally:  # a failed step must not leave the others running unobserved
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def _fold_one(
        self,
        pending: dict[str, list[tuple[Record, Event]]],
        ctx: ScoringContext,
        batch_clock: int,
        cid: str,
        loaded: Loaded,
    ) -> _Outcome:
        return self._fold(loaded, pending[cid], ctx, batch_clock)

    def _fold(
        self,
        loaded: Loaded,
        items: list[tuple[Record, Event]],
        ctx: ScoringContext,
        batch_clock: int,
    ) -> _Outcome:
        out = _Outcome()
        c = loaded.customer
        window = self.settings.window_ms
        cause = None
        erased = False
        for record, event in items:
            try:
                if isinstance(event, OrderEvent):
                    apply_order(c, event, window, ctx.now)
                    cause = "refund" if event.refund else "order"
                elif isinstance(event, InteractionEvent):
                    weight = self.settings.interaction_weights[event.kind]
                    apply_interaction(c, event, weight, window, ctx.now)
                    cause = "interaction"
                else:
                    cause = "erasure"
                    erased = True
                    c = Customer(
                        customer_id=c.customer_id, segment=c.segment, seq=c.seq, version=c.version
                    )
                    loaded = Loaded(c, loaded.before)
                out.accepted += 1
            except Duplicate:
                out.duplicates += 1
            except Rejected as exc:
                out.dead.append(DeadLetter(record, str(exc)))
        if cause is None:
            return out
        clock = batch_clock if self.settings.scoring.clock == "event" else None
        if cause == "erasure" and not c.exists:
            out.commit = self._commit_for(loaded, ctx, cause, clock, erase=True)
        else:
            out.commit = self._commit_for(loaded, ctx, cause, clock, forget=erased)
        out.commit.accepted = out.accepted
        return out

    # ---- re-scoring without input (refresh, clock) -------------------------------------

    def _rescored(self, ctx: ScoringContext, cause: str, _cid: str, loaded: Loaded) -> _Outcome:
        """A stored customer re-scored as is; one that no longer exists needs nothing."""
        if not loaded.customer.exists:
            return _Outcome()
        return _Outcome(commit=self._commit_for(loaded, ctx, cause))

    async def rescore(
        self,
        customer_ids: Iterable[str],
        cause: str,
        batch: int = 1000,
        before_batch: Callable[[], Awaitable[None]] | None = None,
    ) -> int:
        """Re-score the given customers against the current context; returns changes made."""
        ids = list(customer_ids)
        made = 0
        for start in range(0, len(ids), batch):
            if before_batch is not None:
                await before_batch()
            pending = set(ids[start : start + batch])
            reload = True
            changes: list[tuple[str, bytes, bytes]] = []
            for _attempt in range(MAX_ATTEMPTS):
                if not pending:
                    break
                ctx = await self.context(reload=reload)
                attempted = await self._pipeline(
                    sorted(pending),
                    lambda _cid: [],
                    partial(self._rescored, ctx, cause),
                )
                retry = set()
                reload = False
                for cid, outcome, result in attempted:
                    if result is None or outcome.commit is None:
                        continue
                    if not result.ok:
                        retry.add(cid)
                        reload = reload or result.reason == "thresholds"
                    else:
                        changes.extend(_published(outcome.commit, result))
                pending = retry
            else:
                raise RuntimeError(f"could not re-score {len(pending)} customers")
            await self._publish(changes, [])
            made += len(changes)
        return made

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
