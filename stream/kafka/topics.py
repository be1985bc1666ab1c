"""Topic names (SPEC section 2) under a configurable prefix."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Topics:
    prefix: str = "rfm."

    @property
    def orders(self) -> str:
        return f"{self.prefix}orders"

    @property
    def interactions(self) -> str:
        return f"{self.prefix}interactions"

    @property
    def erasure(self) -> str:
        return f"{self.prefix}erasure"

    @property
    def changes(self) -> str:
        return f"{self.prefix}segment-changes"

    @property
    def dlq(self) -> str:
        return f"{self.prefix}dlq"

    @property
    def actions_dlq(self) -> str:
        """Campaign webhooks that failed every retry (consumers/campaigns)."""
        return f"{self.prefix}actions-dlq"

    @property
    def inputs(self) -> list[str]:
        return [self.orders, self.interactions, self.erasure]

    @property
    def all(self) -> list[str]:
        return [*self.inputs, self.changes, self.dlq, self.actions_dlq]
