"""`rfm collect` under load, end to end into Kafka: signed webhooks per second, batched
events per second, the time to acknowledge at a moderate fixed rate, and beside them a bare
aiokafka producer (the collector's producer settings, no HTTP) sending the same records.

The collector is the real command: a child process on a loopback port, in a namespace of
its own, configured by environment and a config file as a deployment is. Its 2xx means
Kafka acknowledged the request's events, so every figure counts events in Kafka. The load
comes from this process (``bench.http_load``), which also says which side was the limit.

A figure below its aim is explained by a second, shorter pass of the same load with py-spy
attached (the timed pass is never sampled): the collector's on-CPU samples by layer.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import sys
import time
import tomllib
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import aiohttp

from bench import BenchError, storefront
from bench.http_load import AckTimes, Cpu, Service, Window, paced
from bench.namespace import CONFIG, Run
from bench.profile import Profiler
from bench.storefront import Traffic
from stream.collect.outgoing import MappingContext
from stream.config import Settings, settings_from
from stream.kafka import KafkaPublisher, ensure_topics
from stream.kafka.topics import Topics
from stream.process import Child

# The aims on a 2-core box; the report shows them beside the figures.
AIM_WEBHOOKS_PER_S = 3_000
AIM_EVENTS_PER_S = 50_000
AIM_ACK_P99_MS = 50.0
ACK_RATE = 500.0  # webhooks/s of the time-to-acknowledge probe
PER_REQUEST = 500  # events per POST /v1/events (collect.max_events)
CONNECTIONS = {"webhooks": 32, "events": 4, "ack": 64}  # the client's pool, per load
PART, BARE = "collect", "bare"  # namespace parts: the collector's topics, the bare producer's
SECRET_ENV = "BENCH_SHOPIFY_SECRET"
READY_TIMEOUT_S = 60.0
# The load comes from one shop at thousands a second: the per-source limit (200/s by default)
# would measure itself, not the collector, so it is lifted here.
SHOP_CONFIG = f"""\
[collect]
source_rate = 1000000
source_burst = 1000000
[collect.shops.{storefront.SHOP}]
platform = "shopify"
domain = "{storefront.DOMAIN}"
secret_env = "{SECRET_ENV}"
"""
Record = tuple[bytes, bytes]  # (key, value)


@dataclass(frozen=True)
class Sizes:
    webhooks: int = 20_000
    events: int = 200_000
    ack_seconds: float = 10.0
    warm_up: int = 200  # webhooks before any clock starts (connections, metadata, caches)
    profile_seconds: float = 5.0

    @classmethod
    def of(cls, quick: bool) -> Sizes:
        return cls(1_000, 10_000, 2.0, 100, 1.0) if quick else cls()


@dataclass(frozen=True)
class Share:
    layer: str
    share: float  # of the collector's on-CPU samples


@dataclass
class Collector:
    """The family's figures; ``Window.service_cores`` is the collector's CPU."""

    webhooks: Window
    events: Window
    ack: AckTimes
    bare: Window
    bare_ack: AckTimes
    acknowledged: int  # events answered 2xx, warm-up and profiled passes included
    bare_records: int  # records the bare producer had acknowledged
    refused: dict[int, int]  # answers other than 200, by status
    topic: str  # where the collector wrote every event: the orders topic of its namespace
    bare_topic: str
    client: str
    layers: dict[str, list[Share]] = field(default_factory=dict)  # per profiled load
    profiles: dict[str, Path] = field(default_factory=dict)  # its folded stacks
    notes: list[str] = field(default_factory=list)

    def as_dict(self, cores: int) -> dict[str, Any]:
        """The four figures first; then how they were measured, what bounded them, and what
        a reader of the topics should find there."""
        ack = self.ack
        return {
            "webhooks_per_s": round(self.webhooks.events_per_s, 1),
            "events_per_s": round(self.events.events_per_s, 1),
            "ack_ms": ack.as_dict("at_webhooks_per_s"),
            "bare_producer_events_per_s": round(self.bare.events_per_s, 1),
            "bare_producer_ack_ms": self.bare_ack.as_dict("at_events_per_s"),
            "events_per_request": PER_REQUEST,
            "connections": CONNECTIONS,
            "client": self.client,
            "load": {
                "webhooks": self.webhooks.as_dict("collector", cores),
                "events": self.events.as_dict("collector", cores),
                "ack": {
                    **(ack.load.as_dict("collector", None) if ack.load else {}),
                    "acknowledged_requests": len(ack.samples_ms),
                    "max_ms": round(max(ack.samples_ms), 2) if ack.samples_ms else None,
                },
                "bare_producer": {
                    "records": self.bare.events,
                    "seconds": round(self.bare.seconds, 3),
                    "producer_cores": round(self.bare.client_cores, 2),
                    "box_cores": round(self.bare.box_cores, 2),
                },
            },
            "where_the_time_goes": {
                kind: [{"layer": s.layer, "share": round(s.share, 3)} for s in shares]
                for kind, shares in self.layers.items()
            },
            "acknowledged": self.acknowledged,
            "refused": {str(status): n for status, n in sorted(self.refused.items())},
            "topic": self.topic,
            "bare_producer_records": self.bare_records,
            "bare_producer_topic": self.bare_topic,
        }


# Which layer an on-CPU sample belongs to: the innermost frame from one of these (stdlib
# frames count for their caller; the event loop's own frames stop the search). py-spy
# cannot always unwind a coroutine resumed by uvloop past its innermost asyncio frames:
# those samples have no known caller.
LAYERS = (
    (("uvicorn/", "h11/", "httptools/"), "HTTP server (uvicorn)"),
    (("starlette/", "anyio/"), "Starlette (routing, middleware, responses)"),
    (("stream/collect/",), "collector code (auth, HMAC, JSON, mapping)"),
    (("stream/core/",), "event checks (the worker's parsers)"),
    (("aiokafka/", "stream/kafka/"), "Kafka producer (aiokafka)"),
    (("redis/", "stream/store/"), "Redis client (delivery ids)"),
    (("prometheus_client/",), "metrics (prometheus_client)"),
)
LOOP = ("asyncio/runners.py", "asyncio/base_events.py", "asyncio/events.py", "uvloop/")


def _layer(stack: list[str]) -> str:
    for frame in reversed(stack):
        path = frame.rpartition(" (")[2]
        for prefixes, layer in LAYERS:
            if path.startswith(prefixes):
                return layer
        if path.startswith(LOOP):
            return "event loop (uvloop)"
    return "asyncio, caller not sampled"


def layers(folded: Path) -> list[Share]:
    """The collector's on-CPU samples (py-spy raw stacks) summed by layer, largest first."""
    counts: Counter[str] = Counter()
    for line in folded.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            counts[_layer(stack.split(";"))] += int(count)
    total = sum(counts.values())
    return [Share(layer, n / total) for layer, n in counts.most_common()] if total else []


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _start(run: Run, env: dict[str, str], attempts: int = 3) -> Service:
    """`rfm collect` on a free loopback port, once /healthz says Kafka answers. A port
    taken between choosing it and binding it is chosen again."""
    log = run.scratch / "collect.log"
    for attempt in range(attempts):
        port = _free_port()
        argv = [sys.executable, "-m", "stream.cli", "collect", "--host", "127.0.0.1"]
        child = Child("rfm collect", [*argv, "--port", str(port)], env, log).start()
        service = Service(child, f"http://127.0.0.1:{port}")
        deadline = time.monotonic() + READY_TIMEOUT_S
        async with service.session(1) as session:
            while child.alive:
                try:
                    async with session.get("/healthz") as answer:
                        if answer.status == 200:
                            return service
                except aiohttp.ClientError:
                    pass
                if time.monotonic() > deadline:
                    child.stop()
                    raise BenchError(f"rfm collect: no 200 on /healthz in 60s\n{child.tail()}")
                await asyncio.sleep(0.1)
        if "address already in use" not in child.tail().lower() or attempt == attempts - 1:
            raise BenchError(f"rfm collect exited with {child.returncode}\n{child.tail()}")
    raise AssertionError("unreachable")


