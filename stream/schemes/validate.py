"""What makes a scheme sound beyond its file's syntax: valid ids and texts, ranges within the
scores, no self-contradiction, a last rule that catches everyone, and no rule that no customer
can reach. A mistake here would silently mislabel customers, so loading stops instead.

Runs once per load, in plain Python: the reachability check enumerates classes of profiles, a
few thousand mask ANDs even at 10 buckets.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from itertools import product

from stream.core.scheme import SCORE_FIELDS, RuleMasks, SegmentRule, Text, rule_masks
from stream.schemes.error import Where

__all__ = ["check_scheme"]

_RULE_ID = re.compile(r"[a-z][a-z0-9]*(?:_[a-z0-9]+)*\Z")
_SCHEME_ID = re.compile(r"[a-z][a-z0-9]*(?:[-_][a-z0-9]+)*\Z")
_MAX_ID_LEN = 64


def check_scheme(scheme_id: str, name: Text, buckets: int, rules: tuple[SegmentRule, ...]) -> None:
    """Raise ``SchemeError`` for the first problem, naming the scheme, the rule and the field."""
    where = Where(scheme_id)
    if not _SCHEME_ID.match(scheme_id):
        raise where.error("id", "must be lowercase letters/digits separated by '-' or '_'")
    if not name.en or not name.zh_tw:
        lang = "en" if not name.en else "zh-TW"
        raise where.error(f"name.{lang}", "missing display name")
    seen: dict[str, int] = {}
    for index, rule in enumerate(rules):
        _check_rule(rule, where.at_rule(index, rule.id), buckets, seen)
        seen[rule.id] = index
    _check_catch_all(rules, where)
    _check_reachable(rules, rule_masks(rules, buckets), buckets, where)


def _check_rule(rule: SegmentRule, where: Where, buckets: int, seen: Mapping[str, int]) -> None:
    """Per-rule checks: id, display names, range bounds and self-contradictions."""
    if not _RULE_ID.match(rule.id) or len(rule.id) > _MAX_ID_LEN:
        raise where.error("id", "must be snake_case (a-z, 0-9, single '_'), at most 64 chars")
    if rule.id in seen:
        raise where.error("id", f"duplicate id, already used by rule #{seen[rule.id] + 1}")
    for attr, text in (("name", rule.name), ("description", rule.description)):
        if not text.en:
            raise where.error(f"{attr}.en", "missing English text")
    if not rule.name.zh_tw:
        raise where.error("name.zh-TW", "missing Traditional Chinese display name")
    if not rule.action.en:
        raise where.error("action.en", "missing suggested action")
    for dim in SCORE_FIELDS:
        cond = rule.score_range(dim)
        if cond is None:
            continue
        if cond.hi is None or cond.lo > cond.hi:
            raise where.error(dim, f"impossible range [{cond.lo}, {cond.hi}]: need lo <= hi")
        if cond.lo < 1 or cond.hi > buckets:
            raise where.error(
                dim, f"range [{cond.lo}, {cond.hi}] is outside the scores 1..{buckets}"
            )
    if rule.orders is not None:
        lo, hi = rule.orders.lo, rule.orders.hi
        if lo < 0:
            raise where.error("orders", f"minimum {lo} is negative")
        if hi is not None and lo > hi:
            raise where.error("orders", f"impossible range [{lo}, {hi}]: need min <= max")
    if rule.has_orders is False:
        for dim in ("r", "f", "m", "fm"):
            if rule.score_range(dim) is not None:
                raise where.error(
                    dim, "contradiction: customers without orders have no R/F/M score"
                )
        if rule.orders is not None and rule.orders.lo > 0:
            raise where.error("orders", "contradiction: has_orders = false means 0 orders")
    if rule.has_interactions is False and rule.i is not None:
        raise where.error("i", "contradiction: customers without interactions have no I score")


def _check_catch_all(rules: tuple[SegmentRule, ...], where: Where) -> None:
    """The last rule, and only it, must have no conditions so that classify is total."""
    last = len(rules) - 1
    for j, rule in enumerate(rules[:-1]):
        if rule.is_catch_all:
            later = ", ".join(repr(r.id) for r in rules[j + 1 :])
            raise where.at_rule(j, rule.id).error(
                "rules",
                f"has no conditions (a catch-all) but is not the last rule; "
                f"later rule(s) {later} could never match",
            )
    if not rules[last].is_catch_all:
        fields = ", ".join(rules[last].conditions)
        raise where.at_rule(last, rules[last].id).error(
            fields,
            f"missing catch-all: the last rule must have no conditions, but it has {fields}",
        )


def _check_reachable(
    rules: tuple[SegmentRule, ...], masks: RuleMasks, buckets: int, where: Where
) -> None:
    """Reject rules no customer can reach, by enumerating every distinct profile class.

    The space is the consistent profiles: r/f/m all scored iff the customer has orders
    (orders = 0 otherwise), i scored iff it has interactions, and one representative per
    orders class. Products of masks are deduplicated at each step, so this stays small.
    """
    b = buckets
    ordered = {masks.has_orders[1] & masks.r[r] for r in range(1, b + 1)}
    pairs = {masks.fm[f, m] for f, m in product(range(1, b + 1), repeat=2)}
    ordered = {x & y for x in ordered for y in pairs}
    ordered = {x & y for x in ordered for y in masks.orders_classes}
    no_orders = masks.has_orders[0] & masks.r[None] & masks.fm[None, None]
    no_orders &= masks.orders_classes[0]
    engagement = {masks.has_interactions[0] & masks.i[None]}
    engagement |= {masks.has_interactions[1] & masks.i[i] for i in range(1, b + 1)}
    space = {x & y for x in (*ordered, no_orders) for y in engagement}

    reached = matched = 0
    for mask in space:
        reached |= mask & -mask
        matched |= mask
    for j, rule in enumerate(rules):
        bit = 1 << j
        if reached & bit:
            continue
        everyone = next((k for k in range(j) if all(m >> k & 1 for m in space)), None)
        if rule.is_catch_all and everyone is not None:
            # Nothing reaches the catch-all: blame the first rule that takes everyone.
            k = everyone
            blamed = rules[k]
            fields = ", ".join(blamed.conditions)
            raise where.at_rule(k, blamed.id).error(
                fields,
                f"conditions {fields} hold for every customer, so no later rule (not even "
                f"the catch-all {rule.id!r}) can ever match",
            )
        here = where.at_rule(j, rule.id)
        fields = ", ".join(rule.conditions)
        if not matched & bit:
            raise here.error(
                fields, f"conditions {fields} can never hold together for any customer"
            )
        takers = 0
        for mask in space:
            if mask & bit:
                takers |= mask & -mask
        names = ", ".join(repr(r.id) for k, r in enumerate(rules) if takers >> k & 1)
        raise here.error(
            fields,
            f"shadowed: every customer matching its conditions ({fields}) is already "
            f"taken by earlier rule(s) {names}, so it can never match",
        )
