"""Which rules an incoming event fires: pure functions from (rules, event, now) to triggers.

Cooldowns, recorded variants and past deliveries live in Redis and are the dispatcher's
business; here only the event itself decides.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from fnmatch import fnmatchcase
from typing import Any

import orjson

from consumers.campaigns.rules import (
    CHANGE_METRICS,
    NO_SEGMENT,
    CampaignRule,
    ChangeTrigger,
    Condition,
    OrderTrigger,
)
from stream.core.events import OrderEvent
from stream.core.money import format_minor


class Malformed(ValueError):
    """A segment-change record that is not a SPEC section 6 event (never ours to fix)."""


@dataclass(frozen=True, slots=True)
class Change:
    """The fields of a segment-change event that rules look at, plus the event as received."""

    event_id: str
    customer_id: str
    from_segment: str | None
    to_segment: str | None
    cause: str
    at_ms: int | None
    values: Mapping[str, Decimal]  # metrics and scores usable in ``when``
    doc: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Trigger:
    """One rule fired by one event, before cooldown and past deliveries are consulted."""

    rule: CampaignRule
    customer_id: str
    event_id: str
    event: Mapping[str, Any]  # becomes the webhook body
    amount: Decimal | None = None  # the order value, for order-value splits
    # when the triggering event happened (the change's ``at``, the order's time), epoch ms:
    # read again after a replay it is the same, unlike the clock when it is handled
    at_ms: int | None = None


def _ms(text: Any) -> int | None:
    if not isinstance(text, str):
        return None
    try:
        moment = datetime.fromisoformat(text.upper())
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def _number(value: Any) -> Decimal | None:
    if isinstance(value, bool) or not isinstance(value, int | str):
        return None  # floats never appear in our events; refusing them keeps money exact
    try:
        number = Decimal(value)
    except InvalidOperation:
        return None
    return number if number.is_finite() else None


def decode_change(raw: bytes) -> Change:
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise Malformed("not valid JSON") from None
    if not isinstance(doc, dict):
        raise Malformed("not a JSON object")
    for name in ("event_id", "customer_id", "cause"):
        if not isinstance(doc.get(name), str) or not doc[name]:
            raise Malformed(f"missing or empty {name}")
    for name in ("from", "to"):
        if doc.get(name) is not None and not isinstance(doc[name], str):
            raise Malformed(f"{name} must be a segment id or null")
    metrics = doc.get("metrics")
    metrics = metrics if isinstance(metrics, dict) else {}
    scores = doc.get("scores")
    scores = scores if isinstance(scores, dict) else {}
    values: dict[str, Decimal] = {}
    for name in CHANGE_METRICS:
        number = _number(metrics.get(name, scores.get(name)))
        if number is not None:
            values[name] = number
    churn = doc.get("churn")
    if isinstance(churn, dict) and isinstance(churn.get("at_risk"), bool):
        values["churn_risk"] = Decimal(int(churn["at_risk"]))
    return Change(
        event_id=doc["event_id"],
        customer_id=doc["customer_id"],
        from_segment=doc.get("from"),
        to_segment=doc.get("to"),
        cause=doc["cause"],
        at_ms=_ms(doc.get("at")),
        values=values,
        doc=doc,
    )


def segment_matches(segment: str | None, patterns: Sequence[str] | None) -> bool:
    """``None`` patterns match anything; ``''`` matches only a null segment; else fnmatch."""
    if patterns is None:
        return True
    if segment is None:
        return NO_SEGMENT in patterns
    return any(p != NO_SEGMENT and fnmatchcase(segment, p) for p in patterns)


def cause_matches(cause: str, causes: frozenset[str] | None) -> bool:
    """No ``cause`` filter means any segment move; churn_risk events keep the segment, so
    only rules that name them explicitly see them."""
    if causes is None:
        return cause != "churn_risk"
    return cause in causes


def conditions_hold(conditions: Sequence[Condition], values: Mapping[str, Decimal]) -> bool:
    """Every condition holds; a metric the event lacks fails its condition."""
    return all(c.metric in values and c.holds(values[c.metric]) for c in conditions)


def fresh_enough(rule: CampaignRule, occurred_ms: int | None, now_ms: int) -> bool:
    if rule.max_age_s is None:
        return True
    return occurred_ms is not None and now_ms - occurred_ms <= rule.max_age_s * 1000


def change_triggers(rules: Sequence[CampaignRule], change: Change, now_ms: int) -> list[Trigger]:
    fired: list[Trigger] = []
    for rule in rules:
        trigger = rule.trigger
        if not isinstance(trigger, ChangeTrigger):
            continue
        if (
            segment_matches(change.from_segment, trigger.from_patterns)
            and segment_matches(change.to_segment, trigger.to_patterns)
            and cause_matches(change.cause, trigger.causes)
            and conditions_hold(rule.when, change.values)
            and fresh_enough(rule, change.at_ms, now_ms)
        ):
            fired.append(
                Trigger(rule, change.customer_id, change.event_id, change.doc, at_ms=change.at_ms)
            )
    return fired


def order_triggers(
    rules: Sequence[CampaignRule],
    order: OrderEvent,
    doc: Mapping[str, Any],
    *,
    first: bool,
    decimals: int,
    now_ms: int,
) -> list[Trigger]:
    """Rules fired by a valid order; refunds fire nothing (only completions are purchases)."""
    if order.refund:
        return []
    amount = Decimal(format_minor(order.amount, decimals))
    fired: list[Trigger] = []
    for rule in rules:
        trigger = rule.trigger
        if not isinstance(trigger, OrderTrigger):
            continue
        if (
            (first or not trigger.first_order)
            and (trigger.channels is None or order.channel in trigger.channels)
            and conditions_hold(rule.when, {"amount": amount})
            and fresh_enough(rule, order.occurred_at, now_ms)
        ):
            fired.append(
                Trigger(rule, order.customer_id, order.event_id, doc, amount, order.occurred_at)
            )
    return fired
