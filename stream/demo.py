"""`rfm demo`: the whole pipeline on the local stack with believable storefront traffic.

Customers come in archetypes with realistic shapes: many one-time buyers, a loyal core
that keeps buying, a few whales, and lapsed regulars who stopped months ago. A year of
history is back-filled first, then live orders arrive at ``rate`` per second, and the
terminal shows live segment counts while the web dashboard (its URL is printed) shows the rest,
including the campaign webhooks a built-in local receiver accepts.
"""

from __future__ import annotations

import asyncio
import os
import random
import socket
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path

import orjson
from rich.live import Live
from rich.table import Table

from stream.config import Settings
from stream.core.changes import iso_ms
from stream.core.scoring import DAY_MS
from stream.kafka import KafkaPublisher, ensure_topics
from stream.kafka.topics import Topics
from stream.process import Child, stop_all
from stream.schemes import load_scheme
from stream.shell.processor import wall_ms
from stream.store.redis_store import open_store


@dataclass(frozen=True)
class Archetype:
    name: str
    share: float
    orders_per_year: float
    amount: tuple[int, int]  # TWD, whole units
    lapsed_days: int = 0  # stopped buying this many days ago


ARCHETYPES = (
    Archetype("one_time", 0.55, 0.0, (200, 1500)),
    Archetype("loyal", 0.25, 14.0, (400, 3000)),
    Archetype("whale", 0.03, 40.0, (5000, 40000)),
    Archetype("lapsed", 0.17, 10.0, (300, 2500), lapsed_days=150),
)


def _order(cid: str, at: int, amount: int, rng: random.Random) -> tuple[bytes, bytes]:
    doc = {
        "event_id": uuid.UUID(int=rng.getrandbits(128)).hex,
        "type": "order_completed",
        "order_id": uuid.UUID(int=rng.getrandbits(128)).hex[:12],
        "customer_id": cid,
        "amount": f"{amount}.00",
        "currency": "TWD",
        "occurred_at": iso_ms(at),
        "channel": rng.choice(("online", "online", "app", "pos", "social")),
    }
    return cid.encode(), orjson.dumps(doc)


def history(
    customers: int, now: int, seed: int = 7
) -> tuple[list[tuple[str, Archetype]], list[tuple[bytes, bytes]]]:
    rng = random.Random(seed)
    people: list[tuple[str, Archetype]] = []
    events: list[tuple[int, bytes, bytes]] = []
    weights = [a.share for a in ARCHETYPES]
    for n in range(customers):
        arche = rng.choices(ARCHETYPES, weights)[0]
        cid = f"c-{n:05d}"
        people.append((cid, arche))
        end = now - arche.lapsed_days * DAY_MS
        if arche.orders_per_year == 0:
            times = [now - rng.randrange(1, 360) * DAY_MS]
        else:
            times, t = [], now - 360 * DAY_MS + rng.randrange(0, 60) * DAY_MS
            while t < end:
                times.append(t)
                t += int(rng.expovariate(arche.orders_per_year / 365) * DAY_MS) + DAY_MS
        for at in times:
            key, value = _order(cid, at, rng.randint(*arche.amount), rng)
            events.append((at, key, value))
    events.sort(key=lambda e: e[0])
    return people, [(k, v) for _, k, v in events]


def live_orders(
    people: list[tuple[str, Archetype]], seed: int = 11
) -> Iterator[tuple[bytes, bytes]]:
    """Endless live traffic: the active archetypes buy, and brand-new customers arrive."""
    rng = random.Random(seed)
    active = [(cid, a) for cid, a in people if a.name in ("loyal", "whale")]
    weights = [a.orders_per_year for _, a in active]
    newcomer = len(people)
    while True:
        if rng.random() < 0.1 or not active:
            cid, amount = f"c-{newcomer:05d}", rng.randint(200, 2000)
            newcomer += 1
        else:
            cid, arche = rng.choices(active, weights)[0]
            amount = rng.randint(*arche.amount)
        yield _order(cid, wall_ms(), amount, rng)


