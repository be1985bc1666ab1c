"""The uplift report's 95% intervals against scipy and statsmodels on the same data.

Welch's interval is checked against ``scipy.stats.ttest_ind(equal_var=False)`` and
statsmodels' ``CompareMeans.tconfint_diff(usevar="unequal")``; Wilson's against
``proportion_confint(method="wilson")``; Newcombe's hybrid score interval against
``confint_proportions_2indep(method="newcomb", compare="diff")``.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats
from statsmodels.stats.proportion import confint_proportions_2indep, proportion_confint
from statsmodels.stats.weightstats import CompareMeans, DescrStatsW

from consumers.campaigns.intervals import newcombe, welch, wilson

# per-customer revenue in minor units: many zeros (no purchase), some large spenders
REVENUES = st.lists(
    st.one_of(st.just(0), st.integers(0, 5_000_000), st.integers(0, 10**9)),
    min_size=2,
    max_size=60,
)


def close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-8, abs_tol=1e-6)


@given(REVENUES, REVENUES)
def test_welch_matches_scipy_and_statsmodels(treated: list[int], control: list[int]) -> None:
    mine = welch(treated, control)
    if len(set(treated)) == 1 and len(set(control)) == 1:
        assert mine is None  # no spread at all: no error estimate, no interval
        return
    assert mine is not None
    low, high = stats.ttest_ind(treated, control, equal_var=False).confidence_interval(0.95)
    assert close(mine.low, low) and close(mine.high, high), (mine, low, high)
    compared = CompareMeans(DescrStatsW(treated), DescrStatsW(control))
    low, high = compared.tconfint_diff(alpha=0.05, usevar="unequal")
    assert close(mine.low, low) and close(mine.high, high), (mine, low, high)


def test_welch_needs_two_customers_per_arm() -> None:
    assert welch([100], [0, 50]) is None
    assert welch([100, 0], []) is None


@given(st.integers(1, 500).flatmap(lambda n: st.tuples(st.integers(0, n), st.just(n))))
def test_wilson_matches_statsmodels(kn: tuple[int, int]) -> None:
    k, n = kn
    mine = wilson(k, n)
    low, high = proportion_confint(k, n, alpha=0.05, method="wilson")
    assert close(mine.low, low) and close(mine.high, high)


COUNTS = st.integers(1, 400).flatmap(lambda n: st.tuples(st.integers(0, n), st.just(n)))


@given(COUNTS, COUNTS)
def test_newcombe_matches_statsmodels(arm: tuple[int, int], control: tuple[int, int]) -> None:
    (k1, n1), (k2, n2) = arm, control
    mine = newcombe(k1, n1, k2, n2)
    assert mine is not None
    low, high = confint_proportions_2indep(
        k1, n1, k2, n2, method="newcomb", compare="diff", alpha=0.05
    )
    assert close(mine.low, low) and close(mine.high, high), (mine, low, high)
    assert -1 <= mine.low <= k1 / n1 - k2 / n2 <= mine.high <= 1


@pytest.mark.parametrize(("k1", "n1", "k2", "n2"), [(0, 5, 0, 7), (5, 5, 0, 3), (0, 1, 1, 1)])
def test_newcombe_at_zero_and_full_counts(k1: int, n1: int, k2: int, n2: int) -> None:
    """Where the Wald interval collapses to a point, the score interval keeps a width."""
    mine = newcombe(k1, n1, k2, n2)
    assert mine is not None and mine.high - mine.low > 0.3
    low, high = confint_proportions_2indep(k1, n1, k2, n2, method="newcomb", compare="diff")
    assert close(mine.low, low) and close(mine.high, high)


def test_newcombe_needs_both_arms() -> None:
    assert newcombe(0, 0, 1, 3) is None


def test_newcombe_stays_inside_minus_one_one_where_rounding_would_leave_it() -> None:
    """All of 13 against none of 86: the square roots overshoot 1 by an ulp unclamped."""
    mine = newcombe(13, 13, 0, 86)
    assert mine is not None and mine.high <= 1 and mine.low >= -1
