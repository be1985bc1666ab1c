"""One customer's step: its events of a batch (or a re-score) -> the commit to make. Pure.

Between the load and the commit the processor does nothing else per customer, so this is
the per-customer half of ``stream.shell.processor`` with the I/O taken out: what a customer's
events do to it, its new scores and index entries, when the clock next matters to it, and
the change events to publish once the commit holds.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass

import orjson

from stream.core.changes import SegmentChange
from stream.core.customer import (
    Customer,
    Duplicate,
    Metrics,
    apply_interaction,
    apply_order,
    expire,
    metrics,
    next_due,
)
from stream.core.events import ErasureEvent, Event, OrderEvent, Rejected
from stream.core.rescore import ScoringContext, assess_churn, rescore
from stream.core.scoring import next_recency_move
from stream.store.commits import Commit, Loaded, Standing


@dataclass(frozen=True, slots=True, init=False)
class Record:
    """A Kafka record as the processor sees it (transport-neutral)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    # the record's Kafka timestamp, epoch ms: kept in the log, so a replay reads the same
    # value, and the ``at`` of the change it causes. None (a record made in process, or
    # a broker that gave none): the batch's wall clock stands in.
    timestamp: int | None

    def __init__(
        self,
        topic: str,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes,
        timestamp: int | None = None,
    ) -> None:
        # written out for mypyc (see stream.core.customer); frozen: hence object.__setattr__
        object.__setattr__(self, "topic", topic)
        object.__setattr__(self, "partition", partition)
        object.__setattr__(self, "offset", offset)
        object.__setattr__(self, "key", key)
        object.__setattr__(self, "value", value)
        object.__setattr__(self, "timestamp", timestamp)


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


@dataclass(init=False)
class StepResult:
    """What one customer's events did in one attempt; counted only once committed."""

    commit: Commit | None
    accepted: int
    duplicates: int
    dead: list[DeadLetter]

    def __init__(
        self,
        commit: Commit | None = None,
        accepted: int = 0,
        duplicates: int = 0,
        dead: list[DeadLetter] | None = None,
    ) -> None:  # written out so that mypyc compiles it (see stream.core.customer)
        self.commit = commit
        self.accepted = accepted
        self.duplicates = duplicates
        self.dead = [] if dead is None else dead


def fenced_model_version(ctx: ScoringContext) -> int | None:
    """With churn events on, every commit is fenced on the model it was judged against,
    including "none yet" (0): a flag set by a newer model is never cleared by an older view."""
    if ctx.settings.prediction.churn_threshold <= 0:
        return None
    return ctx.model.version if ctx.model is not None else 0


def commit_for(
    loaded: Loaded,
    ctx: ScoringContext,
    cause: str,
    erase: bool = False,
) -> Commit:
    """The customer as it now stands, scored against ``ctx``: its commit."""
    c = loaded.customer
    if erase:
        changes = [] if c.segment is None else [erasure_change(c, ctx, ctx.wall)]
        return _erased(loaded, ctx, c.segment, changes, None)
    expire(c, ctx.settings.window_ms, ctx.now)
    m = metrics(c, ctx.settings.window_ms, ctx.now)
    seg_before = c.segment
    change = rescore(c, ctx, cause, m)
    return _settled(loaded, ctx, m, seg_before, [] if change is None else [change], None, False)


def erasure_change(c: Customer, ctx: ScoringContext, at: int) -> SegmentChange:
    """The change an erasure makes to a customer that has a segment: it leaves it."""
    return SegmentChange(
        customer_id=c.customer_id,
        seq=c.seq + 1,
        from_segment=c.segment,
        to_segment=None,
        scores={"r": None, "f": None, "m": None, "i": None},
        metrics={},
        cause="erasure",
        thresholds_version=ctx.thresholds.version,
        scheme=ctx.scheme.id,
        at=at,
        scores_before=c.scores.as_dict(),
    )


def _erased(
    loaded: Loaded,
    ctx: ScoringContext,
    seg_before: str | None,
    changes: list[SegmentChange],
    clock: int | None,
) -> Commit:
    """The commit that deletes the customer (``seg_before``: its stored segment) and
    publishes ``changes``."""
    return Commit(
        customer=loaded.customer,
        before=loaded.before,
        segment_before=seg_before,
        thresholds_version=ctx.thresholds.version,
        index={},
        due=None,
        changes=changes,
        clock=clock,
        erase=True,
        check_thresholds=ctx.settings.scoring.mode == "quantile",
        model_version=fenced_model_version(ctx),
    )


