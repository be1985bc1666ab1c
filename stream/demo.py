"""`rfm demo`: the whole pipeline with a simulated shop, in a namespace of its own.

The shop (stream.demo_shop) is a fixed population of ``customers`` with a history of two
years back-filled first; then its clock runs on at ``pace`` (shop time per wall second)
and its orders, refunds and interactions are published as they fall due. The scorer runs on
the event clock, so segments, thresholds, CLV and churn follow the shop's time. The shop
stays in the past (Kafka refuses events ahead of the wall clock): the live part starts that
far back, and once the shop clock reaches the wall clock it runs in real time.

Everything goes to namespace ``demo`` (topics ``demo.*``, keys ``demo:*``, stream.namespace):
never into a deployment's data. A namespace the demo did not write is refused; one a
previous demo left is reset first. The terminal shows live segment counts, the web dashboard
(its URL is printed) the rest, including the campaign webhooks a built-in local receiver
accepts.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from urllib.parse import urlsplit

import orjson
from rich.live import Live
from rich.table import Table

from stream.config import Settings, load_settings
from stream.core.changes import iso_ms
from stream.core.scoring import DAY_MS
from stream.demo_shop import Shop, ShopEvent
from stream.kafka import KafkaPublisher, ensure_topics
from stream.kafka.topics import Topics
from stream.namespace import Namespace, NamespaceError, reset, survey
from stream.process import Child, Supervisor, until_stopped
from stream.schemes import load_scheme
from stream.shell.processor import wall_ms
from stream.store.redis_store import connect, open_store

# The scorer's settings for the demo: the event clock (the shop's time), and cadences fast
# enough that thresholds, CLV and churn move within a minute.
CONFIG = """\
[scoring]
clock = "event"
refresh_interval = "5s"
[prediction]
fit_interval = "30s"
churn_threshold = 0.3
"""
MARKER = "demo-run"  # key under the namespace's prefix: the demo wrote this namespace
ENDLESS_SPAN_DAYS = 365  # shop time played fast when no --duration bounds the run
BATCH = 5000


@dataclass(frozen=True)
class Plan:
    """One run: the shop, where its clock starts, and how fast it runs."""

    shop: Shop
    pace_ms: int  # shop milliseconds per wall second

    def clock(self, elapsed_s: float, wall: int) -> int:
        """The shop's time ``elapsed_s`` wall seconds into the live part: never ahead of
        the wall clock, whose time it keeps once it got there."""
        return min(self.shop.start + int(elapsed_s * self.pace_ms), wall)


def plan(customers: int, pace_ms: int, duration: float, seed: int, wall: int) -> Plan:
    """A shop whose live part fits between the end of its history and ``wall``."""
    span = int(duration * pace_ms) if duration > 0 else ENDLESS_SPAN_DAYS * DAY_MS
    return Plan(Shop(customers, start=wall - span - 60_000, seed=seed), pace_ms)


def record(event: ShopEvent, topics: Topics) -> tuple[str, bytes, bytes]:
    topic = topics.orders if event.topic == "orders" else topics.interactions
    return topic, event.customer_id.encode(), orjson.dumps(event.doc)


def due(timeline: Iterator[ShopEvent], pending: list[ShopEvent], clock: int) -> list[ShopEvent]:
    """The events at or before ``clock``; the first one past it waits in ``pending``."""
    out = [e for e in pending if e.at <= clock]
    if len(out) < len(pending):
        return out
    pending.clear()
    for event in timeline:
        if event.at > clock:
            pending.append(event)
            break
        out.append(event)
    return out


def _table(
    counts: dict[str, int],
    names: dict[str, str],
    stats: dict[str, int],
    shop_clock: int,
    customers: int,
) -> Table:
    day = (iso_ms(shop_clock) or "")[:10]
    table = Table(title=f"rfm demo: {customers:,} customers, shop day {day}")
    table.add_column("segment")
    table.add_column("name")
    table.add_column("customers", justify="right")
    for seg, n in sorted(counts.items(), key=lambda kv: -kv[1]):
        table.add_row(seg, names.get(seg, seg), f"{n:,}")
    table.caption = (
        f"events applied {stats.get('accepted', 0):,} | duplicates {stats.get('duplicates', 0):,}"
        f" | rejected {stats.get('rejected', 0):,} | segment changes {stats.get('changes', 0):,}"
    )
    return table


async def claim(settings: Settings, ns: Namespace, run: Plan) -> None:
    """Make ``ns`` the demo's: empty, or left by an earlier demo (then reset); anything else
    is someone's data and is refused."""
    client = connect(settings.redis_url, cluster=settings.redis_cluster)
    try:
        marked = await client.exists(f"{ns.key_prefix}{MARKER}")
        contents = await survey(settings, ns)
        if not contents.empty and not marked:
            raise NamespaceError(
                f"namespace {ns.name!r} holds data the demo did not write ({contents.keys} "
                f"keys, {len(contents.topics)} topics): choose another with --namespace, or "
                f"remove it with `rfm reset --namespace {ns.name}`"
            )
        if not contents.empty:
            if contents.active:
                raise NamespaceError(
                    f"a demo (or a worker) is still running in namespace {ns.name!r} "
                    f"(consumer groups {', '.join(contents.active)}); stop it first, or "
                    "give this one another --namespace"
                )
            await reset(settings, ns)
        doc = {
            "customers": run.shop.customers,
            "seed": run.shop.seed,
            "start": run.shop.start,
            "history_days": run.shop.history_days,
            "pace_ms": run.pace_ms,
        }
        await client.set(f"{ns.key_prefix}{MARKER}", orjson.dumps(doc))
    finally:
        await client.aclose()


