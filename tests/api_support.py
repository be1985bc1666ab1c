"""Test-side plumbing for the operator API: the scorer run in process, and `rfm api` as a child.

State is made the way production makes it: SPEC section 2 events go through the real
``Processor`` (the worker's code path, Kafka replaced by a collecting output port) and the
real ``refresh``; the API under test is the real `rfm api` process on a free loopback port.
"""

from __future__ import annotations

import asyncio
import socket
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson

from stream.config import Settings
from stream.core.step import Record
from stream.process import Child
from stream.shell.refit import FitReport, refit
from stream.shell.refresh import refresh
from stream.shell.wiring import build_processor

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def rfc3339(ms: int) -> str:
    return (EPOCH + timedelta(milliseconds=ms)).isoformat(timespec="milliseconds")


def order(n: int, cid: str, minor: int, at: int, channel: str = "online") -> dict[str, Any]:
    return {
        "event_id": f"evt-o{n}",
        "type": "order_completed",
        "order_id": f"o-{n}",
        "customer_id": cid,
        "amount": f"{minor // 100}.{minor % 100:02d}",
        "currency": "TWD",
        "occurred_at": rfc3339(at),
        "channel": channel,
    }


def refund(n: int, order_id: str, cid: str, minor: int, at: int, full: bool) -> dict[str, Any]:
    return {
        "event_id": f"evt-r{n}",
        "type": "order_refunded",
        "order_id": order_id,
        "customer_id": cid,
        "amount": f"{minor // 100}.{minor % 100:02d}",
        "currency": "TWD",
        "occurred_at": rfc3339(at),
        "full": full,
    }


def interaction(n: int, cid: str, at: int, kind: str = "comment") -> dict[str, Any]:
    return {
        "event_id": f"evt-i{n}",
        "type": "interaction",
        "customer_id": cid,
        "kind": kind,
        "channel": "facebook",
        "occurred_at": rfc3339(at),
    }


def erasure(cid: str, at: int) -> dict[str, Any]:
    return {"customer_id": cid, "requested_at": rfc3339(at)}


@dataclass
class Collector:
    """The output port: keeps what would have gone to Kafka, acknowledges at once."""

    messages: list[tuple[str, bytes | None, bytes]] = field(default_factory=list)

    async def publish(self, messages: Sequence[tuple[str, bytes | None, bytes]]) -> None:
        self.messages.extend(messages)


def score_events(
    settings: Settings,
    events: Sequence[tuple[str, dict[str, Any]]],
    *,
    batch: int = 5000,
    then_refresh: bool = False,
    then_fit: bool = False,
) -> list[dict[str, Any]]:
    """Apply ``(topic, event)`` pairs in order through the real processor (and a refresh);
    returns the segment changes it published."""
    out = Collector()

    async def run() -> None:
        processor = build_processor(settings, out)
        try:
            for start in range(0, len(events), batch):
                chunk = events[start : start + batch]
                records = [
                    Record(topic, 0, start + k, e["customer_id"].encode(), orjson.dumps(e))
                    for k, (topic, e) in enumerate(chunk)
                ]
                stats = await processor.process(records)
                assert stats.rejected == 0, stats
            if then_refresh:
                await refresh(processor)
            if then_fit:
                assert (await refit(processor)).model is not None
        finally:
            await processor.store.aclose()

    # A thread of its own: callers may already run an event loop (Playwright's sync API does).
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, run()).result()
    changes = settings.topic_prefix + "segment-changes"
    return [orjson.loads(v) for t, _, v in out.messages if t == changes]


def fit_model(settings: Settings) -> FitReport:
    """The real CLV refit (``rfm fit``'s path) over what the store holds; what it did."""

    async def run() -> FitReport:
        processor = build_processor(settings, Collector())
        try:
            return await refit(processor)
        finally:
            await processor.store.aclose()

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, run()).result()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ApiServer(Child):
    """`rfm api` as a child process on a free loopback port, its log kept for failures."""

    def __init__(
        self, env: dict[str, str], log: Path, token: str | None = None, host: str = "127.0.0.1"
    ) -> None:
        self.port = free_port()
        self.host = host
        argv = [sys.executable, "-m", "stream.cli", "api", "--host", host, "--port", str(self.port)]
        env = {**env, **({"RFM_API_TOKEN": token} if token is not None else {})}
        super().__init__("rfm api", argv, env, log)
        self.token = token

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def client(self, **kwargs: Any) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30, **kwargs)

    def __enter__(self) -> ApiServer:
        self.start()

        def answers() -> bool:
            try:
                httpx.get(f"{self.url}/healthz", timeout=2)
            except httpx.TransportError:
                return False
            return True

        self.wait_ready(answers, timeout=30, what="answer on /healthz")
        return self

    def __exit__(self, *_: object) -> None:
        self.stop(timeout=15)

    def peak_rss_kib(self) -> int:
        """VmHWM: the most resident memory the server process has ever used."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
        raise AssertionError("no VmHWM in /proc status")
