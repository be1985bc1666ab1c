"""Segment schemes: ordered first-match rules that turn a customer's scores into a segment.

This is the model the worker runs per customer; reading a scheme file and proving it sound
(every rule reachable, the last a catch-all) is ``stream.schemes``, which builds a ``Scheme``
only from a document it validated. ``Scheme.classify`` is on the worker's hot path, so each
scheme is compiled into per-dimension bitmask tables and classification is a handful of table
lookups, independent of rule count.

All conditions of a rule must hold (AND); a score condition never matches a customer outside
that dimension's population (score ``None``); ``fm`` is ``(f + m + 1) // 2``.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import product
from typing import cast

__all__ = [
    "CONDITION_FIELDS",
    "SCORE_FIELDS",
    "Profile",
    "Range",
    "RuleMasks",
    "Scheme",
    "SegmentRule",
    "Text",
    "fm_score",
    "rule_masks",
]

SCORE_FIELDS: tuple[str, ...] = ("r", "f", "m", "i", "fm")
CONDITION_FIELDS: tuple[str, ...] = (*SCORE_FIELDS, "orders", "has_orders", "has_interactions")

# Orders below this are classified by direct indexing, above it by bisection (bounded memory).
_DENSE_ORDERS_LIMIT = 1024


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


@dataclass(frozen=True, slots=True)
class SegmentRule:
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


@dataclass(frozen=True, slots=True)
class RuleMasks:
    """Which rules accept each value, per dimension, on the scheme's own 1..buckets scale.

    Bit j of a mask is set when rule j accepts that value; the key ``None`` stands for the
    customers outside that score's population. ``Scheme`` classifies with these tables and the
    reachability check (``stream.schemes``) enumerates the profiles they tell apart.
    """

    r: dict[int | None, int]
    i: dict[int | None, int]
    fm: dict[tuple[int | None, int | None], int]  # by (f, m): the f, m and fm conditions
    has_orders: tuple[int, int]  # by False, True
    has_interactions: tuple[int, int]
    orders_breaks: tuple[int, ...]  # the order counts at which some rule's answer changes
    orders_classes: tuple[int, ...]  # one mask per class of counts the breaks delimit


def rule_masks(rules: Sequence[SegmentRule], buckets: int) -> RuleMasks:
    """Precompute per-value masks so classification is table lookups and ANDs."""
    scores: list[int | None] = [None, *range(1, buckets + 1)]

    def masks(dim: str) -> dict[int | None, int]:
        table = dict.fromkeys(scores, 0)
        for j, rule in enumerate(rules):
            cond = rule.score_range(dim)
            for v in scores:
                if cond is None or (v is not None and v in cond):
                    table[v] |= 1 << j
        return table

    def bool_masks(attr: str) -> tuple[int, int]:
        out = [0, 0]
        for j, rule in enumerate(rules):
            want = getattr(rule, attr)
            for v in (0, 1):
                if want is None or want == bool(v):
                    out[v] |= 1 << j
        return out[0], out[1]

    def orders_mask(orders: int) -> int:
        mask = 0
        for j, rule in enumerate(rules):
            if rule.orders is None or orders in rule.orders:
                mask |= 1 << j
        return mask

    f_masks, m_masks, fm_masks = masks("f"), masks("m"), masks("fm")
    fm_table: dict[tuple[int | None, int | None], int] = {}
    for f, m in product(scores, scores):
        fm = fm_score(f, m) if f is not None and m is not None else None
        fm_table[f, m] = f_masks[f] & m_masks[m] & fm_masks[fm]

    bounds: set[int] = set()
    for rule in rules:
        if rule.orders is not None:
            if rule.orders.lo > 0:
                bounds.add(rule.orders.lo)
            if rule.orders.hi is not None:
                bounds.add(rule.orders.hi + 1)
    breaks = tuple(sorted(bounds))
    return RuleMasks(
        r=masks("r"),
        i=masks("i"),
        fm=fm_table,
        has_orders=bool_masks("has_orders"),
        has_interactions=bool_masks("has_interactions"),
        orders_breaks=breaks,
        # One representative order count per class of counts that no rule tells apart.
        orders_classes=tuple(orders_mask(rep) for rep in (0, *breaks)),
    )


@dataclass(frozen=True, slots=True)
class Scheme:
    """A compiled scheme. Constructing one compiles it and checks nothing: build it from a
    validated document (``stream.schemes.parse_scheme``), or classification may be wrong."""

    id: str
    name: Text
    buckets: int
    rules: tuple[SegmentRule, ...]
    description: Text | None = None
    # The B scores are computed with, when it differs from the B the rules are written for:
    # scores are then projected onto the scheme's scale (see ``project``) before matching.
    scored_buckets: int | None = None
    # Compiled lookup tables (``RuleMasks``, re-keyed by the scoring scale when projecting).
    _by_id: dict[str, SegmentRule] = field(init=False, repr=False, compare=False)
    _r: dict[int | None, int] = field(init=False, repr=False, compare=False)
    _i: dict[int | None, int] = field(init=False, repr=False, compare=False)
    _fm: dict[tuple[int | None, int | None], int] = field(init=False, repr=False, compare=False)
    _has_orders: tuple[int, int] = field(init=False, repr=False, compare=False)
    _has_interactions: tuple[int, int] = field(init=False, repr=False, compare=False)
    _orders_breaks: tuple[int, ...] = field(init=False, repr=False, compare=False)
    _orders_classes: tuple[int, ...] = field(init=False, repr=False, compare=False)
    _orders_dense: tuple[int, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        masks = rule_masks(self.rules, self.buckets)
        breaks, classes = masks.orders_breaks, masks.orders_classes
        dense_len = min((breaks[-1] if breaks else 0) + 1, _DENSE_ORDERS_LIMIT)
        dense = tuple(classes[bisect_right(breaks, o)] for o in range(dense_len))
        set_ = object.__setattr__
        set_(self, "_by_id", {rule.id: rule for rule in self.rules})
        set_(self, "_r", masks.r)
        set_(self, "_i", masks.i)
        set_(self, "_fm", masks.fm)
        set_(self, "_has_orders", masks.has_orders)
        set_(self, "_has_interactions", masks.has_interactions)
        set_(self, "_orders_breaks", breaks)
        set_(self, "_orders_classes", classes)
        set_(self, "_orders_dense", dense)
        if self.scored_buckets is not None and self.scored_buckets != self.buckets:
            self._project_tables()

    def classify(self, profile: Profile) -> SegmentRule:
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

    def rule(self, rule_id: str) -> SegmentRule:
        """The rule with this id; ``KeyError`` if the scheme has none."""
        return self._by_id[rule_id]

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(rule.id for rule in self.rules)

    def _project_tables(self) -> None:
        """Re-key the lookup tables by scoring-scale values, so classify stays lookups only."""
        scores: list[int | None] = [None, *range(1, (self.scored_buckets or 0) + 1)]
        p = self.project
        object.__setattr__(self, "_r", {s: self._r[p(s)] for s in scores})
        object.__setattr__(self, "_i", {s: self._i[p(s)] for s in scores})
        fm = {(f, m): self._fm[p(f), p(m)] for f in scores for m in scores}
        object.__setattr__(self, "_fm", fm)