async def _run(settings: Settings, run: Plan, duration: float) -> None:
    await ensure_topics(settings)
    topics = Topics(settings.topic_prefix)
    store = open_store(settings)
    await store.check_layout()
    scheme = load_scheme(settings.scoring.scheme, settings.scoring.buckets)
    names = {r.id: f"{r.name.en} / {r.name.get('zh-TW')}" for r in scheme.rules}
    customers = run.shop.customers
    timeline = run.shop.timeline()
    pending: list[ShopEvent] = []
    async with KafkaPublisher(settings) as publisher:
        history = due(timeline, pending, run.shop.start)
        for start in range(0, len(history), BATCH):
            await publisher.publish([record(e, topics) for e in history[start : start + BATCH]])
        print(f"back-filled {len(history):,} events of {customers:,} customers up to shop day "
              f"{(iso_ms(run.shop.start) or '')[:10]}; the shop clock now runs at "
              f"{run.pace_ms / DAY_MS:g} days a second", flush=True)  # fmt: skip
        started = time.monotonic()
        draw = _table({}, names, {}, run.shop.start, customers)
        with Live(draw, refresh_per_second=2) as live:
            next_draw = 0.0
            while duration <= 0 or time.monotonic() - started < duration:
                tick = time.monotonic()
                clock = run.clock(tick - started, wall_ms())
                events = due(timeline, pending, clock)
                for start in range(0, len(events), BATCH):
                    batch = events[start : start + BATCH]
                    await publisher.publish([record(e, topics) for e in batch])
                if tick >= next_draw:
                    counts, stats = await store.counts(), await store.stats()
                    live.update(_table(counts, names, stats, clock, customers))
                    next_draw = tick + 1.0
                await asyncio.sleep(max(0.0, 0.1 - (time.monotonic() - tick)))
    await store.redis.aclose()


