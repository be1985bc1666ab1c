"""A bound on the requests of ``rfm collect`` waiting on Redis or Kafka at once.

While Kafka is down every request waits up to ``collect.ack_timeout`` for an acknowledgement
that does not come; storefronts keep sending meanwhile, so without a bound the requests (and
their bodies and events) pile up in memory. Past the bound a request is refused at once
(503 with ``Retry-After``) instead of queueing: the platforms send it again later.
"""

from __future__ import annotations


class InFlight:
    """A counter with a ceiling; ``enter`` never waits."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"the limit must be at least 1, got {limit}")
        self.limit = limit
        self.now = 0

    def enter(self) -> bool:
        """Count one more request, unless ``limit`` are in flight already (then False)."""
        if self.now >= self.limit:
            return False
        self.now += 1
        return True

    def leave(self) -> None:
        """One request that entered is done."""
        if self.now <= 0:
            raise RuntimeError("leave() without a matching enter()")
        self.now -= 1
