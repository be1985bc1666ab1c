"""Redis key layout. One place, so a prefix isolates a deployment (or a test) completely.

Customer ids are untrusted: they are used as raw bytes (Redis keys are binary-safe) and,
where two variable parts meet, the first is length-prefixed so ``"a:b" + "c"`` and
``"a" + "b:c"`` can never collide.
"""

from __future__ import annotations

from dataclasses import dataclass

DIMS = ("r", "f", "m", "i")


@dataclass(frozen=True)
class Keys:
    prefix: str = "rfm:"

    def customer(self, customer_id: str) -> str:
        return f"{self.prefix}c:{customer_id}"

    @property
    def customer_pattern(self) -> str:
        escaped = "".join("\\" + ch if ch in "*?[]\\" else ch for ch in self.prefix)
        return f"{escaped}c:*"

    def customer_id_of(self, key: bytes) -> str:
        return key.decode("utf-8")[len(self.prefix) + 2 :]

    def applied(self, customer_id: str) -> str:
        """Zset of the customer's applied event ids, scored by when the mark expires.

        One key per customer (not one per event) so an erasure can delete every mark.
        """
        return f"{self.prefix}d:{customer_id}"

    def index(self, dim: str) -> str:
        return f"{self.prefix}ix:{dim}"

    @property
    def indexes(self) -> list[str]:
        return [self.index(d) for d in DIMS]

    @property
    def thresholds(self) -> str:
        return f"{self.prefix}thresholds"

    @property
    def counts(self) -> str:
        return f"{self.prefix}counts"

    @property
    def outbox(self) -> str:
        return f"{self.prefix}outbox"

    @property
    def due(self) -> str:
        return f"{self.prefix}due"

    @property
    def clock(self) -> str:
        return f"{self.prefix}clock"

    @property
    def lease(self) -> str:
        return f"{self.prefix}lease:refresh"

    @property
    def refreshed_at(self) -> str:
        return f"{self.prefix}refreshed_at"

    @property
    def model_history(self) -> str:
        """List of the last published CLV models, newest first."""
        return f"{self.prefix}models"

    @property
    def fitted_at(self) -> str:
        """Wall clock (ms) of the last CLV fit attempt, or of the first worker's start."""
        return f"{self.prefix}fitted_at"

    @property
    def segment_report(self) -> str:
        """Hash ``<segment>|orders``, ``<segment>|monetary``, ``<segment>|ch:<channel>``."""
        return f"{self.prefix}report"

    @property
    def grid(self) -> str:
        """Hash ``"<r>:<f>"`` -> customers with those scores."""
        return f"{self.prefix}grid"

    def transitions(self, hour: int) -> str:
        """Hash ``"<from>><to>"`` -> moves in that hour (epoch hours; "" = none / erased)."""
        return f"{self.prefix}tx:{hour}"

    def history(self, customer_id: str) -> str:
        """List of the customer's most recent change events, newest first."""
        return f"{self.prefix}h:{customer_id}"

    @property
    def scoring_fingerprint(self) -> str:
        """Digest of the scheme and scoring settings every customer was last classified with."""
        return f"{self.prefix}fingerprint"

    @property
    def stats(self) -> str:
        return f"{self.prefix}stats"