async def _bare(
    settings: Settings, records: Sequence[Record], one_by_one: Sequence[Record]
) -> tuple[Window, AckTimes, int]:
    """The same records through an aiokafka producer with the collector's settings (acks=all,
    idempotent, no linger): all at once (every ``send`` queued, then their acks awaited),
    then one at a time at ``ACK_RATE``, each awaited alone as a webhook's is. Also returns
    how many records it wrote in all (one per partition first, so that every leader is
    known before any clock starts)."""
    topic = Topics(settings.topic_prefix).orders
    publisher = KafkaPublisher(settings, enable_idempotence=True, linger_ms=0)
    producer = publisher.producer
    await publisher.start()
    try:
        key, value = records[0]
        partitions = sorted(await producer.partitions_for(topic))
        warm = [await producer.send(topic, value, key=key, partition=p) for p in partitions]
        await asyncio.gather(*warm)
        cpu = Cpu(None)
        acks = [await producer.send(topic, value, key=key) for key, value in records]
        await asyncio.gather(*acks)
        window = cpu.window(len(records), len(records))

        async def send(record: Record) -> bool:
            await producer.send_and_wait(topic, record[1], key=record[0])
            return True

        ack = await paced(send, one_by_one, ACK_RATE)
        return window, ack, len(warm) + len(records) + len(one_by_one)
    finally:
        await publisher.stop()


