"""`rfm export` customers/s: the real command writing every customer as JSONL, predictions in.

An export is how a segment leaves for a mailing tool or a spreadsheet, and every line carries
the customer's CLV prediction, evaluated at read time from the stored model; so the
population has repeat buyers (two orders per customer on average), goes in through the
worker's code path (``bench.refresh_cost.populate``) with its thresholds seeded, and a model
is fitted over it (``stream.shell.refit``) before the command is timed, interpreter start-up
included, as a user would wait for it.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench import BenchError
from bench.refresh_cost import Collector, populate
from bench.thresholds import Population, seed, thresholds_of
from bench.workload import SEED, SPREAD_MS, Workload, customer_id, order_event
from stream.config import Settings
from stream.core.scoring import DAY_MS
from stream.kafka.topics import Topics
from stream.shell.processor import wall_ms
from stream.shell.refit import refit
from stream.shell.wiring import build_processor
from stream.store.redis_store import open_store

FIT_LEASE_MS = 600_000
PART = "exp"  # the run's key and topic part (bench.namespace)
_REPORT = re.compile(rb"exported (\d+) customers")


@dataclass(frozen=True)
class ExportRate:
    customers: int  # lines written
    seconds: float  # the whole command, interpreter start-up included
    model_version: int | None  # the model every line's prediction came from
    fit_seconds: float
    populate_seconds: float

    @property
    def customers_per_s(self) -> float:
        return self.customers / self.seconds if self.seconds else 0.0

    def as_dict(self) -> dict[str, object]:
        return {
            "customers": self.customers,
            "seconds": round(self.seconds, 3),
            "customers_per_s": round(self.customers_per_s, 1),
            "model_version": self.model_version,
            "fit_seconds": round(self.fit_seconds, 3),
        }


def shoppers(customers: int, now_ms: int, *, currency: str, decimals: int) -> Workload:
    """Buyers as the CLV models describe them, so the fit has something to find: each buys
    at a rate of its own (Gamma across customers) until it drops out (exponential life),
    about 2.3 orders on average within the last 300 days, every amount around the buyer's own
    mean. ``bench.workload.orders``' uniform times and amounts, as the throughput runs send
    them, leave BG/NBD without a finite prediction."""
    rng = np.random.default_rng(SEED)
    first = now_ms - DAY_MS - rng.integers(0, SPREAD_MS, customers)
    end = np.minimum(now_ms - DAY_MS, first + rng.exponential(120 * DAY_MS, customers))
    repeats = rng.poisson(rng.gamma(0.5, 1 / (40 * DAY_MS), customers) * (end - first))
    who = np.concatenate([np.arange(customers), np.repeat(np.arange(customers), repeats)])
    at = np.concatenate(
        [
            first,
            first[who[customers:]]
            + rng.random(len(who) - customers) * (end - first)[who[customers:]],
        ]
    ).astype(np.int64)
    own_mean = rng.gamma(3.0, 400.0 / 3.0 * 10**decimals, customers)  # ~400 per order
    amount = np.maximum(1, np.round(own_mean[who] * rng.gamma(4.0, 0.25, len(who)))).astype(
        np.int64
    )
    order = rng.permutation(len(who))
    who, at, amount = who[order], at[order], amount[order]
    ids = [customer_id("x", n) for n in range(customers)]
    events = [
        (
            ids[who[n]].encode(),
            order_event(
                f"x-{n}",
                ids[who[n]],
                int(amount[n]),
                int(at[n]),
                currency=currency,
                decimals=decimals,
            ),
        )
        for n in range(len(who))
    ]
    return Workload(ids, who, amount, at, events)


async def load(
    settings: Settings, customers: int, say: Callable[[str], None]
) -> tuple[float, float, int | None]:
    """The population and its model: (populate seconds, fit seconds, model version)."""
    store = open_store(settings)
    processor = build_processor(settings, Collector(), store)
    cur, dec = settings.store.currency, settings.store.currency_decimals
    try:
        work = shoppers(customers, wall_ms(), currency=cur, decimals=dec)
        population = Population.of(work.customer, work.amount, work.at)
        await seed(store, thresholds_of(population, settings.scoring.buckets))
        topic = Topics(settings.topic_prefix).orders
        populate_s = await populate(processor, topic, work.events, "the export bench")
        say(f"export: {customers:,} customers loaded in {populate_s:.1f}s; fitting a CLV model")
        del work
        # a fit over 100,000 buyers can outlast the worker's lease on a busy small box
        report = await refit(processor, lease_ms=FIT_LEASE_MS)
        if report.model is None:
            say(f"export: no CLV model ({report.reason}): lines carry no prediction")
        return populate_s, report.seconds, None if report.model is None else report.model.version
    finally:
        await store.redis.aclose()


def timed_export(env: dict[str, str], scratch: Path, timeout_s: float) -> tuple[int, float]:
    """Run `rfm export -o FILE`; (customers it reported, wall seconds)."""
    out = scratch / "export.jsonl"
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "stream.cli", "export", "-o", str(out)],
        env=env,
        capture_output=True,
        timeout=timeout_s,
        check=False,
    )
    seconds = time.perf_counter() - started
    found = _REPORT.search(done.stderr)
    if done.returncode != 0 or found is None:
        raise BenchError(f"rfm export failed ({done.returncode}): {done.stderr[-2000:]!r}")
    exported = int(found.group(1))
    lines = out.read_bytes().count(b"\n")
    out.unlink()
    if lines != exported:
        raise BenchError(f"rfm export reported {exported} customers but wrote {lines} lines")
    return exported, seconds


async def measure(
    settings: Settings,
    env: dict[str, str],
    scratch: Path,
    customers: int,
    say: Callable[[str], None] = lambda _: None,
) -> ExportRate:
    populate_s, fit_s, version = await load(settings, customers, say)
    exported, seconds = await asyncio.to_thread(timed_export, env, scratch, 600 + customers / 100)
    if exported != customers:
        raise BenchError(f"rfm export wrote {exported} customers, {customers} were loaded")
    return ExportRate(exported, seconds, version, fit_s, populate_s)
