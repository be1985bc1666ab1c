"""The bench's results as SPEC section 10 JSON, a terminal table and a PNG chart.

The JSON's top-level keys are the SPEC's, so runs compare over time; a few extras (dedupe
bytes, import rate, run parameters, notes, optional profile) sit beside them under names of
their own. The table adds the project's targets so a reader sees at once what falls short.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.table import Table

from bench.batch import Batch
from bench.collector import (
    AIM_ACK_P99_MS,
    AIM_EVENTS_PER_S,
    AIM_WEBHOOKS_PER_S,
    PER_REQUEST,
    Collector,
)
from bench.core import CoreCost
from bench.export_rate import ExportRate
from bench.import_rate import ImportRate
from bench.latency import CALM_SHARE, Latency
from bench.memory import Memory
from bench.profile import HotSpot
from bench.refresh_cost import RefreshCost
from bench.throughput import Throughput

# The project's performance targets (not part of SPEC): shown beside the figures.
TARGET_EVENTS_PER_S = 25_000
TARGET_BASELINE_SHARE = 0.5
TARGET_P99_MS = 200.0
TARGET_REFRESH_S = 1.0
TARGET_REFRESH_GROWTH = 2.0
TARGET_BYTES = 300.0
TARGET_IMPORT_PER_S = 100_000

# Redis key classes (first segment after the prefix, stream/store/keys.py) in plain words.
KEY_CLASSES = {
    "c": "state",
    "h": "recent changes",
    "ix": "indexes",
    "ixdir": "their bucket directories",
    "due": "clock index",
    "dueheads": "its bucket heads",
}


@dataclass
class Results:
    params: dict[str, Any]
    machine: dict[str, Any]
    throughput: Throughput
    baseline: Throughput
    latency: Latency
    refresh: list[RefreshCost]
    memory: Memory
    batch: Batch
    import_rate: ImportRate
    latency_calm: Latency | None = None  # well below the worker's capacity (see runner)
    scale_out: Throughput | None = None  # end to end with params["workers"] in one group
    collector: Collector | None = None  # `rfm collect` into Kafka, and a bare producer
    export: ExportRate | None = None  # `rfm export` of a population with a CLV model
    # Redis bytes of each refresh population (one order per customer), keyed by its size:
    # the memory target is stated at 1,000,000 customers, which the end-to-end run is not
    refresh_memory: dict[int, Memory] = field(default_factory=dict)
    core: dict[str, CoreCost] = field(default_factory=dict)  # "plain", "compiled" if built
    # customers per segment as the workers left them: "end_to_end", "scale_out" if it ran
    segment_counts: dict[str, dict[str, int]] = field(default_factory=dict)
    profiles: dict[str, list[HotSpot]] = field(default_factory=dict)
    profile_files: dict[str, Path] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def _num(x: float, digits: int = 1) -> float | None:
    return None if math.isnan(x) else round(x, digits)


def _latency(lat: Latency) -> dict[str, float | None]:
    return {
        "p50": _num(lat.percentile(50), 2),
        "p95": _num(lat.percentile(95), 2),
        "p99": _num(lat.percentile(99), 2),
        "at_events_per_s": round(lat.rate, 1),
    }


def _population_memory(m: Memory | None) -> dict[str, float]:
    if m is None:
        return {}
    return {
        "redis_bytes_per_customer": round(m.bytes_per_customer, 1),
        "redis_dedupe_bytes_per_customer": round(m.dedupe_bytes_per_customer, 1),
    }


def to_json(r: Results) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "events_per_s": round(r.throughput.events_per_s, 1),
        "baseline_events_per_s": round(r.baseline.events_per_s, 1),
        "latency_ms": _latency(r.latency),
        "refresh": [
            {
                "customers": c.customers,
                "moved": c.moved,
                "seconds": round(c.seconds, 4),
                "rescored": c.rescored,
                "changes": c.changes,
                **_population_memory(r.refresh_memory.get(c.customers)),
            }
            for c in r.refresh
        ],
        "redis_bytes_per_customer": round(r.memory.bytes_per_customer, 1),
        "batch_recompute_s": round(r.batch.seconds, 3),
        "machine": r.machine,
        # extras, beside the SPEC's keys
        "latency_ms_unsaturated": _latency(r.latency_calm) if r.latency_calm else None,
        "redis_dedupe_bytes_per_customer": round(r.memory.dedupe_bytes_per_customer, 1),
        "redis_bytes_by_key_class": {k: round(v, 1) for k, v in r.memory.parts.items()},
        "import_events_per_s": round(r.import_rate.events_per_s, 1),
        "collector": r.collector.as_dict(r.machine["cores"]) if r.collector else None,
        "export": r.export.as_dict() if r.export else None,
        "scale_out": (
            {
                "workers": r.params["workers"],
                "events_per_s": round(r.scale_out.events_per_s, 1),
                "vs_one_worker": round(r.scale_out.events_per_s / r.throughput.events_per_s, 2)
                if r.throughput.events_per_s
                else None,
            }
            if r.scale_out
            else None
        ),
        "core_us_per_customer": {mode: c.as_dict() for mode, c in r.core.items()},
        "segment_counts": {**r.segment_counts, "batch": r.batch.counts},
        "params": r.params,
        "notes": r.notes,
    }
    if r.profiles:
        doc["profile"] = {
            who: [
                {"function": h.function, "inclusive": round(h.inclusive, 4), "own": round(h.own, 4)}
                for h in spots
            ]
            for who, spots in r.profiles.items()
        }
    return doc


def _mark(ok: bool | None) -> str:
    return "" if ok is None else ("[green]yes[/]" if ok else "[red]no[/]")


def table(r: Results) -> Table:
    t = Table(title="rfm bench (SPEC section 10)", title_justify="left")
    t.add_column("figure")
    t.add_column("value", justify="right")
    t.add_column("target")
    t.add_column("met", justify="center")
    e2e, base = r.throughput.events_per_s, r.baseline.events_per_s
    share = e2e / base if base else 0.0
    t.add_row(
        "end to end (Kafka -> rfm worker -> Redis)",
        f"{e2e:,.0f} events/s",
        f">= {TARGET_EVENTS_PER_S:,}/s",
        _mark(e2e >= TARGET_EVENTS_PER_S),
    )
    t.add_row(
        "raw baseline (aiokafka + Processor, no Faust)",
        f"{base:,.0f} events/s",
        f"end to end >= {TARGET_BASELINE_SHARE}x: {share:.2f}x",
        _mark(share >= TARGET_BASELINE_SHARE),
    )
    if r.scale_out is not None:
        scaled = r.scale_out.events_per_s
        t.add_row(
            f"  same with {r.params['workers']} workers in one group (scale-out)",
            f"{scaled:,.0f} events/s",
            f"{scaled / e2e:.2f}x one worker" if e2e else "",
            "",
        )
    lat = r.latency
    t.add_row(
        f"latency p50 / p95 / p99 at {lat.rate:,.0f} events/s",
        f"{lat.percentile(50):.1f} / {lat.percentile(95):.1f} / {lat.percentile(99):.1f} ms",
        f"p99 <= {TARGET_P99_MS:.0f} ms",
        _mark(lat.percentile(99) <= TARGET_P99_MS),
    )
    if r.latency_calm is not None:
        calm = r.latency_calm
        t.add_row(
            f"  same at {calm.rate:,.0f} events/s ({CALM_SHARE:.0%} of the worker's capacity)",
            f"{calm.percentile(50):.1f} / {calm.percentile(95):.1f} / {calm.percentile(99):.1f} ms",
            "",
            "",
        )
    smallest = r.refresh[0].seconds if r.refresh else 0.0
    for c in r.refresh:
        growth = c.seconds / smallest if smallest else 1.0
        t.add_row(
            f"refresh, {c.customers:,} customers, {c.moved} moved",
            f"{c.seconds * 1000:,.1f} ms",
            f"<= {TARGET_REFRESH_S:.0f} s, <= {TARGET_REFRESH_GROWTH:.0f}x smallest: {growth:.2f}x",
            _mark(c.seconds <= TARGET_REFRESH_S and growth <= TARGET_REFRESH_GROWTH),
        )
    m = r.memory
    parts = ", ".join(f"{KEY_CLASSES.get(k, k)} {v:,.0f}" for k, v in m.parts.items() if v >= 1)
    t.add_row(
        f"Redis bytes per customer ({parts})",
        f"{m.bytes_per_customer:,.0f} B",
        f"<= {TARGET_BYTES:.0f} B",
        _mark(m.bytes_per_customer <= TARGET_BYTES),
    )
    t.add_row("  + dedupe marks per customer", f"{m.dedupe_bytes_per_customer:,.0f} B", "", "")
    for size, pm in sorted(r.refresh_memory.items()):
        t.add_row(
            f"  same at {size:,} customers (refresh population, one order each)",
            f"{pm.bytes_per_customer:,.0f} B + {pm.dedupe_bytes_per_customer:,.0f} B dedupe",
            f"<= {TARGET_BYTES:.0f} B",
            _mark(pm.bytes_per_customer <= TARGET_BYTES),
        )
    t.add_row(
        f"batch recompute (numpy), {r.batch.customers:,} customers",
        f"{r.batch.seconds:.2f} s",
        "",
        "",
    )
    t.add_row(
        "rfm import",
        f"{r.import_rate.events_per_s:,.0f} events/s",
        f">= {TARGET_IMPORT_PER_S:,}/s",
        _mark(r.import_rate.events_per_s >= TARGET_IMPORT_PER_S),
    )
    if r.collector is not None:
        _collector_rows(t, r.collector)
    if r.export is not None:
        t.add_row(
            f"rfm export (JSONL, CLV predictions), {r.export.customers:,} customers",
            f"{r.export.seconds:.1f} s ({r.export.customers_per_s:,.0f}/s)",
            "",
            "",
        )
    for mode, cpu in r.core.items():
        t.add_row(
            f"core CPU per customer, {mode} Python (fold / re-score)",
            f"{cpu.fold_us:.0f} / {cpu.rescore_us:.0f} us",
            "",
            "",
        )
    mc = r.machine
    t.caption = (
        f"{r.params['events']:,} events over {r.params['customers']:,} customers;"
        f" {mc['cores']} cores {mc['cpu_model']}, Python {mc['python']},"
        f" Kafka {mc['kafka_version']}, Redis {mc['redis_version']};"
        f" core {'compiled' if mc.get('compiled_core') else 'plain Python'}"
    )
    return t


def _collector_rows(t: Table, c: Collector) -> None:
    hooks, events, ack = c.webhooks.events_per_s, c.events.events_per_s, c.ack
    t.add_row(
        "rfm collect: signed Shopify orders/paid webhooks, one order each",
        f"{hooks:,.0f} webhooks/s",
        f">= {AIM_WEBHOOKS_PER_S:,}/s",
        _mark(hooks >= AIM_WEBHOOKS_PER_S),
    )
    t.add_row(
        f"rfm collect: POST /v1/events, {PER_REQUEST} events a request",
        f"{events:,.0f} events/s",
        f">= {AIM_EVENTS_PER_S:,}/s",
        _mark(events >= AIM_EVENTS_PER_S),
    )
    t.add_row(
        f"rfm collect: time to acknowledge p50 / p95 / p99 at {ack.rate:,.0f} webhooks/s",
        f"{ack.percentile(50):.1f} / {ack.percentile(95):.1f} / {ack.percentile(99):.1f} ms",
        f"p99 <= {AIM_ACK_P99_MS:.0f} ms",
        _mark(ack.percentile(99) <= AIM_ACK_P99_MS),
    )
    bare = c.bare_ack
    t.add_row(
        "  bare aiokafka producer, same records (acks=all, idempotent)",
        f"{c.bare.events_per_s:,.0f} events/s",
        f"one at a time at {bare.rate:,.0f}/s: p99 {bare.percentile(99):.1f} ms",
        "",
    )


def profile_table(who: str, spots: list[HotSpot]) -> Table:
    t = Table(title=f"profile of the {who} (share of on-CPU samples)", title_justify="left")
    t.add_column("function")
    t.add_column("inclusive", justify="right")
    t.add_column("own", justify="right")
    for h in spots:
        t.add_row(h.function, f"{h.inclusive:.1%}", f"{h.own:.1%}")
    return t


def chart(r: Results, path: Path) -> str | None:
    """Write the PNG; returns a note instead when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        logging.getLogger("matplotlib").setLevel(logging.WARNING)  # no font-cache chatter
        import matplotlib.pyplot as plt
    except ImportError:
        return "chart skipped: matplotlib is not installed (pip install 'rfm-stream[bench]')"
    import numpy as np

    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(16, 4.8))
    for run, label in ((r.throughput, "rfm worker (Faust)"), (r.baseline, "raw baseline")):
        xs, ys = zip(*run.timeline, strict=True) if run.timeline else ((), ())
        ax1.plot(xs, ys, label=f"{label}: {run.events_per_s:,.0f}/s")
    ax1.set_title(f"end to end: {r.throughput.events:,} orders")
    ax1.set_xlabel("seconds since the first order was produced")
    ax1.set_ylabel("orders applied in Redis")
    ax1.legend()
    ax1.grid(alpha=0.3)

    probes = [(r.latency, "tab:red")]
    if r.latency_calm is not None:
        probes.append((r.latency_calm, "tab:green"))
    for lat, colour in probes:
        samples = np.sort(np.array(lat.samples_ms))
        if not len(samples):
            continue
        label = (
            f"{lat.rate:,.0f}/s: p50 {lat.percentile(50):,.0f}, p95 {lat.percentile(95):,.0f},"
            f" p99 {lat.percentile(99):,.0f} ms"
        )
        ax2.plot(samples, np.arange(1, len(samples) + 1) / len(samples) * 100, colour, label=label)
        ax2.axvline(lat.percentile(99), linestyle=":", color=colour)
    ax2.axvline(TARGET_P99_MS, linestyle="--", color="grey", label="p99 target")
    ax2.set_xscale("log")
    ax2.legend(fontsize="small")
    ax2.set_title("produce -> change readable (dotted: p99)")
    ax2.set_xlabel("latency (ms, log scale)")
    ax2.set_ylabel("% of changes")
    ax2.grid(alpha=0.3, which="both")

    names = ["rfm worker", "raw baseline", "rfm import"]
    values = [r.throughput.events_per_s, r.baseline.events_per_s, r.import_rate.events_per_s]
    colours = ["tab:blue", "tab:orange", "tab:green"]
    if r.scale_out is not None:
        names.insert(1, f"{r.params['workers']} rfm workers")
        values.insert(1, r.scale_out.events_per_s)
        colours.insert(1, "tab:cyan")
    bars = ax3.bar(names, values, color=colours)
    ax3.bar_label(bars, labels=[f"{v:,.0f}" for v in values])
    ax3.axhline(TARGET_EVENTS_PER_S, color="red", linestyle="--", label="end-to-end target")
    ax3.set_title("events/s")
    ax3.legend()
    mc = r.machine
    fig.suptitle(
        f"rfm bench: {mc['cores']} cores {mc['cpu_model']}, Kafka {mc['kafka_version']},"
        f" Redis {mc['redis_version']}"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None
