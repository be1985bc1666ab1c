"""Which variant of a rule a customer gets, and whether the customer is held out.

A/B arms come from a stable hash of (rule id, customer id) over the declared weights: SHA-256,
not Python's ``hash()`` (salted per process), so every process, restart and machine agrees
without coordination. Order-value splits pick the band the order amount falls into.

The hold-out reads the next 64 bits of the same digest, so it is as stable as the arms but
independent of them: declaring a hold-out takes the same share from every arm and leaves
the arms' relative shares (and every treated customer's arm) as they were.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from decimal import Decimal

from consumers.campaigns.rules import CampaignRule, Variant


def _digest(rule_id: str, customer_id: str) -> bytes:
    """The rule id is length-prefixed so ``("a", "bc")`` and ``("ab", "c")`` differ."""
    return hashlib.sha256(f"{len(rule_id)}:{rule_id}:{customer_id}".encode()).digest()


def hash_point(rule_id: str, customer_id: str) -> int:
    """A 64-bit point, uniform over customers, fixed for a (rule, customer) pair."""
    return int.from_bytes(_digest(rule_id, customer_id)[:8], "big")


def holdout_point(rule_id: str, customer_id: str) -> int:
    """Another 64-bit point of the same digest, independent of ``hash_point``."""
    return int.from_bytes(_digest(rule_id, customer_id)[8:16], "big")


def held_out(rule: CampaignRule, customer_id: str) -> bool:
    """In the control arm: the point falls in the first ``holdout`` share of the space.

    Exact (the share is a Decimal): raising the share only ever adds customers to it.
    """
    if rule.holdout <= 0:
        return False
    return holdout_point(rule.id, customer_id) < int(rule.holdout * (1 << 64))


def by_hash(variants: Sequence[Variant], rule_id: str, customer_id: str) -> Variant:
    """Arm i owns a share weight_i / sum(weights) of the hash space."""
    total = sum(v.weight for v in variants)
    slot = (hash_point(rule_id, customer_id) * total) >> 64  # 0 <= slot < total, no modulo bias
    for variant in variants:
        if slot < variant.weight:
            return variant
        slot -= variant.weight
    raise AssertionError("unreachable: slot < total weight")


def by_amount(variants: Sequence[Variant], amount: Decimal) -> Variant:
    """The first band whose ``below`` exceeds the amount; the last variant is unbounded."""
    for variant in variants:
        if variant.below is None or amount < variant.below:
            return variant
    raise AssertionError("unreachable: the last variant has no bound")


def choose(rule: CampaignRule, customer_id: str, amount: Decimal | None) -> Variant | None:
    """The variant for this firing, or ``None`` for a rule without variants."""
    split = rule.split
    if split == "hash":
        return by_hash(rule.variants, rule.id, customer_id)
    if split == "order_value":
        if amount is None:
            raise ValueError(f"rule {rule.id!r}: an order-value split needs an order amount")
        return by_amount(rule.variants, amount)
    return None
