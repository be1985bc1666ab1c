"""The interfaces the shell is written against: where state lives (``Store``) and where
changes go (``Publisher``).

``stream.store.redis_store.RedisStore`` and ``stream.kafka.KafkaPublisher`` are the
deployment's; tests hand the processor small in-memory ones, so its batching and retries
are exercised without Redis or Kafka.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from typing import Protocol

from stream.clv.prediction import Model, Unfit
from stream.core.customer import Customer
from stream.core.scoring import Thresholds
from stream.store.commits import Commit, CommitResult, Loaded, Standing


class Publisher(Protocol):
    """Sends records and returns once the broker has acknowledged every one of them."""

    async def publish(self, messages: Sequence[tuple[str, bytes | None, bytes]]) -> None: ...


class Store(Protocol):
    """Customer state, the published context and the outbox, as the shell uses them.

    A commit is atomic per customer and fenced: it comes back refused when the customer's
    stored version moved since its load (``reason="version"``) or the thresholds or model
    it was scored against are no longer current (``reason="thresholds"``)."""

    async def aclose(self) -> None: ...

    # ---- customers --------------------------------------------------------------------

    async def load(self, wanted: Mapping[str, Sequence[str]]) -> dict[str, Loaded]:
        """Customers by id, each with the subset of the given event ids already applied."""
        ...

    async def standings(self, ids: Sequence[str]) -> dict[str, Standing | None]:
        """Customers by id as a re-score against new thresholds sees them (``None``: it
        needs its full state)."""
        ...

    async def commit(self, commits: Sequence[Commit]) -> list[CommitResult]:
        """One result per commit, in order; all of them scored against one context."""
        ...

    def scan_customer_ids(self, count: int = 1000) -> AsyncIterator[str]: ...

    def lifetimes(self, page: int = 1000) -> AsyncIterator[Customer]:
        """Every customer with only what a CLV fit reads."""
        ...

    def customer_pages(self, page: int = 500) -> AsyncIterator[list[Customer]]:
        """Every customer in full (order records too), a page at a time."""
        ...

    # ---- indexes and the clock --------------------------------------------------------

    async def quantile_edges(
        self, buckets: int
    ) -> tuple[dict[str, tuple[int, ...]], dict[str, int]]: ...

    async def members_in(self, dim: str, ranges: Iterable[tuple[float, float]]) -> set[str]: ...

    async def due_before(self, now: int, limit: int = 10_000) -> list[str]: ...

    async def event_clock(self) -> int: ...

    async def older_index_members(self, limit: int = 100_000) -> list[str]: ...

    async def drop_older_index_entries(self, ids: Sequence[str]) -> None: ...

    # ---- publication under the refresh lease -----------------------------------------

    async def thresholds(self) -> tuple[Thresholds, Thresholds]:
        """(current, base): base is the last version every customer is settled against."""
        ...

    async def publish_thresholds(self, token: str, read_version: int, t: Thresholds) -> int:
        """The new version, or -1 (lease lost) / -2 (a newer version exists)."""
        ...

    async def settle_thresholds(self, token: str, t: Thresholds) -> int: ...

    async def unsettle_thresholds(self, token: str) -> int:
        """No version settled (base -1): the next refresh re-scores every customer."""
        ...

    async def model(self) -> Model | None: ...

    async def model_version(self) -> int: ...

    async def publish_model(
        self, token: str, read_version: int, model: Model, checks: bytes
    ) -> int:
        """The new version, or -1 (lease lost) / -2 (a newer model exists); the model's
        checks are stored with it in the same step."""
        ...

    async def record_unfit(self, unfit: Unfit) -> None:
        """Why a fit published nothing (cleared by the next publication)."""
        ...

    async def republish_model(self, token: str) -> int:
        """The stored model again under a version above every fence (0: none stored)."""
        ...

    async def raise_fences(self) -> None: ...

    async def lost_publication(self) -> tuple[bool, bool]:
        """Whether a fence holds a thresholds (model) version above the published one."""
        ...

    async def acquire_lease(self, ttl_ms: int) -> str | None: ...

    async def renew_lease(self, token: str, ttl_ms: int) -> bool: ...

    async def release_lease(self, token: str) -> None: ...

    async def fingerprint(self) -> str | None: ...

    async def set_fingerprint(self, token: str, digest: str) -> bool: ...

    async def refreshed_at(self) -> int: ...

    async def mark_refreshed(self, at_ms: int) -> None: ...

    async def fitted_at(self, default: int) -> int: ...

    async def mark_fitted(self, at_ms: int) -> None: ...

    # ---- stats and the outbox ---------------------------------------------------------

    async def add_stats(self, **deltas: int) -> None: ...

    async def outbox_older_than(
        self, max_id_ms: int, count: int = 10
    ) -> list[tuple[bytes, str, bytes]]:
        """(entry id, customer id, change) of entries created before ``max_id_ms``."""
        ...

    async def outbox_delete(self, ids: Sequence[bytes]) -> None: ...
