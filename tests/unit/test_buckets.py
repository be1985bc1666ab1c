"""Bucket arithmetic of the score indexes (stream.store.buckets) against a plain sort."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from stream.store.buckets import LIMIT, Census, bound, bucket_index, encode, value_of

values = st.integers(-(1 << 53), 1 << 53)


@given(values, values)
def test_byte_order_is_numeric_order_and_clamps_alike(a: int, b: int) -> None:
    ca, cb = (max(-LIMIT, min(LIMIT, v)) for v in (a, b))
    assert (encode(a) < encode(b)) == (ca < cb)
    assert (encode(a) == encode(b)) == (ca == cb)
    assert value_of(encode(a) + b"id") == ca


def _layout(
    population: list[tuple[int, bytes]], cuts: list[int]
) -> tuple[list[tuple[int, bytes]], Census, list[list[tuple[int, bytes]]]]:
    """The population sorted as an index is, cut into buckets before the members at
    ``cuts`` (the first bucket's bound is b"")."""
    entries = sorted(set(population), key=lambda e: bound(*e))
    starts = sorted({0, *(c % len(entries) for c in cuts)})
    groups = [entries[s:e] for s, e in zip(starts, [*starts[1:], len(entries)], strict=True)]
    bounds = [b"", *(bound(*g[0]) for g in groups[1:])]
    return entries, Census.of(zip(bounds, map(len, groups), strict=True)), groups


population = st.lists(
    st.tuples(st.integers(-50, 50), st.binary(min_size=1, max_size=3)), min_size=1, max_size=60
)
cuts = st.lists(st.integers(0, 10_000), max_size=12)


@given(population, cuts, st.data())
def test_a_rank_is_located_in_its_bucket(
    people: list[tuple[int, bytes]], at: list[int], data: st.DataObject
) -> None:
    entries, census, groups = _layout(people, at)
    assert census.population == len(entries)
    rank = data.draw(st.integers(0, len(entries) - 1))
    b, offset = census.locate(rank)
    assert groups[census.bounds.index(b)][offset] == entries[rank]
    # and commit.lua's directory look-up finds each member's bucket
    for n, group in enumerate(groups):
        for e in group:
            assert bucket_index(census.bounds, bound(*e)) == n


@given(population, cuts, st.integers(-60, 60), st.integers(0, 40))
def test_ranges_and_counts_cover_exactly_the_members_asked_for(
    people: list[tuple[int, bytes]], at: list[int], lo: int, width: int
) -> None:
    entries, census, groups = _layout(people, at)
    hi = lo + width
    by_bound = dict(zip(census.bounds, groups, strict=True))
    visited = census.overlapping(lo, hi)
    found = {e for b in visited for e in by_bound[b] if lo < e[0] <= hi}
    assert found == {e for e in entries if lo < e[0] <= hi}
    # a bucket is visited only if its value span meets the range
    for b in visited:
        group = by_bound[b]
        assert group[0][0] <= hi or value_of(b) is None

    whole, straddling = census.count_at_most(hi)
    exact = sum(1 for e in entries if e[0] <= hi)
    assert whole + sum(1 for b in straddling for e in by_bound[b] if e[0] <= hi) == exact
    assert len(straddling) <= 1
