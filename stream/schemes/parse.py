"""The scheme file format: a decoded TOML document in, a validated ``Scheme`` out.

A scheme is a data file so marketers can change segments without code::

    id = "my-scheme"                      # lowercase, digits, '-' or '_'
    name = { en = "My scheme", "zh-TW" = "我的分群" }
    description = { en = "...", "zh-TW" = "..." }   # optional
    buckets = 5                           # the B it is written for (default 5); scores of
                                          # another scoring B are projected (Scheme.project)

    [[rules]]                             # ordered: the first matching rule wins
    id = "champions"                      # snake_case, unique
    name = { en = "Champions", "zh-TW" = "冠軍顧客" }   # both languages required
    description = { en = "...", "zh-TW" = "..." }      # zh-TW optional; a plain string = en
    action = { en = "...", "zh-TW" = "..." }           # suggested action, same shape
    r = [5, 5]                            # score ranges [lo, hi], inclusive, within 1..buckets:
    fm = [4, 5]                           #   r, f, m, i, and fm = (f + m + 1) // 2
    orders = [1, 1]                       # order count (F), inclusive; open-ended: { min = 2 }
    has_orders = true                     # at least one completed order
    has_interactions = false              # at least one interaction

``orders`` is either ``[lo, hi]`` (both inclusive) or a table ``{ min = lo, max = hi }`` where
``min`` defaults to 0 and a missing ``max`` means no upper bound. All conditions of a rule must
hold (AND); a score condition never matches a customer outside that dimension's population
(score ``None``). The last rule must have no conditions (the catch-all), so every customer gets
exactly one segment.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

from stream.core.scheme import CONDITION_FIELDS, SCORE_FIELDS, Range, Scheme, SegmentRule, Text
from stream.schemes.error import Where
from stream.schemes.validate import check_scheme
from stream.validation import expect_bool, expect_int, known_keys

__all__ = ["MAX_BUCKETS", "MIN_BUCKETS", "parse_scheme"]

MIN_BUCKETS, MAX_BUCKETS = 3, 10

RULE_FIELDS: tuple[str, ...] = ("id", "name", "description", "action", *CONDITION_FIELDS)
SCHEME_FIELDS: tuple[str, ...] = ("id", "name", "description", "buckets", "rules")


def parse_scheme(data: Mapping[str, Any], buckets: int, *, source: str = "<scheme>") -> Scheme:
    """Validate a decoded scheme document for ``scoring.buckets = buckets``."""
    scheme_id = data.get("id") if isinstance(data, Mapping) else None
    where = Where(scheme_id if isinstance(scheme_id, str) and scheme_id else source)
    if not isinstance(data, Mapping):
        raise where.error(None, "expected a TOML table at the top level")
    known_keys(data, SCHEME_FIELDS, "", where.error)
    if not isinstance(scheme_id, str):
        raise where.error("id", "missing or not a string")
    written_for = expect_int(
        data.get("buckets", 5), "buckets", where.error, MIN_BUCKETS, MAX_BUCKETS
    )
    expect_int(buckets, "scoring.buckets", where.error, MIN_BUCKETS, MAX_BUCKETS)
    if "name" not in data:
        raise where.error("name", "missing")
    name = _text(data["name"], where, "name")
    description = (
        _text(data["description"], where, "description") if "description" in data else None
    )
    rules_raw = data.get("rules")
    if not isinstance(rules_raw, list) or not rules_raw:
        raise where.error("rules", "expected a non-empty array of tables ([[rules]])")
    rules = tuple(_rule(raw, where.at_rule(j, None)) for j, raw in enumerate(rules_raw))
    check_scheme(scheme_id, name, written_for, rules)
    scored = None if written_for == buckets else buckets  # projected: see Scheme.project
    return Scheme(scheme_id, name, written_for, rules, description, scored)


def _rule(raw: object, where: Where) -> SegmentRule:
    if not isinstance(raw, Mapping):
        raise where.error(None, "expected a table ([[rules]])")
    rule_id = raw.get("id")
    where = where.at_rule(cast(int, where.index), rule_id if isinstance(rule_id, str) else None)
    known_keys(raw, RULE_FIELDS, "", where.error)
    if not isinstance(rule_id, str):
        raise where.error("id", "missing or not a string")
    for required in ("name", "description", "action"):
        if required not in raw:
            raise where.error(required, "missing")
    kwargs: dict[str, Any] = {}
    for dim in SCORE_FIELDS:
        if dim in raw:
            kwargs[dim] = _score_range(raw[dim], where, dim)
    if "orders" in raw:
        kwargs["orders"] = _orders_range(raw["orders"], where)
    for flag in ("has_orders", "has_interactions"):
        if flag in raw:
            kwargs[flag] = expect_bool(raw[flag], flag, where.error)
    return SegmentRule(
        id=rule_id,
        name=_text(raw["name"], where, "name"),
        description=_text(raw["description"], where, "description"),
        action=_text(raw["action"], where, "action"),
        **kwargs,
    )


def _text(raw: object, where: Where, fld: str) -> Text:
    """``{ en = "...", "zh-TW" = "..." }`` or a plain string (English only)."""
    if isinstance(raw, str):
        return Text(raw)
    if not isinstance(raw, Mapping):
        raise where.error(fld, 'expected a table { en = "...", "zh-TW" = "..." } or a string')
    known_keys(raw, ("en", "zh-TW"), fld, where.error)
    for lang in ("en", "zh-TW"):
        value = raw.get(lang)
        if value is not None and (not isinstance(value, str) or not value.strip()):
            raise where.error(f"{fld}.{lang}", "expected a non-empty string")
    if "en" not in raw:
        raise where.error(f"{fld}.en", "missing English text")
    return Text(raw["en"], raw.get("zh-TW"))


def _score_range(raw: object, where: Where, fld: str) -> Range:
    if not (
        isinstance(raw, list)
        and len(raw) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) for v in raw)
    ):
        raise where.error(fld, f"expected [lo, hi] (two integers), got {raw!r}")
    return Range(raw[0], raw[1])


def _orders_range(raw: object, where: Where) -> Range:
    if isinstance(raw, list):
        return _score_range(raw, where, "orders")
    if not isinstance(raw, Mapping) or not raw:
        raise where.error("orders", f"expected [lo, hi] or {{ min = lo, max = hi }}, got {raw!r}")
    known_keys(raw, ("min", "max"), "orders", where.error)
    for key, value in raw.items():
        expect_int(value, f"orders.{key}", where.error)
    return Range(raw.get("min", 0), raw.get("max"))