def _table(
    counts: dict[str, int], names: dict[str, str], stats: dict[str, int], elapsed: float
) -> Table:
    table = Table(title=f"rfm demo: live segment counts ({elapsed:.0f}s)")
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


async def _run(settings: Settings, customers: int, rate: float, duration: float) -> None:
    await ensure_topics(settings)
    topics = Topics(settings.topic_prefix)
    store = open_store(settings)
    await store.check_layout()
    scheme = load_scheme(settings.scoring.scheme, settings.scoring.buckets)
    names = {r.id: f"{r.name.en} / {r.name.get('zh-TW')}" for r in scheme.rules}
    people, backfill = history(customers, wall_ms())
    started = time.monotonic()
    async with KafkaPublisher(settings) as publisher:
        for start in range(0, len(backfill), 5000):
            await publisher.publish(
                [(topics.orders, k, v) for k, v in backfill[start : start + 5000]]
            )
        traffic = live_orders(people, seed=wall_ms())  # fresh event ids on every run
        with Live(_table({}, names, {}, 0), refresh_per_second=2) as live:
            next_draw = 0.0
            while duration <= 0 or time.monotonic() - started < duration:
                tick = time.monotonic()
                burst = max(1, int(rate / 10))
                await publisher.publish([(topics.orders, *next(traffic)) for _ in range(burst)])
                if tick >= next_draw:
                    live.update(
                        _table(
                            await store.counts(),
                            names,
                            await store.stats(),
                            time.monotonic() - started,
                        )
                    )
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


def _spawn(args: list[str], env: dict[str, str], log_path: Path) -> Child:
    argv = [sys.executable, "-m", "stream.cli", *args]
    return Child(f"rfm {args[0]}", argv, env, log_path).start()


def run_demo(settings: Settings, customers: int, rate: float, duration: float) -> None:
    """Stack, worker, API + dashboard, campaigns with a local webhook receiver, traffic."""
    from stream import stack

    stack.up()
    tmp = Path(tempfile.gettempdir())
    env = dict(os.environ)
    if "RFM_CONFIG" not in env:
        cfg = tmp / "rfm-demo.toml"
        # fast cadences so the demo shows thresholds, CLV and churn moving within a minute
        cfg.write_text(
            '[scoring]\nrefresh_interval = "5s"\n'
            '[prediction]\nfit_interval = "30s"\nchurn_threshold = 0.3\n',
            encoding="utf-8",
        )
        env["RFM_CONFIG"] = str(cfg)
        settings = replace(settings, scoring=replace(settings.scoring, refresh_interval_s=5.0))
    receiver = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    hook = f"http://127.0.0.1:{receiver.server_address[1]}/rfm/webhook"
    example = resources.files("consumers.campaigns").joinpath("example.toml").read_text("utf-8")
    rules = tmp / "rfm-demo-campaigns.toml"
    rules.write_text(example.replace("http://127.0.0.1:8765/rfm/webhook", hook), "utf-8")
    port = _free_port(8080)
    children = [
        _spawn(["worker"], env, tmp / "rfm-demo-worker.log"),
        _spawn(["api", "--port", str(port)], env, tmp / "rfm-demo-api.log"),
        _spawn(["campaigns", "--rules", str(rules)], env, tmp / "rfm-demo-campaigns.log"),
    ]
    print(f"dashboard: http://127.0.0.1:{port}/")
    print(f"logs: {tmp}/rfm-demo-{{worker,api,campaigns}}.log; webhooks go to {hook}")
    try:
        asyncio.run(_run(settings, customers, rate, duration))
    except KeyboardInterrupt:
        pass
    finally:
        stop_all(children)
        receiver.shutdown()
        print("\ndemo stopped; the stack keeps running (`rfm stack down` stops it)")