async def _profiled(
    service: Service, kind: str, traffic: Traffic, rate: float, seconds: float, out: Path
) -> Path | None:
    """The load of ``kind`` again for about ``seconds`` with py-spy on the collector; its
    raw stacks, None without py-spy."""
    profiler = Profiler(service.child.pid, out)
    if not profiler.start():
        return None
    try:
        await asyncio.sleep(0.3)  # py-spy attaches
        if kind == "ack":
            load = traffic.webhooks(int(ACK_RATE * seconds))
            await service.paced(load, ACK_RATE, CONNECTIONS[kind])
        elif kind == "webhooks":
            load = traffic.webhooks(max(100, int(rate * seconds)))
            await service.closed_loop(load, CONNECTIONS[kind], f"{kind}, profiled")
        else:
            load = traffic.batches(max(2 * PER_REQUEST, int(rate * seconds)), PER_REQUEST)
            await service.closed_loop(load, CONNECTIONS[kind], f"{kind}, profiled")
    finally:
        folded = profiler.stop()
    return folded


def _missed(webhooks: Window, events: Window, ack: AckTimes) -> list[str]:
    return [
        kind
        for kind, missed in (
            ("webhooks", webhooks.events_per_s < AIM_WEBHOOKS_PER_S),
            ("events", events.events_per_s < AIM_EVENTS_PER_S),
            ("ack", not ack.percentile(99) <= AIM_ACK_P99_MS),
        )
        if missed
    ]


def _note(kind: str, result: Collector, cores: int) -> str:
    if kind == "ack":
        ack, bare = result.ack, result.bare_ack
        busy = f"; box {ack.load.box_cores:.2f} of {cores} cores busy" if ack.load else ""
        head = (
            f"collector, time to acknowledge at {ack.rate:,.0f} webhooks/s: p99"
            f" {ack.percentile(99):,.1f} ms, slowest {max(ack.samples_ms, default=0):,.0f} ms"
            f" (aim p99 {AIM_ACK_P99_MS:.0f} ms){busy}; the bare producer's p99 for the same"
            f" records one at a time: {bare.percentile(99):,.1f} ms"
        )
    else:
        window = result.webhooks if kind == "webhooks" else result.events
        aim = AIM_WEBHOOKS_PER_S if kind == "webhooks" else AIM_EVENTS_PER_S
        limit = window.limit(cores, "the collector")
        head = (
            f"collector, {kind}: {window.events_per_s:,.0f}/s (aim {aim:,}/s); limit: {limit}"
            f" (collector {window.service_cores:.2f}, client {window.client_cores:.2f},"
            f" box {window.box_cores:.2f} of {cores} cores)"
        )
    shares = result.layers.get(kind)
    if shares:
        head += "; the collector's CPU: " + ", ".join(
            f"{s.layer} {s.share:.0%}" for s in shares if s.share >= 0.01
        )
    return head