def _settled(
    loaded: Loaded,
    ctx: ScoringContext,
    m: Metrics,
    seg_before: str | None,
    changes: list[SegmentChange],
    clock: int | None,
    forget: bool,
) -> Commit:
    """The commit of a customer already scored (``m``: its metrics at ``ctx.now``): its
    index entries, churn flag and when the clock next matters to it."""
    c = loaded.customer
    settings = ctx.settings
    window = settings.window_ms
    c.tally = (m.orders, m.monetary)
    index: dict[str, int | None] = {
        "r": m.last_order_at,
        "f": m.orders if c.has_orders else None,
        "m": m.monetary if c.has_orders else None,
        "i": m.interactions if c.has_interactions else None,
    }
    churn, at_risk_from = assess_churn(c, ctx)
    if churn is not None:
        changes.append(churn)
    dues = [next_due(c, window), at_risk_from]
    if settings.scoring.mode == "fixed" and c.last_order_at is not None:
        dues.append(next_recency_move(c.last_order_at, ctx.now, ctx.thresholds.for_dim("r")))
    if c.new_events:
        expires = ctx.wall + settings.store.dedupe_window_ms
        for event_id in c.new_events:
            c.marks[event_id] = expires
    if c.marks and settings.scoring.clock == "wall":
        # the clock sweep then drops the marks of a customer who went quiet; due times
        # run on the event clock otherwise, and marks on the wall's
        dues.append(min(c.marks.values()))
    return Commit(
        customer=c,
        before=loaded.before,
        segment_before=seg_before,
        thresholds_version=ctx.thresholds.version,
        index=index,
        due=min((d for d in dues if d is not None), default=None),
        changes=changes,
        clock=clock,
        forget=forget,
        check_thresholds=settings.scoring.mode == "quantile",
        model_version=fenced_model_version(ctx),
    )


def fold(loaded: Loaded, items: list[tuple[Record, Event]], ctx: ScoringContext) -> StepResult:
    """Apply a customer's events of one batch in order; a duplicate or a rejected event
    changes nothing and the rest still apply.

    Each accepted event is scored as it lands, so the changes (one per event that moves
    the customer, ``at`` its record's timestamp) are those that one event per batch would
    give: a replay that groups the events otherwise re-derives the same bytes. On the
    event clock an event is scored at the highest ``occurred_at`` applied so far, its own
    included (the store's clock when the batch began, then the customer's events)."""
    out = StepResult()
    c = loaded.customer
    seg_before = c.segment
    window = ctx.settings.window_ms
    on_event_clock = ctx.settings.scoring.clock == "event"
    changes: list[SegmentChange] = []
    m: Metrics | None = None
    clock: int | None = None  # the highest occurred_at accepted here (event clock only)
    expired_at: int | None = None  # the clock ``c`` was last expired at here
    erased = False
    for record, event in items:
        at = ctx.wall if record.timestamp is None else record.timestamp
        if isinstance(event, ErasureEvent):
            out.accepted += 1
            erased = True
            if c.segment is not None:
                changes.append(erasure_change(c, ctx, at))
            # as the store leaves an erased customer: nothing of it, its numbering anew
            c = Customer(customer_id=c.customer_id, version=c.version)
            loaded = Loaded(c, loaded.before)
            m = expired_at = None
            continue
        now = ctx.now
        if on_event_clock and event.occurred_at > now:
            now = event.occurred_at
        try:
            if isinstance(event, OrderEvent):
                apply_order(c, event, window, now)
                cause = "refund" if event.refund else "order"
            else:
                weight = ctx.settings.interaction_weights[event.kind]
                apply_interaction(c, event, weight, window, now)
                cause = "interaction"
        except Duplicate:
            out.duplicates += 1
            continue
        except Rejected as exc:
            out.dead.append(DeadLetter(record, str(exc)))
            continue
        out.accepted += 1
        if now != ctx.now:
            ctx = ctx.at_clock(now)
            clock = now
        if expired_at != now:  # as the commit of a batch that ended here would
            expire(c, window, now)
            expired_at = now
        m = metrics(c, window, now)
        change = rescore(c, ctx, cause, m, at, event.event_id)
        if change is not None:
            changes.append(change)
    if not out.accepted:
        return out
    if m is None:  # erased, and nothing since
        out.commit = _erased(loaded, ctx, seg_before, changes, clock)
    else:
        out.commit = _settled(loaded, ctx, m, seg_before, changes, clock, erased)
    out.commit.accepted = out.accepted
    return out


def rescored(ctx: ScoringContext, cause: str, loaded: Loaded) -> StepResult:
    """A stored customer re-scored as is; one that no longer exists needs nothing."""
    if not loaded.customer.exists:
        return StepResult()
    return StepResult(commit=commit_for(loaded, ctx, cause))


def standing_suffices(ctx: ScoringContext) -> bool:
    """Whether a re-score under ``ctx`` can start from a customer's standing: with quantile
    edges and no churn flag, a score depends on the clock only through the window, and the
    standing's due time says when that next matters."""
    return ctx.settings.scoring.mode == "quantile" and not ctx.churn_on


def rescored_standing(ctx: ScoringContext, cause: str, standing: Standing) -> StepResult | None:
    """A stored customer re-scored from its standing: the same scores, segment and change
    as ``rescored`` gives from its full state, without reading or rewriting its orders or
    index entries. ``None`` when the standing cannot tell (the clock has reached its due
    time, or ``ctx`` scores by more than the indexed metrics): re-score it in full."""
    if not standing_suffices(ctx) or (standing.due is not None and standing.due <= ctx.now):
        return None
    c = standing.customer
    if not c.exists:
        return StepResult()
    segment_before, scores_before, flagged = c.segment, c.scores, c.churn_risk
    change = rescore(c, ctx, cause, standing.metrics)
    c.churn_risk = False  # as ``assess_churn`` leaves it with churn events off
    if change is None and c.scores == scores_before and not flagged:
        return StepResult()  # nothing it stores depends on the thresholds that moved
    return StepResult(
        commit=Commit(
            customer=c,
            before=standing.before,
            segment_before=segment_before,
            thresholds_version=ctx.thresholds.version,
            index=None,
            due=None,
            changes=[] if change is None else [change],
            check_thresholds=True,
            model_version=fenced_model_version(ctx),
        )
    )
