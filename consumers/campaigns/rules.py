"""Campaign rules as a typed model: triggers, conditions, variants and webhooks.

Built only by ``consumers.campaigns.rule_file``, which validates a rule file into it; pure.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal

TRIGGERS = ("segment_change", "order")
# churn_risk: 1 when a churn_risk event says the customer is at risk, 0 when it recovered
CHANGE_METRICS: tuple[str, ...] = (
    "orders",
    "monetary",
    "interactions",
    "r",
    "f",
    "m",
    "i",
    "churn_risk",
)
ORDER_METRICS: tuple[str, ...] = ("amount",)
OPERATORS: Mapping[str, Callable[[Decimal, Decimal], bool]] = {
    ">=": operator.ge,
    "<=": operator.le,
    "==": operator.eq,
    "!=": operator.ne,
    ">": operator.gt,
    "<": operator.lt,
}
NO_SEGMENT = ""  # the pattern for a null segment: first assignment (from) or erasure (to)
CONTROL = "control"  # the hold-out arm: recorded, measured, never sent anything
TREATED = "treated"  # the arm of a rule with a hold-out but no variants
DEFAULT_UPLIFT_WINDOW_S = 30 * 86_400.0


class RuleError(ValueError):
    """The rule file is unusable; the message names the file, the rule and the field."""


@dataclass(frozen=True, slots=True)
class Condition:
    """``metric op value``, compared as exact decimals (money never goes through floats)."""

    metric: str
    op: str
    value: Decimal

    def holds(self, actual: Decimal) -> bool:
        return OPERATORS[self.op](actual, self.value)

    def __str__(self) -> str:
        return f"{self.metric} {self.op} {self.value}"


@dataclass(frozen=True, slots=True)
class Variant:
    """One arm of a split: by hash over ``weight``, or by order value (amounts under ``below``)."""

    name: str
    weight: int = 1
    below: Decimal | None = None
    data: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Webhook:
    url: str
    secret: bytes = field(repr=False)
    timeout_s: float = 10.0
    retries: int = 5  # attempts after the first
    backoff_s: float = 0.5  # first retry delay; doubles per attempt, plus jitter
    max_backoff_s: float = 60.0


@dataclass(frozen=True, slots=True)
class ChangeTrigger:
    """A segment change (SPEC section 6); ``None`` means "any" for each filter."""

    from_patterns: tuple[str, ...] | None = None
    to_patterns: tuple[str, ...] | None = None
    causes: frozenset[str] | None = None


@dataclass(frozen=True, slots=True)
class OrderTrigger:
    """A valid ``order_completed`` (SPEC section 2)."""

    first_order: bool = False
    channels: frozenset[str] | None = None


Split = Literal["none", "hash", "order_value"]


@dataclass(frozen=True, slots=True)
class CampaignRule:
    """One campaign: what triggers it, the conditions that must hold, where it is delivered."""

    id: str
    trigger: ChangeTrigger | OrderTrigger
    webhook: Webhook
    when: tuple[Condition, ...] = ()
    cooldown_s: float = 0.0  # per (customer, rule); 0 = none
    max_age_s: float | None = None  # ignore events older than this (back-fills, replays)
    variants: tuple[Variant, ...] = ()
    data: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""
    holdout: Decimal = Decimal(0)  # share of customers held out as the control arm, [0, 1)
    uplift_window_s: float = DEFAULT_UPLIFT_WINDOW_S  # orders counted this long after assignment

    @property
    def measured(self) -> bool:
        """A rule with a hold-out records every assignment and the orders that follow it."""
        return self.holdout > 0

    @property
    def split(self) -> Split:
        if not self.variants:
            return "none"
        return "order_value" if self.variants[0].below is not None else "hash"


@dataclass(frozen=True)
class RuleSet:
    rules: tuple[CampaignRule, ...]
    source: str = "<rules>"

    @property
    def change_rules(self) -> tuple[CampaignRule, ...]:
        return tuple(r for r in self.rules if isinstance(r.trigger, ChangeTrigger))

    @property
    def order_rules(self) -> tuple[CampaignRule, ...]:
        return tuple(r for r in self.rules if isinstance(r.trigger, OrderTrigger))

    @property
    def needs_first_order(self) -> bool:
        return any(
            isinstance(r.trigger, OrderTrigger) and r.trigger.first_order for r in self.rules
        )