async def measure(run: Run, *, quick: bool, profile: bool, say: Callable[[str], None]) -> Collector:
    """Every figure of the family; ``profile``: explain each figure, missed or not."""
    sizes = Sizes.of(quick)
    cores = os.cpu_count() or 1
    secret, token, guest = (secrets.token_urlsafe(32) for _ in range(3))
    config = run.scratch / "rfm-collect.toml"
    text = CONFIG + SHOP_CONFIG
    config.write_text(text, encoding="utf-8")
    env = run.env(PART)
    env.update(
        {
            "RFM_CONFIG": str(config),
            "RFM_COLLECT_TOKEN": token,
            "RFM_COLLECT_GUEST_KEY": guest,
            SECRET_ENV: secret,
        }
    )
    settings = settings_from(env, tomllib.loads(text))
    bare_settings = run.settings(BARE)
    await ensure_topics(bare_settings)  # leaders elected while the collector runs
    traffic = Traffic(settings.store, secret.encode(), token)
    warm = traffic.webhooks(sizes.warm_up) + traffic.batches(2 * PER_REQUEST, PER_REQUEST)
    hooks = traffic.webhooks(sizes.webhooks)
    batches = traffic.batches(sizes.events, PER_REQUEST)
    probe = traffic.webhooks(int(ACK_RATE * sizes.ack_seconds))
    service = await _start(run, env)
    folded: dict[str, Path] = {}
    try:
        await service.closed_loop(warm, CONNECTIONS["webhooks"], "warm-up")
        webhooks = await service.closed_loop(hooks, CONNECTIONS["webhooks"], "webhooks")
        say(f"collector: {webhooks.events_per_s:,.0f} webhooks/s")
        events = await service.closed_loop(batches, CONNECTIONS["events"], "events")
        say(f"collector: {events.events_per_s:,.0f} events/s in batches of {PER_REQUEST}")
        ack = await service.paced(probe, ACK_RATE, CONNECTIONS["ack"])
        say(f"collector: time to acknowledge p99 {ack.percentile(99):,.1f} ms at {ACK_RATE:,.0f}/s")
        explain = ["webhooks", "events", "ack"] if profile else []
        if not quick and not profile:
            explain = _missed(webhooks, events, ack)
        rates = {"webhooks": webhooks.events_per_s, "events": events.events_per_s}
        for kind in explain:
            out = run.scratch / f"collector-{kind}.folded"
            rate = rates.get(kind, 0.0)
            path = await _profiled(service, kind, traffic, rate, sizes.profile_seconds, out)
            if path is not None:
                folded[kind] = path
    except aiohttp.ClientError as exc:
        raise BenchError(f"rfm collect: {exc!r}\n{service.child.tail()}") from None
    finally:
        service.child.stop()
    ctx = MappingContext(
        currency=settings.store.currency,
        currency_decimals=settings.store.currency_decimals,
        guest_key=guest.encode(),
        shop=storefront.SHOP,
    )
    say("collector: the bare producer, same records")
    bare, bare_ack, bare_records = await _bare(
        bare_settings,
        storefront.records([*hooks, *batches], ctx),
        storefront.records(probe, ctx),
    )
    result = Collector(
        webhooks=webhooks,
        events=events,
        ack=ack,
        bare=bare,
        bare_ack=bare_ack,
        acknowledged=service.acknowledged,
        bare_records=bare_records,
        refused=dict(service.refused),
        topic=Topics(settings.topic_prefix).orders,
        bare_topic=Topics(bare_settings.topic_prefix).orders,
        client=f"aiohttp {metadata.version('aiohttp')}",
        layers={kind: layers(path) for kind, path in folded.items()},
        profiles={f"collector-{kind}": path for kind, path in folded.items()},
    )
    if service.refused:
        result.notes.append(f"collector refused requests: {dict(service.refused)} (status: count)")
    if explain and not folded:
        result.notes.append("collector profile skipped: py-spy is not installed")
    result.notes += [_note(kind, result, cores) for kind in explain]
    return result