class _Receiver(BaseHTTPRequestHandler):
    """The demo's stand-in for a marketing tool: accepts every campaign webhook."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def _free_port(preferred: int) -> int:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", preferred))
            return preferred
        except OSError:
            probe.bind(("127.0.0.1", 0))
            return int(probe.getsockname()[1])


def _answering(settings: Settings) -> bool:
    """Kafka and Redis accept connections already (a local stack, or one someone runs)."""
    redis = urlsplit(settings.redis_url)
    kafka_host, _, kafka_port = settings.kafka_bootstrap.partition(",")[0].rpartition(":")
    for host, port in ((kafka_host, int(kafka_port)), (redis.hostname, redis.port or 6379)):
        try:
            socket.create_connection((host or "127.0.0.1", port), timeout=1).close()
        except OSError:
            return False
    return True


def run_demo(
    settings: Settings,
    customers: int,
    *,
    namespace: str = "demo",
    pace_ms: int = DAY_MS // 4,
    duration: float = 0.0,
    seed: int = 7,
) -> None:
    """Stack, worker, API + dashboard, campaigns with a local webhook receiver, traffic, all
    in ``namespace``. Raises ``NamespaceError`` for a namespace that is not the demo's."""
    from stream import stack

    ns = Namespace(namespace)
    defaults = Settings()
    local = (settings.kafka_bootstrap, settings.redis_url)
    if local == (defaults.kafka_bootstrap, defaults.redis_url) and not _answering(settings):
        stack.up()  # the local stack serves exactly the default addresses
    tmp = Path(tempfile.gettempdir())
    cfg = tmp / f"rfm-{ns.name}.toml"
    cfg.write_text(CONFIG, encoding="utf-8")
    # the children's environment, and this process's settings read from exactly that
    env = {k: v for k, v in os.environ.items() if k not in ("RFM_CONFIG", "RFM_GROUP_ID")}
    env.update(ns.env)
    env.update({"RFM_CONFIG": str(cfg), "PYTHONUNBUFFERED": "1"})
    settings = load_settings(env)
    run = plan(customers, pace_ms, duration, seed, wall_ms())
    asyncio.run(claim(settings, ns, run))
    receiver = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    hook = f"http://127.0.0.1:{receiver.server_address[1]}/rfm/webhook"
    example = resources.files("consumers.campaigns").joinpath("example.toml").read_text("utf-8")
    rules = tmp / f"rfm-{ns.name}-campaigns.toml"
    rules.write_text(example.replace("http://127.0.0.1:8765/rfm/webhook", hook), "utf-8")
    port = _free_port(8080)
    logs = tmp / f"rfm-{ns.name}"
    # SIGTERM, SIGHUP and Ctrl-C all end the demo here, and every child goes with it
    with Supervisor() as children:
        try:
            for args, log_name in (
                (["worker"], "worker"),
                (["api", "--port", str(port)], "api"),
                (["campaigns", "--rules", str(rules)], "campaigns"),
            ):
                argv = [sys.executable, "-m", "stream.cli", *args]
                children.start(Child(f"rfm {args[0]}", argv, env, Path(f"{logs}-{log_name}.log")))
            print(f"dashboard: http://127.0.0.1:{port}/")
            print(f"logs: {logs}-{{worker,api,campaigns}}.log; webhooks go to {hook}")
            print(
                f"namespace {ns.name}: topics {ns.topic_prefix}*, Redis keys {ns.key_prefix}*. "
                "To point other rfm commands at it:\n"
                f"  export RFM_TOPIC_PREFIX={ns.topic_prefix} RFM_KEY_PREFIX={ns.key_prefix} "
                f"RFM_CONFIG={cfg}\n"
                f"To remove it once the demo stopped: rfm reset --namespace {ns.name}",
                flush=True,
            )
            asyncio.run(until_stopped(_run(settings, run, duration)))
        except KeyboardInterrupt:
            pass
        finally:
            receiver.shutdown()
    with contextlib.suppress(OSError):  # the terminal may be gone (SIGHUP)
        print(
            f"\ndemo stopped; namespace {ns.name} keeps its data (`rfm reset --namespace "
            f"{ns.name}` removes it), the stack keeps running (`rfm stack down` stops it)",
            flush=True,
        )
