"""Segment schemes: ordered first-match rules that turn a customer's scores into a segment.

A scheme is a TOML data file (presets live in ``stream/schemes/``) so marketers can change
segments without code. Loading validates it completely -- including that every rule can
actually be reached -- because a mistake here silently mislabels every customer.
``Scheme.classify`` is on the worker's hot path, so each scheme is compiled into per-dimension
bitmask tables and classification is a handful of table lookups, independent of rule count.

Scheme file format::

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

import re
import tomllib
from bisect import bisect_right
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from itertools import product
from pathlib import Path
from typing import Any, cast

__all__ = [
    "PRESETS",
    "Profile",
    "Range",
    "Rule",
    "Scheme",
    "SchemeError",
    "Text",
    "fm_score",
    "load_scheme",
    "parse_scheme",
    "presets_markdown",
    "scheme_table_markdown",
]

PRESETS: tuple[str, ...] = ("rfm-classic", "rfim", "simple")
MIN_BUCKETS, MAX_BUCKETS = 3, 10

SCORE_FIELDS: tuple[str, ...] = ("r", "f", "m", "i", "fm")
CONDITION_FIELDS: tuple[str, ...] = (*SCORE_FIELDS, "orders", "has_orders", "has_interactions")
RULE_FIELDS: tuple[str, ...] = ("id", "name", "description", "action", *CONDITION_FIELDS)
SCHEME_FIELDS: tuple[str, ...] = ("id", "name", "description", "buckets", "rules")

_RULE_ID = re.compile(r"[a-z][a-z0-9]*(?:_[a-z0-9]+)*\Z")
_SCHEME_ID = re.compile(r"[a-z][a-z0-9]*(?:[-_][a-z0-9]+)*\Z")
_MAX_ID_LEN = 64
# Orders below this are classified by direct indexing, above it by bisection (bounded memory).
_DENSE_ORDERS_LIMIT = 1024


class SchemeError(ValueError):
    """A scheme file is invalid; the message names the scheme, the rule and the field."""

    def __init__(
        self, message: str, *, scheme: str, rule: str | None = None, field: str | None = None
    ) -> None:
        super().__init__(message)
        self.scheme = scheme
        self.rule = rule
        self.field = field


def fm_score(f: int, m: int) -> int:
    """Rounded mean of F and M, the column of the classic R x FM map."""
    return (f + m + 1) // 2


@dataclass(frozen=True, slots=True, init=False)
class Profile:
    """What a rule can see about a customer.

    ``r``/``f``/``m`` are ``None`` when the customer has no completed order and ``i`` is ``None``
    when the customer has no interaction (outside the population, so no score).
    """

    r: int | None
    f: int | None
    m: int | None
    i: int | None
    orders: int
    has_orders: bool
    has_interactions: bool

    def __init__(
        self,
        r: int | None,
        f: int | None,
        m: int | None,
        i: int | None,
        orders: int,
        has_orders: bool,
        has_interactions: bool,
    ) -> None:
        # written out for mypyc (see stream.core.customer); frozen: hence object.__setattr__
        object.__setattr__(self, "r", r)
        object.__setattr__(self, "f", f)
        object.__setattr__(self, "m", m)
        object.__setattr__(self, "i", i)
        object.__setattr__(self, "orders", orders)
        object.__setattr__(self, "has_orders", has_orders)
        object.__setattr__(self, "has_interactions", has_interactions)


@dataclass(frozen=True, slots=True)
class Text:
    """A display string in English with an optional Traditional Chinese variant."""

    en: str
    zh_tw: str | None = None

    def get(self, lang: str = "en") -> str:
        """The text in ``lang`` (``en`` or ``zh-TW``), falling back to English."""
        if lang.replace("_", "-").lower() in ("zh-tw", "zh-hant") and self.zh_tw:
            return self.zh_tw
        return self.en


@dataclass(frozen=True, slots=True)
class Range:
    """Inclusive integer range; ``hi=None`` means unbounded (only for ``orders``)."""

    lo: int
    hi: int | None

    def __contains__(self, value: object) -> bool:
        if not isinstance(value, int):
            return False
        return self.lo <= value and (self.hi is None or value <= self.hi)

    def describe(self, label: str) -> str:
        if self.hi is None:
            return f"{label} ≥ {self.lo}"
        if self.lo == self.hi:
            return f"{label} = {self.lo}"
        if self.lo == 0 and label == "orders":
            return f"{label} ≤ {self.hi}"
        return f"{label} {self.lo}–{self.hi}"


@dataclass(frozen=True, slots=True)
class Rule:
    """One segment: display texts plus the conditions that must all hold (AND)."""

    id: str
    name: Text
    description: Text
    action: Text
    r: Range | None = None
    f: Range | None = None
    m: Range | None = None
    i: Range | None = None
    fm: Range | None = None
    orders: Range | None = None
    has_orders: bool | None = None
    has_interactions: bool | None = None

    @property
    def conditions(self) -> tuple[str, ...]:
        """Names of the fields this rule constrains, in file order."""
        return tuple(c for c in CONDITION_FIELDS if getattr(self, c) is not None)

    @property
    def is_catch_all(self) -> bool:
        return not self.conditions

    def score_range(self, dim: str) -> Range | None:
        """The condition on score ``dim`` (one of r, f, m, i, fm), if any."""
        return cast("Range | None", getattr(self, dim))

    def matches(self, p: Profile) -> bool:
        """Straightforward evaluation (slow path, for tooling; ``Scheme.classify`` is faster)."""
        fm = fm_score(p.f, p.m) if p.f is not None and p.m is not None else None
        for dim, value in (("r", p.r), ("f", p.f), ("m", p.m), ("i", p.i), ("fm", fm)):
            cond = self.score_range(dim)
            if cond is not None and (value is None or value not in cond):
                return False
        if self.orders is not None and p.orders not in self.orders:
            return False
        if self.has_orders is not None and p.has_orders != self.has_orders:
            return False
        return self.has_interactions is None or p.has_interactions == self.has_interactions

    def describe_conditions(self) -> str:
        """Human-readable conditions, e.g. ``R 4–5, FM = 5``."""
        parts: list[str] = []
        for dim in SCORE_FIELDS:
            cond = self.score_range(dim)
            if cond is not None:
                parts.append(cond.describe(dim.upper()))
        if self.orders is not None:
            parts.append(self.orders.describe("orders"))
        if self.has_orders is not None:
            parts.append("has orders" if self.has_orders else "no orders")
        if self.has_interactions is not None:
            parts.append("has interactions" if self.has_interactions else "no interactions")
        return ", ".join(parts) if parts else "anyone else (catch-all)"


class _Where:
    """Builds error messages that always say which scheme, rule and field is wrong."""

    def __init__(self, scheme: str, index: int | None = None, rule: str | None = None) -> None:
        self.scheme, self.index, self.rule = scheme, index, rule

    def at_rule(self, index: int, rule: str | None) -> _Where:
        return _Where(self.scheme, index, rule)

    def error(self, fld: str | None, problem: str) -> SchemeError:
        where = f"scheme {self.scheme!r}"
        if self.index is not None:
            where += f", rule #{self.index + 1}"
            if self.rule is not None:
                where += f" {self.rule!r}"
        if fld is not None:
            where += f", field {fld!r}"
        return SchemeError(f"{where}: {problem}", scheme=self.scheme, rule=self.rule, field=fld)


@dataclass(frozen=True, slots=True)
class Scheme:
    """A validated, compiled scheme. Constructing one validates it (also when built in code)."""

    id: str
    name: Text
    buckets: int
    rules: tuple[Rule, ...]
    description: Text | None = None
    # The B scores are computed with, when it differs from the B the rules are written for:
    # scores are then projected onto the scheme's scale (see ``project``) before matching.
    scored_buckets: int | None = None
    # Compiled lookup tables: bit j of a mask is set when rule j accepts that value.
    _by_id: dict[str, Rule] = field(init=False, repr=False, compare=False)
    _r: dict[int | None, int] = field(init=False, repr=False, compare=False)
    _i: dict[int | None, int] = field(init=False, repr=False, compare=False)
    _fm: dict[tuple[int | None, int | None], int] = field(init=False, repr=False, compare=False)
    _has_orders: tuple[int, int] = field(init=False, repr=False, compare=False)
    _has_interactions: tuple[int, int] = field(init=False, repr=False, compare=False)
    _orders_breaks: tuple[int, ...] = field(init=False, repr=False, compare=False)
    _orders_classes: tuple[int, ...] = field(init=False, repr=False, compare=False)
    _orders_dense: tuple[int, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        where = _Where(self.id)
        if not isinstance(self.id, str) or not _SCHEME_ID.match(self.id):
            raise where.error("id", "must be lowercase letters/digits separated by '-' or '_'")
        if not self.name.en or not self.name.zh_tw:
            lang = "en" if not self.name.en else "zh-TW"
            raise where.error(f"name.{lang}", "missing display name")
        if not MIN_BUCKETS <= self.buckets <= MAX_BUCKETS:
            raise where.error("buckets", f"must be {MIN_BUCKETS}..{MAX_BUCKETS}")
        if not self.rules:
            raise where.error("rules", "at least one rule (the catch-all) is required")
        seen: dict[str, int] = {}
        for index, rule in enumerate(self.rules):
            _check_rule(rule, where.at_rule(index, rule.id), self.buckets, seen)
            seen[rule.id] = index
        _check_catch_all(self.rules, where)
        object.__setattr__(self, "_by_id", {rule.id: rule for rule in self.rules})
        self._compile()
        self._check_reachable(where)
        if self.scored_buckets is not None and self.scored_buckets != self.buckets:
            if not MIN_BUCKETS <= self.scored_buckets <= MAX_BUCKETS:
                raise where.error("scoring.buckets", f"must be {MIN_BUCKETS}..{MAX_BUCKETS}")
            self._project_tables()

    # -- public API ---------------------------------------------------------------------------

    def classify(self, profile: Profile) -> Rule:
        """The first rule matching ``profile`` (always one: the last rule is a catch-all)."""
        p = profile
        try:
            bits = (
                self._r[p.r]
                & self._fm[p.f, p.m]
                & self._i[p.i]
                & self._has_orders[p.has_orders]
                & self._has_interactions[p.has_interactions]
            )
        except (KeyError, IndexError, TypeError):
            raise ValueError(f"profile outside scores 1..{self.buckets}: {p!r}") from None
        o = p.orders
        if 0 <= o < len(self._orders_dense):
            bits &= self._orders_dense[o]
        elif o >= 0:
            bits &= self._orders_classes[bisect_right(self._orders_breaks, o)]
        else:
            raise ValueError(f"profile with negative orders: {p!r}")
        return self.rules[(bits & -bits).bit_length() - 1]

    def project(self, score: int | None) -> int | None:
        """A score on the scoring scale 1..B mapped onto the scheme's 1..buckets scale.

        Linear with round-half-up: ``1 + round((s - 1) * (S - 1) / (B - 1))``, so 1 stays 1
        and B becomes S; identity when the scheme is written for the scoring B.
        """
        b = self.scored_buckets
        if score is None or b is None or b == self.buckets:
            return score
        return 1 + ((score - 1) * (self.buckets - 1) * 2 + (b - 1)) // (2 * (b - 1))

    def projected(self, profile: Profile) -> Profile:
        """``profile`` with every score projected; what the rules are matched against."""
        p = profile
        return Profile(
            self.project(p.r),
            self.project(p.f),
            self.project(p.m),
            self.project(p.i),
            p.orders,
            p.has_orders,
            p.has_interactions,
        )

    def rule(self, rule_id: str) -> Rule:
        """The rule with this id; ``KeyError`` if the scheme has none."""
        return self._by_id[rule_id]

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(rule.id for rule in self.rules)

    # -- compilation and reachability ---------------------------------------------------------

    def _compile(self) -> None:
        """Precompute per-value masks so classify is O(1) table lookups and ANDs."""
        scores: list[int | None] = [None, *range(1, self.buckets + 1)]

        def masks(dim: str) -> dict[int | None, int]:
            table = dict.fromkeys(scores, 0)
            for j, rule in enumerate(self.rules):
                cond = rule.score_range(dim)
                for v in scores:
                    if cond is None or (v is not None and v in cond):
                        table[v] |= 1 << j
            return table

        def bool_masks(attr: str) -> tuple[int, int]:
            out = [0, 0]
            for j, rule in enumerate(self.rules):
                want = getattr(rule, attr)
                for v in (0, 1):
                    if want is None or want == bool(v):
                        out[v] |= 1 << j
            return out[0], out[1]

        f_masks, m_masks, fm_masks = masks("f"), masks("m"), masks("fm")
        fm_table: dict[tuple[int | None, int | None], int] = {}
        for f, m in product(scores, scores):
            fm = fm_score(f, m) if f is not None and m is not None else None
            fm_table[f, m] = f_masks[f] & m_masks[m] & fm_masks[fm]

        bounds: set[int] = set()
        for rule in self.rules:
            if rule.orders is not None:
                if rule.orders.lo > 0:
                    bounds.add(rule.orders.lo)
                if rule.orders.hi is not None:
                    bounds.add(rule.orders.hi + 1)
        breaks = tuple(sorted(bounds))
        # One representative order count per class of counts that no rule tells apart.
        classes = tuple(self._orders_mask(rep) for rep in (0, *breaks))
        dense_len = min((breaks[-1] if breaks else 0) + 1, _DENSE_ORDERS_LIMIT)
        dense = tuple(classes[bisect_right(breaks, o)] for o in range(dense_len))

        set_ = object.__setattr__
        set_(self, "_r", masks("r"))
        set_(self, "_i", masks("i"))
        set_(self, "_fm", fm_table)
        set_(self, "_has_orders", bool_masks("has_orders"))
        set_(self, "_has_interactions", bool_masks("has_interactions"))
        set_(self, "_orders_breaks", breaks)
        set_(self, "_orders_classes", classes)
        set_(self, "_orders_dense", dense)

    def _orders_mask(self, orders: int) -> int:
        mask = 0
        for j, rule in enumerate(self.rules):
            if rule.orders is None or orders in rule.orders:
                mask |= 1 << j
        return mask

    def _project_tables(self) -> None:
        """Re-key the lookup tables by scoring-scale values, so classify stays lookups only."""
        scores: list[int | None] = [None, *range(1, (self.scored_buckets or 0) + 1)]
        p = self.project
        object.__setattr__(self, "_r", {s: self._r[p(s)] for s in scores})
        object.__setattr__(self, "_i", {s: self._i[p(s)] for s in scores})
        fm = {(f, m): self._fm[p(f), p(m)] for f in scores for m in scores}
        object.__setattr__(self, "_fm", fm)

    def _check_reachable(self, where: _Where) -> None:
        """Reject rules no customer can reach, by enumerating every distinct profile class.

        The space is the consistent profiles: r/f/m all scored iff the customer has orders
        (orders = 0 otherwise), i scored iff it has interactions, and one representative per
        orders class. Products of masks are deduplicated at each step, so this stays small.
        """
        b = self.buckets
        ordered = {self._has_orders[1] & self._r[r] for r in range(1, b + 1)}
        pairs = {self._fm[f, m] for f, m in product(range(1, b + 1), repeat=2)}
        ordered = {x & y for x in ordered for y in pairs}
        ordered = {x & y for x in ordered for y in self._orders_classes}
        no_orders = self._has_orders[0] & self._r[None] & self._fm[None, None]
        no_orders &= self._orders_classes[0]
        engagement = {self._has_interactions[0] & self._i[None]}
        engagement |= {self._has_interactions[1] & self._i[i] for i in range(1, b + 1)}
        space = {x & y for x in (*ordered, no_orders) for y in engagement}

        reached = matched = 0
        for mask in space:
            reached |= mask & -mask
            matched |= mask
        for j, rule in enumerate(self.rules):
            bit = 1 << j
            if reached & bit:
                continue
            everyone = next((k for k in range(j) if all(m >> k & 1 for m in space)), None)
            if rule.is_catch_all and everyone is not None:
                # Nothing reaches the catch-all: blame the first rule that takes everyone.
                k = everyone
                blamed = self.rules[k]
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
            names = ", ".join(repr(r.id) for k, r in enumerate(self.rules) if takers >> k & 1)
            raise here.error(
                fields,
                f"shadowed: every customer matching its conditions ({fields}) is already "
                f"taken by earlier rule(s) {names}, so it can never match",
            )


def _check_rule(rule: Rule, where: _Where, buckets: int, seen: Mapping[str, int]) -> None:
    """Per-rule checks: id, display names, range bounds and self-contradictions."""
    if not isinstance(rule.id, str) or not _RULE_ID.match(rule.id) or len(rule.id) > _MAX_ID_LEN:
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


def _check_catch_all(rules: tuple[Rule, ...], where: _Where) -> None:
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


# -- parsing ----------------------------------------------------------------------------------


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_fields(
    raw: Mapping[str, Any], allowed: Iterable[str], where: _Where, prefix: str
) -> None:
    allowed = tuple(allowed)
    for key in raw:
        if key not in allowed:
            raise where.error(f"{prefix}{key}", f"unknown field (allowed: {', '.join(allowed)})")


def _text(raw: object, where: _Where, fld: str) -> Text:
    """``{ en = "...", "zh-TW" = "..." }`` or a plain string (English only)."""
    if isinstance(raw, str):
        return Text(raw)
    if not isinstance(raw, Mapping):
        raise where.error(fld, 'expected a table { en = "...", "zh-TW" = "..." } or a string')
    _check_fields(raw, ("en", "zh-TW"), where, f"{fld}.")
    for lang in ("en", "zh-TW"):
        value = raw.get(lang)
        if value is not None and (not isinstance(value, str) or not value.strip()):
            raise where.error(f"{fld}.{lang}", "expected a non-empty string")
    if "en" not in raw:
        raise where.error(f"{fld}.en", "missing English text")
    return Text(raw["en"], raw.get("zh-TW"))


def _score_range(raw: object, where: _Where, fld: str) -> Range:
    if not (isinstance(raw, list) and len(raw) == 2 and all(_is_int(v) for v in raw)):
        raise where.error(fld, f"expected [lo, hi] (two integers), got {raw!r}")
    return Range(raw[0], raw[1])


def _orders_range(raw: object, where: _Where) -> Range:
    if isinstance(raw, list):
        return _score_range(raw, where, "orders")
    if not isinstance(raw, Mapping) or not raw:
        raise where.error("orders", f"expected [lo, hi] or {{ min = lo, max = hi }}, got {raw!r}")
    _check_fields(raw, ("min", "max"), where, "orders.")
    for key, value in raw.items():
        if not _is_int(value):
            raise where.error(f"orders.{key}", f"expected an integer, got {value!r}")
    return Range(raw.get("min", 0), raw.get("max"))


def _parse_rule(raw: object, where: _Where) -> Rule:
    if not isinstance(raw, Mapping):
        raise where.error(None, "expected a table ([[rules]])")
    rule_id = raw.get("id")
    where = where.at_rule(cast(int, where.index), rule_id if isinstance(rule_id, str) else None)
    _check_fields(raw, RULE_FIELDS, where, "")
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
            if not isinstance(raw[flag], bool):
                raise where.error(flag, f"expected true or false, got {raw[flag]!r}")
            kwargs[flag] = raw[flag]
    return Rule(
        id=rule_id,
        name=_text(raw["name"], where, "name"),
        description=_text(raw["description"], where, "description"),
        action=_text(raw["action"], where, "action"),
        **kwargs,
    )


def parse_scheme(data: Mapping[str, Any], buckets: int, *, source: str = "<scheme>") -> Scheme:
    """Validate a decoded scheme document for ``scoring.buckets = buckets``."""
    scheme_id = data.get("id") if isinstance(data, Mapping) else None
    where = _Where(scheme_id if isinstance(scheme_id, str) and scheme_id else source)
    if not isinstance(data, Mapping):
        raise where.error(None, "expected a TOML table at the top level")
    _check_fields(data, SCHEME_FIELDS, where, "")
    if not isinstance(scheme_id, str):
        raise where.error("id", "missing or not a string")
    written_for = data.get("buckets", 5)
    if not _is_int(written_for) or not MIN_BUCKETS <= written_for <= MAX_BUCKETS:
        raise where.error(
            "buckets", f"expected an integer {MIN_BUCKETS}..{MAX_BUCKETS}, got {written_for!r}"
        )
    if not _is_int(buckets) or not MIN_BUCKETS <= buckets <= MAX_BUCKETS:
        raise where.error("scoring.buckets", f"must be {MIN_BUCKETS}..{MAX_BUCKETS}")
    if "name" not in data:
        raise where.error("name", "missing")
    name = _text(data["name"], where, "name")
    description = (
        _text(data["description"], where, "description") if "description" in data else None
    )
    rules_raw = data.get("rules")
    if not isinstance(rules_raw, list) or not rules_raw:
        raise where.error("rules", "expected a non-empty array of tables ([[rules]])")
    rules = tuple(_parse_rule(raw, where.at_rule(j, None)) for j, raw in enumerate(rules_raw))
    scored = None if written_for == buckets else buckets  # projected: see Scheme.project
    return Scheme(scheme_id, name, written_for, rules, description, scored)


def load_scheme(name_or_path: str, buckets: int) -> Scheme:
    """Load a preset (``rfm-classic``, ``rfim``, ``simple``) or a scheme file by path."""
    if name_or_path in PRESETS:
        blob = (resources.files("stream") / "schemes" / f"{name_or_path}.toml").read_bytes()
    else:
        path = Path(name_or_path)
        if not path.is_file():
            raise SchemeError(
                f"scheme {name_or_path!r}: not a preset ({', '.join(PRESETS)}) nor a file",
                scheme=name_or_path,
                field="scoring.scheme",
            )
        blob = path.read_bytes()
    try:
        data = tomllib.loads(blob.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise SchemeError(
            f"scheme {name_or_path!r}: not valid UTF-8 TOML: {exc}", scheme=name_or_path
        ) from None
    return parse_scheme(data, buckets, source=name_or_path)


# -- documentation ----------------------------------------------------------------------------


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def scheme_table_markdown(scheme: Scheme) -> str:
    """A Markdown table of the rules in match order, so docs are regenerated, not hand-kept."""
    lines = [
        "| # | segment id | English | 繁體中文 | conditions | suggested action |",
        "|---|---|---|---|---|---|",
    ]
    for n, rule in enumerate(scheme.rules, 1):
        cells = (
            str(n),
            f"`{rule.id}`",
            rule.name.en,
            rule.name.get("zh-TW"),
            rule.describe_conditions(),
            rule.action.en,
        )
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def presets_markdown(buckets: int = 5) -> str:
    """Headed tables for every preset (the generated part of ``docs/schemes.md``)."""
    parts: list[str] = []
    for preset in PRESETS:
        scheme = load_scheme(preset, buckets)
        parts.append(f"## `{scheme.id}` — {scheme.name.en} / {scheme.name.get('zh-TW')}\n")
        if scheme.description is not None:
            parts.append(scheme.description.en + "\n")
        parts.append(scheme_table_markdown(scheme))
    return "\n".join(parts)
