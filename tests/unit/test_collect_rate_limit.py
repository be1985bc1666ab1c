"""Per-source token buckets of `rfm collect` against an independent oracle.

The oracle is the virtual-scheduling form of the generic cell rate algorithm (GCRA), in
exact fractions of a second: each source has a theoretical arrival time; a request at ``t``
conforms when ``t >= tat - (burst - 1) / rate``, and then ``tat = max(tat, t) + 1 / rate``.
It is the same contract as a bucket of ``burst`` tokens refilled at ``rate`` a second, in
another shape: it keeps a time, not a level."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream.collect.in_flight import InFlight
from stream.collect.rate_limit import NS, Limit, TokenBuckets, retry_after_s


class Gcra:
    def __init__(self, rate: int, burst: int) -> None:
        self.interval = Fraction(1, rate)
        self.tolerance = (burst - 1) * self.interval
        self.tat: dict[str, Fraction] = {}

    def take(self, source: str, t: Fraction) -> Fraction:
        """0 when the request conforms, else the seconds until it would."""
        tat = self.tat.get(source, t)
        earliest = tat - self.tolerance
        if t < earliest:
            return earliest - t
        self.tat[source] = max(tat, t) + self.interval
        return Fraction(0)


limits = st.builds(Limit, rate=st.integers(1, 50), burst=st.integers(1, 20))
# increasing times in ns: gaps from 0 (same instant) to 3 s, sources from a small set
arrivals = st.lists(
    st.tuples(st.integers(0, 3 * NS), st.sampled_from(["shop-a", "shop-b", "write-key-1"])),
    max_size=200,
)


@settings(max_examples=300, deadline=None)
@given(limits, arrivals)
def test_every_verdict_and_wait_is_the_oracles(limit: Limit, gaps: list[tuple[int, str]]) -> None:
    buckets, oracle = TokenBuckets(limit), Gcra(limit.rate, limit.burst)
    now = 10**12  # a monotonic clock starts anywhere
    for gap, source in gaps:
        now += gap
        wait_ns = buckets.take(source, now)
        expected = oracle.take(source, Fraction(now, NS))
        assert wait_ns == math.ceil(expected * NS), (source, now)


@settings(max_examples=200, deadline=None)
@given(limits, arrivals, st.integers(0, 5 * NS))
def test_no_window_admits_more_than_burst_plus_what_the_rate_refills(
    limit: Limit, gaps: list[tuple[int, str]], window_ns: int
) -> None:
    buckets = TokenBuckets(limit)
    now = 0
    taken: dict[str, list[int]] = {}
    for gap, source in gaps:
        now += gap
        if buckets.take(source, now) == 0:
            taken.setdefault(source, []).append(now)
    for times in taken.values():
        for i, start in enumerate(times):
            inside = sum(1 for t in times[i:] if t - start <= window_ns)
            assert inside <= limit.burst + limit.rate * window_ns / NS


def test_a_burst_then_the_rate_then_a_wait_that_is_honest() -> None:
    buckets = TokenBuckets(Limit(rate=2, burst=3))
    assert [buckets.take("s", 0) for _ in range(3)] == [0, 0, 0]
    assert buckets.take("s", 0) == NS // 2  # one token every half second
    assert buckets.take("other", 0) == 0  # another source has its own bucket
    assert buckets.take("s", NS // 2 - 1) == 1
    assert buckets.take("s", NS // 2) == 0
    assert buckets.take("s", 100 * NS) == 0  # a long pause refills to burst, not beyond
    assert [buckets.take("s", 100 * NS) for _ in range(3)] == [0, 0, NS // 2]


def test_a_clock_that_steps_back_refills_nothing() -> None:
    buckets = TokenBuckets(Limit(rate=1, burst=1))
    assert buckets.take("s", 5 * NS) == 0
    assert buckets.take("s", 2 * NS) == NS  # no token, and no negative refill either
    assert buckets.take("s", 6 * NS) == 0


@pytest.mark.parametrize(
    ("wait_ns", "seconds"), [(1, 1), (NS, 1), (NS + 1, 2), (30 * NS, 30), (0, 1)]
)
def test_retry_after_rounds_up_to_whole_seconds(wait_ns: int, seconds: int) -> None:
    assert retry_after_s(wait_ns) == seconds


def test_limits_below_one_are_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        Limit(rate=0, burst=1)
    with pytest.raises(ValueError, match="at least 1"):
        InFlight(0)


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 8), st.lists(st.booleans(), max_size=100))
def test_in_flight_admits_up_to_its_limit_and_no_more(limit: int, steps: list[bool]) -> None:
    """Steps enter (True) or leave one admitted request (False); the oracle is a list."""
    gate, admitted = InFlight(limit), 0
    for step in steps:
        if step:
            ok = gate.enter()
            assert ok == (admitted < limit)
            admitted += ok
        elif admitted:
            gate.leave()
            admitted -= 1
    assert gate.now == admitted
    with pytest.raises(RuntimeError):
        for _ in range(admitted + 1):
            gate.leave()
