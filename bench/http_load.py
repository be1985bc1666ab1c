"""Load on an HTTP service (a child process) from this process, and who was busy meanwhile.

Two shapes: ``Service.closed_loop`` keeps a fixed number of requests in flight, each sent
as soon as one is answered (how many the service takes per second); ``paced`` sends at a
fixed rate whatever the answers do (how long an answer takes at that rate, every time
counted from when the request was due, so a stall delays nothing it should not).

The client is aiohttp's: httpx's async client spends about 1 ms of CPU per request here and
gets slower as its pool grows (encode/httpx#3215), so it, not the service, would be the
limit. The CPU time of the service, of this process (the client) and of the whole box over
a timed window says which side was.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import os
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import numpy as np
import orjson

from bench import BenchError
from bench.storefront import Request
from stream.process import Child

T = TypeVar("T")
TIMEOUT_S = 30.0  # one request, connection included


@dataclass(frozen=True)
class Window:
    """One timed load: what the service acknowledged, how long it took, and who was busy
    meanwhile (CPU seconds per wall second: 1.0 is one core)."""

    requests: int
    events: int
    seconds: float
    service_cores: float
    client_cores: float
    box_cores: float  # every process on the box: Kafka, Redis, anyone else's too

    @property
    def events_per_s(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0

    @property
    def requests_per_s(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0

    def limit(self, cores: int, service: str) -> str:
        """Which side bounded the rate: a process at a whole core, else a full box."""
        if self.client_cores >= 0.85:
            return "the client: the load generator used a whole core"
        if self.service_cores >= 0.85:
            return f"{service}: its one process used a whole core"
        if self.box_cores >= 0.9 * cores:
            return f"the box: all {cores} cores busy ({service}, client, Kafka, Redis, others)"
        return "no process used a whole core: requests waited (on Kafka's acks, on Redis)"

    def as_dict(self, service: str, cores: int | None) -> dict[str, Any]:
        """``cores``: also say which side bounded the load (one at a fixed rate has none)."""
        return {
            "requests": self.requests,
            "events": self.events,
            "seconds": round(self.seconds, 3),
            f"{service}_cores": round(self.service_cores, 2),
            "client_cores": round(self.client_cores, 2),
            "box_cores": round(self.box_cores, 2),
            **({"limit": self.limit(cores, f"the {service}")} if cores else {}),
        }


@dataclass(frozen=True)
class AckTimes:
    """Sends at a fixed rate; each acknowledged one's time from when it was due."""

    target_rate: float
    rate: float  # achieved send rate
    sent: int
    samples_ms: list[float]
    load: Window | None = None  # who was busy meanwhile, when a service was measured

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.samples_ms, q)) if self.samples_ms else math.nan

    def as_dict(self, rate_key: str) -> dict[str, float | None]:
        """p50, p95, p99 in ms (None without samples) and the rate under ``rate_key``."""
        quantiles = {f"p{q}": round(self.percentile(q), 2) for q in (50, 95, 99)}
        return {
            **{k: None if math.isnan(v) else v for k, v in quantiles.items()},
            rate_key: round(self.rate, 1),
        }


class Cpu:
    """CPU seconds so far: a process's (the service), this one's (the client), the box's."""

    TICK = os.sysconf("SC_CLK_TCK")

    def __init__(self, pid: int | None) -> None:
        self.pid = pid
        self.wall = time.perf_counter()
        self.client = time.process_time()
        self.service = self._process(pid) if pid is not None else 0.0
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
        self.box = (sum(fields[:8]) - fields[3] - fields[4]) / self.TICK  # minus idle, iowait

    @classmethod
    def _process(cls, pid: int) -> float:
        stat = Path(f"/proc/{pid}/stat").read_text()
        fields = stat[stat.rfind(")") + 2 :].split()
        return (int(fields[11]) + int(fields[12])) / cls.TICK  # utime, stime

    def window(self, requests: int, events: int) -> Window:
        """From this snapshot until now."""
        end = Cpu(self.pid)
        wall = end.wall - self.wall
        return Window(
            requests,
            events,
            wall,
            (end.service - self.service) / wall,
            (end.client - self.client) / wall,
            (end.box - self.box) / wall,
        )


class Service:
    """A running service as its clients see it: where it listens, and what it answered
    (events acknowledged: the ``accepted`` of every 200; other answers by status)."""

    def __init__(self, child: Child, url: str) -> None:
        self.child = child
        self.url = url
        self.acknowledged = 0
        self.refused: Counter[int] = Counter()

    def session(self, connections: int) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(
            self.url,
            connector=aiohttp.TCPConnector(limit=connections),
            timeout=aiohttp.ClientTimeout(total=TIMEOUT_S),
        )

    async def post(self, session: aiohttp.ClientSession, request: Request) -> bool:
        """Whether the service acknowledged the request."""
        async with session.post(request.path, data=request.body, headers=request.headers) as r:
            answer = await r.read()
        if r.status != 200:
            self.refused[r.status] += 1
            return False
        self.acknowledged += int(orjson.loads(answer)["accepted"])
        return True

    async def closed_loop(self, requests: Sequence[Request], connections: int, what: str) -> Window:
        """Every request, ``connections`` at a time, each sent as soon as one is answered."""
        timeout = 60 + len(requests) / 100
        pending: Iterator[Request] = iter(requests)
        async with self.session(connections) as session:
            before = self.acknowledged
            cpu = Cpu(self.child.pid)

            async def lane() -> None:
                for request in pending:
                    await self.post(session, request)

            try:
                async with asyncio.timeout(timeout), asyncio.TaskGroup() as lanes:
                    for _ in range(connections):
                        lanes.create_task(lane())
            except TimeoutError:
                raise BenchError(
                    f"{self.child.name}, {what}: not done in {timeout:.0f}s\n{self.child.tail()}"
                ) from None
            return cpu.window(len(requests), self.acknowledged - before)

    async def paced(self, requests: Sequence[Request], rate: float, connections: int) -> AckTimes:
        async with self.session(connections) as session:
            before = self.acknowledged
            cpu = Cpu(self.child.pid)
            times = await paced(lambda r: self.post(session, r), requests, rate)
            load = cpu.window(len(requests), self.acknowledged - before)
        return dataclasses.replace(times, load=load)


async def paced(send: Callable[[T], Awaitable[bool]], items: Sequence[T], rate: float) -> AckTimes:
    """Send at ``rate`` whatever the answers do (open loop); ``send`` says whether the item
    was acknowledged, and only those are timed."""
    samples: list[float] = []

    async def one(item: T, due: float) -> None:
        if await send(item):
            samples.append((time.perf_counter() - due) * 1000)

    started = time.perf_counter()
    achieved = 0.0
    timeout = len(items) / rate + 60
    try:
        async with asyncio.timeout(timeout), asyncio.TaskGroup() as group:
            for n, item in enumerate(items):
                due = started + n / rate
                if (wait := due - time.perf_counter()) > 0:
                    await asyncio.sleep(wait)
                group.create_task(one(item, due))
            achieved = len(items) / (time.perf_counter() - started)
    except TimeoutError:
        raise BenchError(
            f"{len(samples)} of {len(items)} sends at {rate:g}/s acknowledged after {timeout:.0f}s"
        ) from None
    return AckTimes(rate, achieved, len(items), samples)
