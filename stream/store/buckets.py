"""Score index buckets: how a population index is cut into small sorted sets, and the
arithmetic that answers rank and range questions from them.

One sorted set holding every customer costs ~104 B a member (dict entry, skiplist node,
its own copy of the id). Redis keeps a sorted set of up to 128 members as one compact
listpack at ~23 B a member, so each index (r, f, m, i) is a chain of buckets cut by value:
a bucket holds the members from its *bound* up to the next bucket's bound, in the index's
own order (value, then id). A bound is ``encode(value) + id``, a byte string whose
lexicographic order is that order, so a directory sorted set (every score 0) finds the
bucket of any member with one ``ZRANGE ... BYLEX REV LIMIT 0 1``. Ties (most customers have
one order) are cut by id, so no value can outgrow a bucket. commit.lua splits a bucket in
two when it reaches 128 members and drops it from the directory when it empties.

Everything here is pure: the Lua side (commit.lua's ``encode``) must agree byte for byte,
and ``tests/test_index_buckets.py`` checks that it does.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

# Values are integers well inside a double's exact range; offset so negatives sort first.
OFFSET = 1 << 52
LIMIT = OFFSET - 1
BOUND_BYTES = 7


def encode(value: int) -> bytes:
    """Fixed-width big-endian ``value + 2**52``: byte order is numeric order. Values past
    +-(2**52 - 1) are clamped (they sort as ties, broken by id), exactly as the Lua side."""
    clamped = LIMIT if value > LIMIT else -LIMIT if value < -LIMIT else value
    return (clamped + OFFSET).to_bytes(BOUND_BYTES, "big")


def bound(value: int, member: bytes) -> bytes:
    """Where ``member`` with ``value`` sits in its index's order."""
    return encode(value) + member


def value_of(bucket_bound: bytes) -> int | None:
    """The value a bucket starts at; ``None`` for the first bucket (bound ``b""``)."""
    if not bucket_bound:
        return None
    return int.from_bytes(bucket_bound[:BOUND_BYTES], "big") - OFFSET


@dataclass(frozen=True)
class Census:
    """One shard's index of one dimension as its buckets: their bounds, in order, and
    their sizes. Bucket ``k`` holds values from ``starts[k]`` up to ``starts[k + 1]``
    inclusive (a tie may straddle a bound); the first starts at minus infinity (``None``)."""

    bounds: tuple[bytes, ...]
    sizes: tuple[int, ...]
    starts: tuple[int | None, ...]

    @classmethod
    def of(cls, pairs: Iterable[tuple[bytes, int]]) -> Census:
        by_bound = {b: n for b, n in pairs if n > 0}
        bounds = sorted(by_bound)  # bytes sort fast; sorting (bound, size) pairs did not
        return cls(
            tuple(bounds),
            tuple(by_bound[b] for b in bounds),
            tuple(value_of(b) for b in bounds),
        )

    @property
    def population(self) -> int:
        return sum(self.sizes)

    def locate(self, rank: int) -> tuple[bytes, int]:
        """(bucket bound, rank inside it) of the member at 0-based ``rank``."""
        if not 0 <= rank < self.population:
            raise IndexError(rank)
        for b, n in zip(self.bounds, self.sizes, strict=True):
            if rank < n:
                return b, rank
            rank -= n
        raise AssertionError("unreachable")

    def _end(self, k: int) -> int | None:
        return self.starts[k + 1] if k + 1 < len(self.starts) else None  # None: no upper end

    def overlapping(self, lo: float, hi: float) -> list[bytes]:
        """Buckets that may hold a value in ``(lo, hi]``."""
        out: list[bytes] = []
        for k, b in enumerate(self.bounds):
            start, end = self.starts[k], self._end(k)
            if (start is None or start <= hi) and (end is None or end > lo):
                out.append(b)
        return out

    def count_at_most(self, x: int) -> tuple[int, list[bytes]]:
        """Members ``<= x`` counted from whole buckets, and the buckets whose members must
        be counted one by one (those that straddle ``x``)."""
        whole = 0
        straddling: list[bytes] = []
        for k, b in enumerate(self.bounds):
            start, end = self.starts[k], self._end(k)
            if end is not None and end <= x:
                whole += self.sizes[k]
            elif start is None or start <= x:
                straddling.append(b)
            else:
                break  # starts only rise from here
        return whole, straddling


def bucket_index(bounds: Sequence[bytes], key: bytes) -> int:
    """Index of the bucket holding ``key`` (the last bound ``<= key``), as the directory
    look-up in commit.lua finds it; 0 when ``key`` precedes every bound."""
    return max(0, bisect_right(bounds, key) - 1)
