"""The scorer's consumers under the clock: start a part's consumers on seeded thresholds,
time the workload through them, then probe latency at a rate and, near capacity, below it."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from bench import (
    latency,
    scale_out,
    throughput,
)
from bench.latency import CALM_SHARE
from bench.namespace import Run
from bench.options import Options
from bench.profile import HotSpot, Profiler, hot_spots
from bench.thresholds import seed
from stream.config import Settings
from stream.core.scoring import Thresholds
from stream.kafka import ensure_topics
from stream.process import Child, Children
from stream.store.redis_store import open_store

WORKER = [sys.executable, "-m", "stream.cli", "worker", "--loglevel", "warn"]
BASELINE = [sys.executable, "-m", "bench.baseline"]
PROFILED = {  # profile names: who was sampled
    "e2e": "rfm worker",
    "base": "raw baseline",
    "collector-webhooks": "rfm collect, webhooks",
    "collector-events": "rfm collect, batched events",
    "collector-ack": "rfm collect, at 500 webhooks/s",
}


@dataclass
class State:
    children: list[Child] = field(default_factory=list)
    profiles: dict[str, tuple[Path, list[HotSpot]]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


async def consumer_run(
    run: Run,
    part: str,
    name: str,
    argv: list[str],
    work: list[tuple[bytes, bytes]],
    thresholds: Thresholds,
    options: Options,
    state: State,
    count: int = 1,
) -> throughput.Throughput:
    """Seed the part's thresholds, start ``count`` consumers (one group), time the workload
    through them.

    The consumers are left running (last in ``state.children``) for what the caller
    measures next; ``_measure`` stops every child on the way out in any case. Only the first
    is profiled.
    """
    settings = run.settings(part)
    await ensure_topics(settings)
    store = open_store(settings)
    try:
        await seed(store, thresholds)
    finally:
        await store.redis.aclose()
    started = [
        Child(name, argv, run.env(part), run.scratch / f"{part}{n or ''}.log").start()
        for n in range(count)
    ]
    state.children.extend(started)
    watched: Child | Children = started[0]
    if count > 1:
        watched = Children(started)
        await scale_out.wait_stable(settings, watched, timeout_s=120)
    profiler = Profiler(started[0].pid, run.scratch / f"{part}.folded")

    def ready() -> None:
        if options.profile and not profiler.start():
            state.notes.append("profile skipped: py-spy is not installed")

    try:
        result = await throughput.measure(
            settings, work, watched, timeout_s=120 + len(work) / 200, on_ready=ready
        )
    finally:
        folded = profiler.stop()
    if folded is not None:
        state.profiles[part] = (folded, hot_spots(folded))
    return result


async def stored_counts(settings: Settings) -> dict[str, int]:
    store = open_store(settings)
    try:
        return await store.counts()
    finally:
        await store.redis.aclose()


async def latencies(
    settings: Settings, e2e: throughput.Throughput, options: Options, state: State
) -> tuple[latency.Latency, latency.Latency | None]:
    """Latency at the asked rate and, if that is near the worker's capacity, below it.

    Past the worker's capacity the first figure is mostly queueing. The second probe runs at
    ``CALM_SHARE`` of the measured capacity, to show what the pipeline itself adds under a
    real load. (It ran at a fifth while Faust's 1.5 s fetch wait stalled the worker at any
    rate; see ``stream.worker.app.FETCH_MAX_WAIT_MS``.)
    """
    lat = await latency.measure(
        settings, rate=options.latency_rate, seconds=options.latency_seconds, tag="lat"
    )
    calm = None
    if lat.rate > 0.5 * e2e.events_per_s:
        rate = max(20.0, round(e2e.events_per_s * CALM_SHARE, -1))
        calm = await latency.measure(
            settings, rate=rate, seconds=options.latency_seconds, tag="calm"
        )
        state.notes.append(
            f"latency at {lat.rate:,.0f} events/s is near or above the worker's capacity"
            f" ({e2e.events_per_s:,.0f}/s), so it includes queueing; at {calm.rate:,.0f}"
            f" events/s p99 is {calm.percentile(99):,.1f} ms (latency_ms_unsaturated)"
        )
    for probe in (lat, calm):
        if probe is not None and probe.missing:
            state.notes.append(
                f"latency at {probe.target_rate:,.0f}/s: {probe.missing} of {probe.sent}"
                " changes never arrived"
            )
    return lat, calm
