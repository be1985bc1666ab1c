"""Scores 1..B per dimension against versioned thresholds (SPEC section 4).

Quantile thresholds are ranks in the population's sorted values, so a refresh needs
only B-1 rank look-ups per dimension, and the customers whose score can change are
exactly those whose value lies between an old and a new threshold.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

DAY_MS = 86_400_000
INF = math.inf


def quantile_ranks(population: int, buckets: int) -> list[int]:
    """0-based ranks of ``t_k = v(ceil(k*N/B))`` for k = 1..B-1 (numpy inverted_cdf)."""
    return [-(-k * population // buckets) - 1 for k in range(1, buckets)]


def quantile_edges(sorted_values: Sequence[int], buckets: int) -> tuple[int, ...]:
    if not sorted_values:
        return ()
    return tuple(sorted_values[r] for r in quantile_ranks(len(sorted_values), buckets))


def score_above(value: float, edges: Sequence[float]) -> int:
    """``1 + #{k : value > t_k}``; empty edges (no population yet) score 1."""
    return 1 + bisect_left(edges, value)


def score_recency_days(days: int, edges: Sequence[int], buckets: int) -> int:
    """Fixed mode R: ``B - #{k : days > e_k}``, fewer days since the last order is better."""
    return buckets - bisect_left(edges, days)


def next_recency_move(last_order_at: int, now: int, edges: Sequence[int]) -> int | None:
    """When the clock alone next lowers a fixed-mode R score: the first ms with days > e_k.

    ``days = (now - last) // DAY``, so days first exceeds ``e_k`` at ``last + (e_k + 1) days``.
    """
    days = max(0, (now - last_order_at) // DAY_MS)
    k = bisect_left(edges, days)  # first edge not yet passed (days <= e_k)
    return None if k == len(edges) else last_order_at + (edges[k] + 1) * DAY_MS


@dataclass(frozen=True)
class Thresholds:
    """One published version of the per-dimension edges; version 0 = none computed yet."""

    version: int = 0
    edges: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    population: Mapping[str, int] = field(default_factory=dict)
    computed_at: int = 0

    def for_dim(self, dim: str) -> tuple[int, ...]:
        return self.edges.get(dim, ())


@dataclass(frozen=True, init=False, eq=False)
class Scores:
    r: int | None
    f: int | None
    m: int | None
    i: int | None

    def __init__(
        self,
        r: int | None = None,
        f: int | None = None,
        m: int | None = None,
        i: int | None = None,
    ) -> None:
        # written out for mypyc (see stream.core.customer); frozen: hence object.__setattr__
        object.__setattr__(self, "r", r)
        object.__setattr__(self, "f", f)
        object.__setattr__(self, "m", m)
        object.__setattr__(self, "i", i)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Scores):
            return NotImplemented
        return self.r == other.r and self.f == other.f and self.m == other.m and self.i == other.i

    def __hash__(self) -> int:
        return hash((self.r, self.f, self.m, self.i))

    def as_dict(self) -> dict[str, int | None]:
        return {"r": self.r, "f": self.f, "m": self.m, "i": self.i}

    def __reduce__(self) -> tuple[type[Scores], tuple[int | None, ...]]:
        # copies and pickles rebuild through __init__: a compiled (stream.native) frozen
        # class has no __dict__ to restore into, and its fields refuse assignment
        return (Scores, (self.r, self.f, self.m, self.i))


NO_SCORES = Scores()  # not scored in any dimension (immutable, so one instance serves)


def moved_ranges(old: Sequence[float], new: Sequence[float]) -> list[tuple[float, float]]:
    """Value intervals ``(lo, hi]`` whose score differs between two edge lists.

    ``[v > a] != [v > b]`` exactly when v lies in ``(min(a,b), max(a,b)]``; a missing old
    edge acts as +inf (everyone scored 1 before the first refresh).
    """
    ranges: list[tuple[float, float]] = []
    for k in range(max(len(old), len(new))):
        a = old[k] if k < len(old) else INF
        b = new[k] if k < len(new) else INF
        if a != b:
            ranges.append((min(a, b), max(a, b)))
    return _merge(ranges)


def _merge(ranges: list[tuple[float, float]]) -> list[tuple[float, float]]:
    merged: list[tuple[float, float]] = []
    for lo, hi in sorted(ranges):
        if merged and lo <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], hi))
        else:
            merged.append((lo, hi))
    return merged


def count_in_ranges(sorted_values: Sequence[float], ranges: Sequence[tuple[float, float]]) -> int:
    """How many values fall in the ``(lo, hi]`` ranges (used by tests and the bench)."""
    return sum(
        bisect_right(sorted_values, hi) - bisect_right(sorted_values, lo) for lo, hi in ranges
    )
