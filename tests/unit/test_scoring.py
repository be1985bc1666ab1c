"""Scores (SPEC section 4) against an oracle written straight from the SPEC text."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream.config import settings_from
from stream.core.customer import Metrics
from stream.core.rescore import ScoringContext, fixed_thresholds, scores_for
from stream.core.scoring import (
    DAY_MS,
    Scores,
    Thresholds,
    count_in_ranges,
    moved_ranges,
    quantile_edges,
    quantile_ranks,
    score_above,
    score_recency_days,
)
from stream.schemes import load_scheme

FAST = settings(max_examples=200, deadline=None)
NOW = 1_795_140_900_000


# -- the oracle: SPEC section 4, literally ----------------------------------------------------


def oracle_thresholds(values: list[int], buckets: int) -> list[int]:
    arr = np.asarray(values, dtype=np.int64)
    return [int(np.quantile(arr, k / buckets, method="inverted_cdf")) for k in range(1, buckets)]


def oracle_score(value: int, thresholds: list[int]) -> int:
    return 1 + sum(1 for t in thresholds if value > t)


def oracle_fixed_recency(days: int, edges: list[int], buckets: int) -> int:
    return buckets - sum(1 for e in edges if days > e)


# value shapes: heavy ties (few distinct values), spread values, epoch-ms-sized values
_values = st.one_of(
    st.lists(st.integers(0, 3), min_size=1, max_size=60),
    st.lists(st.integers(0, 10**6), min_size=1, max_size=300),
    st.lists(st.integers(NOW - 400 * DAY_MS, NOW), min_size=1, max_size=120),
    st.lists(st.sampled_from([0, 1, 1, 1, 2, 50, 10**12]), min_size=1, max_size=40),
)


@FAST
@given(values=_values, buckets=st.integers(3, 10), probes=st.lists(st.integers(-1, 10**6)))
def test_quantile_thresholds_and_scores_match_oracle(
    values: list[int], buckets: int, probes: list[int]
) -> None:
    edges = quantile_edges(sorted(values), buckets)
    expected = oracle_thresholds(values, buckets)
    assert list(edges) == expected
    for v in [*values, *probes]:
        score = score_above(v, edges)
        assert score == oracle_score(v, expected)
        assert 1 <= score <= buckets


@FAST
@given(population=st.integers(1, 5000), buckets=st.integers(3, 10))
def test_quantile_ranks_are_ceil_k_n_over_b(population: int, buckets: int) -> None:
    ranks = quantile_ranks(population, buckets)
    assert ranks == [math.ceil(k * population / buckets) - 1 for k in range(1, buckets)]
    assert all(0 <= r < population for r in ranks)
    assert ranks == sorted(ranks)


@pytest.mark.parametrize("buckets", [3, 5, 10])
@pytest.mark.parametrize("population", [1, 2, 3, 7, 10, 11, 99, 100, 101, 20_000])
def test_quantile_against_numpy_fixed_sizes(population: int, buckets: int) -> None:
    rng = random.Random(population * 31 + buckets)
    values = [rng.randrange(0, max(2, population // 3)) for _ in range(population)]
    edges = quantile_edges(sorted(values), buckets)
    expected = oracle_thresholds(values, buckets)
    assert list(edges) == expected
    got = [score_above(v, edges) for v in values]
    want = [oracle_score(v, expected) for v in values]
    assert got == want


def test_distinct_population_splits_evenly() -> None:
    values = list(range(1, 101))
    edges = quantile_edges(values, 5)
    assert edges == (20, 40, 60, 80)
    counts = [0] * 6
    for v in values:
        counts[score_above(v, edges)] += 1
    assert counts[1:] == [20, 20, 20, 20, 20]


@FAST
@given(values=_values, buckets=st.integers(3, 10))
def test_ties_share_a_score_and_scores_are_monotone(values: list[int], buckets: int) -> None:
    ordered = sorted(values)
    edges = quantile_edges(ordered, buckets)
    scores = [score_above(v, edges) for v in ordered]
    assert scores == sorted(scores)
    by_value: dict[int, set[int]] = {}
    for v, s in zip(ordered, scores, strict=True):
        by_value.setdefault(v, set()).add(s)
    assert all(len(s) == 1 for s in by_value.values())


def test_everyone_tied_scores_one() -> None:
    edges = quantile_edges([7] * 50, 5)
    assert edges == (7, 7, 7, 7)
    assert score_above(7, edges) == 1
    assert score_above(8, edges) == 5


def test_empty_population_scores_one() -> None:
    assert quantile_edges([], 5) == ()
    assert score_above(123, ()) == 1


# -- fixed mode -------------------------------------------------------------------------------


@FAST
@given(
    edges=st.lists(st.integers(0, 400), min_size=2, max_size=9, unique=True).map(sorted),
    value=st.integers(0, 500),
)
def test_fixed_scores_match_oracle(edges: list[int], value: int) -> None:
    buckets = len(edges) + 1
    assert score_above(value, edges) == oracle_score(value, edges)
    r = score_recency_days(value, edges, buckets)
    assert r == oracle_fixed_recency(value, edges, buckets)
    assert 1 <= r <= buckets
    # fewer days since the last order is never worse
    assert score_recency_days(max(0, value - 1), edges, buckets) >= r


def test_fixed_recency_examples() -> None:
    edges = [7, 30, 90, 180]
    got = {d: score_recency_days(d, edges, 5) for d in (0, 7, 8, 30, 31, 90, 91, 180, 181, 999)}
    assert got == {0: 5, 7: 5, 8: 4, 30: 4, 31: 3, 90: 3, 91: 2, 180: 2, 181: 1, 999: 1}


def _fixed_ctx(now: int = NOW) -> ScoringContext:
    s = settings_from(
        {},
        {
            "scoring": {
                "mode": "fixed",
                "edges": {
                    "r": [7, 30, 90, 180],
                    "f": [1, 2, 4, 8],
                    "m": [100, 500, 1000, 5000],  # major units (TWD)
                    "i": [1, 5, 10, 20],
                },
            }
        },
    )
    return ScoringContext(s, fixed_thresholds(s), load_scheme("rfm-classic", 5), now, now)


def _metrics(**kw: int | None) -> Metrics:
    return Metrics(**kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("days_ago", "r"),
    [(0, 5), (6.9, 5), (7, 5), (7.5, 5), (8, 4), (30, 4), (31, 3), (100, 2), (181, 1), (3000, 1)],
)
def test_fixed_mode_recency_through_scores_for(days_ago: float, r: int) -> None:
    ctx = _fixed_ctx()
    m = _metrics(orders=1, monetary=100, last_order_at=NOW - int(days_ago * DAY_MS))
    assert scores_for(m, ctx).r == r


def test_fixed_mode_f_m_i_through_scores_for() -> None:
    ctx = _fixed_ctx()
    m = _metrics(
        orders=3, monetary=500_00, interactions=21, last_order_at=NOW, last_interaction_at=NOW
    )
    # f: 3 > 1, 2 -> 3; m: 500.00 TWD > 100 only (not > 500) -> 2; i: 21 > all -> 5
    assert scores_for(m, ctx) == Scores(r=5, f=3, m=2, i=5)
    m2 = _metrics(orders=0, monetary=500_01, last_order_at=NOW)
    assert scores_for(m2, ctx) == Scores(r=5, f=1, m=3, i=None)


def test_no_orders_no_rfm_scores_no_interactions_no_i() -> None:
    ctx = _fixed_ctx()
    assert scores_for(_metrics(interactions=3, last_interaction_at=NOW), ctx) == Scores(
        r=None, f=None, m=None, i=2
    )
    assert scores_for(_metrics(), ctx) == Scores()


def test_quantile_recency_later_is_better() -> None:
    s = settings_from({}, {})
    last_orders = [NOW - d * DAY_MS for d in range(100)]
    edges = {
        "r": quantile_edges(sorted(last_orders), 5),
        "f": (1, 1, 2, 3),
        "m": (100, 200, 300, 400),
        "i": (1, 2, 3, 4),
    }
    ctx = ScoringContext(s, Thresholds(1, edges), load_scheme("rfm-classic", 5), NOW, NOW)
    rs = [scores_for(_metrics(orders=1, monetary=1, last_order_at=t), ctx).r for t in last_orders]
    assert rs[0] == 5 and rs[-1] == 1
    assert rs == sorted(rs, reverse=True)  # fewer days since the last order -> higher R
    assert rs == [oracle_score(t, oracle_thresholds(last_orders, 5)) for t in last_orders]


# -- refresh cost: only values between old and new thresholds can move -----------------------


@FAST
@given(
    old_values=_values,
    new_values=_values,
    buckets=st.integers(3, 10),
    probes=st.lists(st.integers(-1, 10**6), max_size=30),
    first=st.booleans(),
)
def test_moved_ranges_are_exactly_the_values_that_change_score(
    old_values: list[int], new_values: list[int], buckets: int, probes: list[int], first: bool
) -> None:
    old = () if first else quantile_edges(sorted(old_values), buckets)
    new = quantile_edges(sorted(new_values), buckets)
    ranges = moved_ranges(old, new)
    for v in [*old_values, *new_values, *probes]:
        moved = score_above(v, old) != score_above(v, new)
        inside = any(lo < v <= hi for lo, hi in ranges)
        assert moved == inside, (v, old, new, ranges)
    population = sorted(new_values)
    assert count_in_ranges(population, ranges) == sum(
        score_above(v, old) != score_above(v, new) for v in population
    )


def test_no_change_no_ranges() -> None:
    edges = (1, 2, 3, 4)
    assert moved_ranges(edges, edges) == []
