"""Per-source token buckets for ``rfm collect`` (pure: the caller passes the time).

A source is whoever proved who they are: a configured shop whose webhook signature
verified, a tracking write key, the bearer token of ``/v1/events``. Only such sources reach
a bucket, so the number of buckets is bounded by the configuration, and a sender without
credentials cannot spend a real shop's tokens.

Each bucket holds up to ``burst`` tokens, refills at ``rate`` tokens a second and a request
takes one. Arithmetic is in integers (a token is ``NS`` units, time is in nanoseconds), so a
refill never drifts and the wait it reports is exact to the nanosecond.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass

NS = 1_000_000_000  # units of one token; also nanoseconds in a second


@dataclass(frozen=True, slots=True)
class Limit:
    rate: int  # tokens added per second, sustained (at least 1)
    burst: int  # tokens a full bucket holds: requests accepted at once (at least 1)

    def __post_init__(self) -> None:
        if self.rate < 1 or self.burst < 1:
            raise ValueError(f"rate and burst must be at least 1, got {self.rate}, {self.burst}")


class TokenBuckets:
    """One bucket per source, created full on first use."""

    def __init__(self, limit: Limit) -> None:
        self.limit = limit
        self._level: dict[Hashable, int] = {}  # in units of 1/NS token
        self._at: dict[Hashable, int] = {}  # nanoseconds of the last refill

    def take(self, source: Hashable, now_ns: int) -> int:
        """Take one token of ``source``'s bucket at ``now_ns`` (a monotonic clock): 0 when
        taken, else the nanoseconds until one will be there (nothing is taken then)."""
        full = self.limit.burst * NS
        last = self._at.get(source)
        if last is None:
            level = full
        else:
            # a clock that steps back refills nothing; it never takes tokens either
            level = min(full, self._level[source] + self.limit.rate * max(0, now_ns - last))
        self._at[source] = max(now_ns, last) if last is not None else now_ns
        if level >= NS:
            self._level[source] = level - NS
            return 0
        self._level[source] = level
        return -(-(NS - level) // self.limit.rate)  # ceiling: the first instant it is whole


def retry_after_s(wait_ns: int) -> int:
    """The whole seconds of a ``Retry-After`` header for a wait: rounded up, at least 1."""
    return max(1, -(-wait_ns // NS))
