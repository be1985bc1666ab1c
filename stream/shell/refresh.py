"""Periodic work that has no input event: threshold refresh and clock sweeps.

A refresh reads B-1 ranks per dimension, publishes a new version under a lease, then
re-scores only the customers whose value lies between an old and a new edge. Because a
crash can interrupt that re-score, the edges every customer is known to be settled
against ("base") are kept too, and the next refresh re-scores the union of both ranges.
A publication Redis lost with its tail after a worker committed against it is redone from
the start: nothing is settled any more (base version -1) until a refresh has published
again above that worker's fence and re-scored every customer.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import time
from dataclasses import dataclass

from stream.core.scoring import Thresholds, moved_ranges
from stream.shell.processor import Processor, wall_ms
from stream.store.keys import DIMS

log = logging.getLogger("rfm.refresh")
LEASE_MS = 60_000
# Customers per re-score batch. Each batch ends idle (its last commit, the publish, the
# lease renewal): with 1,000 that was ~70 ms of a 10,000-customer refresh, with 5,000 ~20.
RESCORE_BATCH = 5_000


@dataclass(frozen=True)
class RefreshReport:
    version: int
    candidates: int  # customers re-scored: the work done
    changes: int  # segment changes it caused
    seconds: float
    published: bool  # False when the edges were already current


class LeaseBusy(RuntimeError):
    """Another process holds the refresh lease."""


async def refresh(processor: Processor, *, lease_ms: int = LEASE_MS) -> RefreshReport:
    """Recompute quantile thresholds now; raises ``LeaseBusy`` if another refresh runs."""
    store = processor.store
    started = time.perf_counter()
    token = await store.acquire_lease(lease_ms)
    if token is None:
        raise LeaseBusy("another process is refreshing thresholds")
    try:
        await _drain_older_indexes(processor, token, lease_ms)
        # A version Redis lost with its tail, yet committed against since (see
        # Publication.lost_publication): nobody can tell which customers hold its scores.
        lost_edges, lost_model = await store.lost_publication()
        if lost_edges or lost_model:
            if lost_model and await store.model() is None:
                # every commit would be refused: a fit must publish one above the fence first
                raise LeaseBusy("a CLV model was lost after use and none is stored")
            if await store.unsettle_thresholds(token) < 0:  # until one completes: everyone
                raise LeaseBusy("lost the refresh lease or a newer version exists")
            if lost_model and await store.republish_model(token) < 0:
                raise LeaseBusy("lost the refresh lease or a newer model exists")
        current, base = await store.thresholds()
        buckets = processor.settings.scoring.buckets
        edges, population = await store.quantile_edges(buckets)
        published = edges != dict(current.edges) or lost_edges
        target = current
        if published:
            target = Thresholds(
                version=current.version + 1,
                edges=edges,
                population=population,
                computed_at=wall_ms(),
            )
            version = await store.publish_thresholds(token, current.version, target)
            if version < 0:
                raise LeaseBusy("lost the refresh lease or a newer version exists")
            target = dataclasses.replace(target, version=version)  # above a lost one's
        elif base.version == current.version:
            await store.mark_refreshed(wall_ms())
            return RefreshReport(current.version, 0, 0, time.perf_counter() - started, False)
        await store.raise_fences()  # again: a publisher may have died before raising them
        candidates: set[str] = set()
        if base.version < 0:  # redone from the start: every customer
            candidates = {cid async for cid in store.scan_customer_ids()}
        for dim in DIMS:
            for old in {base.for_dim(dim), current.for_dim(dim)}:
                ranges = moved_ranges(old, target.for_dim(dim))
                if ranges:
                    candidates |= await store.members_in(dim, ranges)

        async def keep_lease() -> None:
            # A large first refresh outlives any fixed lease: renew it between batches, and
            # stop (rather than race a successor) the moment it is lost.
            if not await store.renew_lease(token, lease_ms):
                raise LeaseBusy("lost the refresh lease while re-scoring")

        changes = await processor.rescore(
            sorted(candidates),
            "threshold_refresh",
            batch=RESCORE_BATCH,
            before_batch=keep_lease,
            standing=True,
        )
        if await store.settle_thresholds(token, target) < 0:
            raise LeaseBusy("lost the refresh lease before recording the refresh as settled")
        await store.mark_refreshed(wall_ms())
        report = RefreshReport(
            target.version, len(candidates), changes, time.perf_counter() - started, published
        )
        log.info(
            "thresholds v%s: re-scored %s customers, %s changes, %.3fs",
            report.version,
            report.candidates,
            report.changes,
            report.seconds,
        )
        return report
    finally:
        await store.release_lease(token)


async def _drain_older_indexes(processor: Processor, token: str, lease_ms: int) -> None:
    """Move customers still in the single-zset indexes of the older layout into the
    buckets before ranks are read from them: a full re-score commits each one's entries
    where they now live. Entries no stored customer backs are dropped."""
    store = processor.store

    async def keep_lease() -> None:
        if not await store.renew_lease(token, lease_ms):
            raise LeaseBusy("lost the refresh lease while moving index entries")

    moved = 0
    for _round in range(10):  # bounded: a worker of the older layout may still be adding
        ids = await store.older_index_members()
        if not ids:
            break
        await processor.rescore(ids, "clock", before_batch=keep_lease)
        left = await store.older_index_members()
        if set(left) & set(ids):  # re-scored yet still there: nobody's entries
            await store.drop_older_index_entries(sorted(set(left) & set(ids)))
        moved += len(ids)
    if moved:
        log.info("moved %s customers' index entries into buckets", moved)


def fingerprint(processor: Processor) -> str:
    """What a customer's segment depends on besides its events: scheme and scoring settings."""
    s = processor.settings
    scoring = dataclasses.replace(s.scoring, refresh_interval_s=0.0)  # cadence changes nothing
    churn = s.prediction.churn_threshold  # the churn flag is part of every customer's state
    parts = (processor.scheme, scoring, sorted(s.interaction_weights.items()), churn)
    return hashlib.sha256(repr(parts).encode()).hexdigest()


async def reconfigure(processor: Processor, *, lease_ms: int = LEASE_MS) -> int | None:
    """Re-score every customer once after the scheme or scoring settings changed.

    Runs under the refresh lease, so one worker does it; the others keep applying events
    (each commit is atomic, so live counts stay exact throughout). Returns the number of
    changes, or None when the stored fingerprint already matches.
    """
    store = processor.store
    digest = fingerprint(processor)
    if await store.fingerprint() == digest:
        return None
    token = await store.acquire_lease(lease_ms)
    if token is None:
        raise LeaseBusy("another process holds the refresh lease")
    try:
        if await store.fingerprint() == digest:
            return None

        async def keep_lease() -> None:
            if not await store.renew_lease(token, lease_ms):
                raise LeaseBusy("lost the refresh lease while re-scoring")

        ids = [cid async for cid in store.scan_customer_ids()]
        changes = await processor.rescore(ids, "reconfigure", before_batch=keep_lease)
        if not await store.set_fingerprint(token, digest):
            raise LeaseBusy("lost the refresh lease before recording the configuration")
        log.info("configuration changed: re-scored %s customers, %s changes", len(ids), changes)
        return changes
    finally:
        await store.release_lease(token)


async def sweep_clock(processor: Processor, limit: int = 10_000) -> int:
    """Re-score customers whose window contributions the clock has passed."""
    ctx = await processor.context()
    due = await processor.store.due_before(ctx.now, limit)
    if not due:
        return 0
    return await processor.rescore(due, "clock")
