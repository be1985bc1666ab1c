"""`rfm bench`: run every measurement once, in one isolated namespace, then report.

Order matters on a small box: the end-to-end run and its raw baseline go back to back so
they see the same conditions; the big in-process refresh populations go last so their
Redis load cannot slow the throughput runs. Whatever happens, the run's child processes are
stopped and its topics and keys deleted (the collector's topics stay when asked to, for a
caller to count what the collector acknowledged).
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import orjson
from aiokafka.errors import KafkaConnectionError
from redis.exceptions import ConnectionError as RedisConnectionError
from rich.console import Console

from bench import (
    BenchError,
    batch,
    collector,
    core,
    export_rate,
    import_rate,
    machine,
    memory,
    refresh_cost,
)
from bench.namespace import Run
from bench.options import Options, parse_sizes
from bench.pipeline import BASELINE, PROFILED, WORKER, State, consumer_run, latencies, stored_counts
from bench.profile import hot_spots
from bench.report import Results, chart, profile_table, table, to_json
from bench.thresholds import Population, thresholds_of
from bench.workload import SEED, orders
from stream.config import Settings
from stream.schemes import load_scheme
from stream.shell.processor import wall_ms

__all__ = ["Options", "parse_sizes", "run_bench"]


async def _measure(run: Run, options: Options, say: Callable[[str], None]) -> Results:
    state = State()
    settings = run.settings("e2e")
    scoring = settings.scoring
    scheme = load_scheme(scoring.scheme, scoring.buckets)
    try:
        facts = await machine.facts(settings)
        started = time.perf_counter()
        generated_at = wall_ms()
        work = orders(
            options.customers,
            options.events,
            now_ms=generated_at,
            seed=SEED,
            currency=settings.store.currency,
            decimals=settings.store.currency_decimals,
        )
        population = Population.of(work.customer, work.amount, work.at)
        thresholds = thresholds_of(population, scoring.buckets)
        say(
            f"workload: {len(work):,} orders over {work.customers:,} customers"
            f" ({time.perf_counter() - started:.1f}s)"
        )
        values = [v for _, v in work.events]
        recomputed = batch.recompute(
            values, scheme, scoring.buckets, settings.store.currency_decimals
        )
        say(f"batch recompute: {recomputed.seconds:.2f}s")
        cpu = await asyncio.to_thread(
            core.compare, run.env("core"), 1_000 if options.quick else core.CUSTOMERS
        )
        say(
            "core CPU per customer (fold / re-score): "
            + ", ".join(f"{m} {c.fold_us:.0f} / {c.rescore_us:.0f} us" for m, c in cpu.items())
        )
        if "compiled" not in cpu:
            state.notes.append(
                "no current compiled core (scripts/build-native): every figure is plain Python"
            )
        if recomputed.edges != dict(thresholds.edges):
            state.notes.append("the batch's edges differ from the seeded ones (a bench bug)")

        say("end to end: starting rfm worker")
        e2e = await consumer_run(
            run, "e2e", "rfm worker", WORKER, work.events, thresholds, options, state
        )
        say(f"end to end: {e2e.events_per_s:,.0f} events/s")
        # The worker's final state must be what the batch computed from the same events.
        counts = await stored_counts(settings)
        segment_counts = {"end_to_end": counts}
        if counts != recomputed.counts:
            state.notes.append(
                f"streaming segment counts {counts} differ from the batch's {recomputed.counts}"
            )
        mem = await memory.measure(settings)
        say(f"memory: {mem.bytes_per_customer:,.0f} B/customer; measuring latency")
        lat, calm = await latencies(settings, e2e, options, state)
        say(f"latency: p99 {lat.percentile(99):.1f} ms at {lat.rate:,.0f} events/s")
        state.children.pop().stop()

        say("baseline: starting python -m bench.baseline")
        base = await consumer_run(
            run, "base", "the baseline", BASELINE, work.events, thresholds, options, state
        )
        state.children.pop().stop()
        say(f"baseline: {base.events_per_s:,.0f} events/s")

        scaled = None
        if options.workers > 1:
            say(f"scale-out: starting {options.workers} rfm workers in one group")
            scaled = await consumer_run(
                run,
                "scale",
                "rfm worker",
                WORKER,
                work.events,
                thresholds,
                options,
                state,
                count=options.workers,
            )
            for _ in range(options.workers):
                state.children.pop().stop()
            say(f"scale-out: {scaled.events_per_s:,.0f} events/s with {options.workers} workers")
            counts = await stored_counts(run.settings("scale"))
            segment_counts["scale_out"] = counts
            if counts != recomputed.counts:
                state.notes.append(
                    f"segment counts with {options.workers} workers {counts} differ from the"
                    f" batch's {recomputed.counts}"
                )
            await run.drop_keys("scale")

        imported = await asyncio.to_thread(
            import_rate.measure, run.env("imp"), values, run.scratch, 120 + len(values) / 2000
        )
        say(f"rfm import: {imported.events_per_s:,.0f} events/s")

        say("collector: starting rfm collect")
        collected = await collector.measure(
            run, quick=options.quick, profile=options.profile, say=say
        )
        state.notes.extend(collected.notes)
        for who, folded in collected.profiles.items():
            state.profiles[who] = (folded, hot_spots(folded))
        await run.drop_keys(collector.PART)  # its webhook delivery ids

        exported = await export_rate.measure(
            run.settings(export_rate.PART),
            run.env(export_rate.PART),
            run.scratch,
            options.customers,
            say,
        )
        say(
            f"rfm export: {exported.customers:,} customers in {exported.seconds:.1f}s"
            f" ({exported.customers_per_s:,.0f}/s)"
        )
        await run.drop_keys(export_rate.PART)

        costs = []
        at_scale: dict[int, memory.Memory] = {}
        for size in options.refresh_sizes:
            part = f"rf{size}"
            cost = await refresh_cost.measure(
                run.settings(part), size, say, newcomers=options.refresh_newcomers
            )
            costs.append(cost)
            at_scale[size] = await memory.measure(run.settings(part))
            say(
                f"refresh at {size:,}: {cost.seconds * 1000:.1f} ms, {cost.moved} moved;"
                f" {at_scale[size].bytes_per_customer:,.0f} B/customer"
            )
            await run.drop_keys(part)  # a big population need not wait for the end
        return Results(
            params={
                **asdict(options),
                "customers": work.customers,
                "scheme": scoring.scheme,
                "buckets": scoring.buckets,
                # what regenerates the events: bench.workload.orders(customers, events,
                # now_ms=..., seed=...) with the store's currency
                "workload": {
                    "seed": SEED,
                    "now_ms": generated_at,
                    "currency": settings.store.currency,
                    "decimals": settings.store.currency_decimals,
                },
            },
            machine=facts,
            throughput=e2e,
            baseline=base,
            scale_out=scaled,
            latency=lat,
            latency_calm=calm,
            refresh=costs,
            memory=mem,
            refresh_memory=at_scale,
            batch=recomputed,
            import_rate=imported,
            collector=collected,
            export=exported,
            core=cpu,
            segment_counts=segment_counts,
            profiles={who: spots for who, (_, spots) in state.profiles.items()},
            profile_files={who: path for who, (path, _) in state.profiles.items()},
            notes=state.notes,
        )
    finally:
        for child in state.children:
            child.stop()


def kept_topics(run: Run, options: Options) -> tuple[str, ...]:
    """Prefixes of the topics the run leaves behind (``--keep-collector-topics``)."""
    if not options.keep_collector_topics:
        return ()
    return tuple(run.settings(part).topic_prefix for part in (collector.PART, collector.BARE))


async def _cleanup(run: Run, keep: tuple[str, ...]) -> tuple[int, int]:
    return await run.drop_topics(keep), await run.drop_keys()


def run_bench(
    settings: Settings, options: Options, json_path: Path | None = None
) -> dict[str, Any]:
    """Measure, print the table, write JSON (and the chart beside it); returns the JSON."""
    out = Console()
    err = Console(stderr=True)

    def say(text: str) -> None:
        err.print(f"[dim]bench:[/] {text}", highlight=False)

    logging.getLogger("aiokafka").setLevel(logging.WARNING)  # our consumers' join chatter
    scratch = Path(tempfile.mkdtemp(prefix="rfm-bench-"))
    run = Run(settings, scratch)
    say(f"namespace {run.tag} (topics {run.tag}.*, keys {run.tag}:*), scratch {scratch}")
    keep = False
    try:
        try:
            results = asyncio.run(_measure(run, options, say))
        except (RedisConnectionError, KafkaConnectionError, ConnectionError) as exc:
            raise BenchError(f"lost Kafka or Redis mid-run ({type(exc).__name__}: {exc})") from exc
        if json_path is not None:
            json_path.parent.mkdir(parents=True, exist_ok=True)
            for who, folded in results.profile_files.items():
                kept = json_path.with_suffix(f".{who}.folded")
                shutil.copyfile(folded, kept)
                results.notes.append(f"profile stacks ({who}): {kept.name}")
            png = json_path.with_suffix(".png")
            results.notes.append(chart(results, png) or f"chart: {png.name}")
    except BaseException:
        keep = True  # the child logs explain the failure
        raise
    finally:
        try:
            left = kept_topics(run, options)
            topics, keys = asyncio.run(_cleanup(run, left))
            say(f"cleaned up {topics} topics and {keys} keys")
            if left:
                say(f"kept the topics {', '.join(f'{p}*' for p in left)}: delete them after use")
        except Exception as exc:  # never hide the measurement's own error behind this one
            keep = True
            say(f"[red]could not clean up[/] {run.tag}.* topics / {run.tag}:* keys: {exc!r}")
        if keep:
            say(f"logs kept in {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)
    doc = to_json(results)
    if json_path is not None:
        json_path.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2) + b"\n")
    out.print(table(results))
    for who, spots in results.profiles.items():
        out.print(profile_table(PROFILED.get(who, who), spots))
    for note in results.notes:
        out.print(f"note: {note}")
    return doc
