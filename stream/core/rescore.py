"""Metrics -> scores -> segment, and the change event when the segment moves. Pure."""

from __future__ import annotations

from dataclasses import dataclass

from stream.clv import model as clv
from stream.clv.prediction import Model, churn_due, summary_of
from stream.config import Settings
from stream.core.changes import SegmentChange, iso_ms
from stream.core.customer import Customer, Metrics, metrics
from stream.core.money import format_minor
from stream.core.scheme import Profile, Scheme
from stream.core.scoring import DAY_MS, Scores, Thresholds, score_above, score_recency_days


@dataclass(frozen=True)
class ScoringContext:
    """Everything a score depends on besides the customer: fixed for one batch."""

    settings: Settings
    thresholds: Thresholds
    scheme: Scheme
    now: int  # the scoring clock (wall or event), epoch ms
    wall: int  # wall clock for the change's ``at``
    model: Model | None = None  # the current CLV model, when churn events are on

    def at_clock(self, now: int) -> ScoringContext:
        """The same context with the scoring clock at ``now`` (an event moved it)."""
        return ScoringContext(
            settings=self.settings,
            thresholds=self.thresholds,
            scheme=self.scheme,
            now=now,
            wall=self.wall,
            model=self.model,
        )

    @property
    def churn_on(self) -> bool:
        return self.model is not None and self.settings.prediction.churn_threshold > 0

    @property
    def window_ms(self) -> int:
        return self.settings.window_ms


def fixed_thresholds(settings: Settings) -> Thresholds:
    """Fixed-mode edges in internal units (M in minor units); version stays 0 forever."""
    edges = dict(settings.scoring.edges)
    if "m" in edges:
        unit = 10**settings.store.currency_decimals
        edges["m"] = tuple(e * unit for e in edges["m"])
    return Thresholds(version=0, edges=edges)


def scores_for(m: Metrics, ctx: ScoringContext) -> Scores:
    t = ctx.thresholds
    r = f = mon = i = None
    if m.last_order_at is not None:
        if ctx.settings.scoring.mode == "fixed":
            days = max(0, (ctx.now - m.last_order_at) // DAY_MS)
            r = score_recency_days(days, t.for_dim("r"), ctx.settings.scoring.buckets)
        else:
            r = score_above(m.last_order_at, t.for_dim("r"))
        f = score_above(m.orders, t.for_dim("f"))
        mon = score_above(m.monetary, t.for_dim("m"))
    if m.last_interaction_at is not None:
        i = score_above(m.interactions, t.for_dim("i"))
    return Scores(r=r, f=f, m=mon, i=i)


def metrics_dict(m: Metrics, decimals: int) -> dict[str, object]:
    return {
        "orders": m.orders,
        "monetary": format_minor(m.monetary, decimals),
        "last_order_at": iso_ms(m.last_order_at),
        "interactions": m.interactions,
    }


def rescore(
    customer: Customer,
    ctx: ScoringContext,
    cause: str,
    m: Metrics | None = None,
    at: int | None = None,
    trigger: str | None = None,
) -> SegmentChange | None:
    """Update the customer's scores and segment; return the change event if it moved.
    ``m``: the customer's metrics at ``ctx.now`` when the caller has them already; ``at``:
    the change's time (default the wall clock); ``trigger``: the input event that moved it."""
    if m is None:
        m = metrics(customer, ctx.window_ms, ctx.now)
    scores = scores_for(m, ctx)
    before = customer.scores
    customer.scores = scores
    if not customer.exists:
        return None
    rule = ctx.scheme.classify(
        Profile(
            r=scores.r,
            f=scores.f,
            m=scores.m,
            i=scores.i,
            orders=m.orders,
            has_orders=customer.has_orders,
            has_interactions=customer.has_interactions,
        )
    )
    if rule.id == customer.segment:
        return None
    change = SegmentChange(
        customer_id=customer.customer_id,
        seq=customer.seq + 1,
        from_segment=customer.segment,
        to_segment=rule.id,
        scores=scores.as_dict(),
        metrics=metrics_dict(m, ctx.settings.store.currency_decimals),
        cause=cause,
        thresholds_version=ctx.thresholds.version,
        scheme=ctx.scheme.id,
        at=ctx.wall if at is None else at,
        trigger_event_id=trigger,
        scores_before=None if customer.segment is None else before.as_dict(),
    )
    customer.seq += 1
    customer.segment = rule.id
    return change


def assess_churn(
    customer: Customer, ctx: ScoringContext
) -> tuple[SegmentChange | None, int | None]:
    """Update the churn flag; return its change event (if it flipped) and, while the
    customer is not at risk, when the clock alone will put it at risk."""
    model = ctx.model
    if not ctx.churn_on or model is None or customer.segment is None:
        customer.churn_risk = False  # churn events off: nothing to announce
        return None, None
    due = churn_due(model, customer, ctx.settings.prediction.churn_threshold)
    at_risk = due is not None and ctx.now >= due
    if at_risk:
        due = None
    if at_risk == customer.churn_risk:
        return None, due
    customer.churn_risk = at_risk
    m = metrics(customer, ctx.window_ms, ctx.now)
    s = summary_of(customer, ctx.now, ctx.settings.store.currency_decimals)
    alive = 1.0 if s is None else float(clv.p_alive(model.purchases, s.x, s.t_x, s.T))
    customer.seq += 1
    change = SegmentChange(
        customer_id=customer.customer_id,
        seq=customer.seq,
        from_segment=customer.segment,
        to_segment=customer.segment,
        scores=customer.scores.as_dict(),
        metrics=metrics_dict(m, ctx.settings.store.currency_decimals),
        cause="churn_risk",
        thresholds_version=ctx.thresholds.version,
        scheme=ctx.scheme.id,
        at=ctx.wall,
        scores_before=customer.scores.as_dict(),  # the flag moved, not the scores
        churn={
            "at_risk": at_risk,
            "p_alive": round(alive, 6),
            "threshold": ctx.settings.prediction.churn_threshold,
            "model_version": model.version,
        },
    )
    return change, due
