"""`rfm api` and the dashboard over state a real `rfm worker` made from events sent through
Kafka: nothing is fed in process. Expected values come from ``tests.oracle`` (a batch
recomputation from the raw events that never reads Redis); the live stream (``/api/live``,
Server-Sent Events) and the dashboard in a real Chromium must show a count move when a new
event goes through Kafka and the worker, and end at the oracle's tally after a refresh.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any, TypeVar
from urllib.parse import quote

import orjson
import pytest
import redis

from stream.kafka import ensure_topics
from stream.kafka.topics import Topics
from stream.schemes import load_scheme
from stream.shell.processor import wall_ms
from tests.api_support import ApiServer, erasure, interaction, order, refund
from tests.conftest import Isolated
from tests.oracle import Expected, aggregates, recompute
from tests.support import WorkerProcess, events_applied, produce, read_topic, rfm, wait_for
from tests.test_dashboard_browser import DEADLINE_MS, browser_page  # noqa: F401 (a fixture)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

TOKEN = "fed-" + "w9" * 14
DAY = 86_400_000
CONFIG = '[scoring]\nclock = "event"\nrefresh_interval = "1h"\n'  # refreshes are `rfm refresh`
ODD_IDS = ("客戶 {1}:x", "a/b?c#d%e f", "😀 emoji", "=cmd")
ERASED = "c-007"
T = TypeVar("T")


def detached(fn: Callable[..., T], *args: Any) -> T:
    """``fn`` on a thread of its own: the helpers run event loops of their own, and
    Playwright's sync API already runs one on this thread."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(fn, *args).result()


def keyed(topic: str, doc: dict[str, Any]) -> tuple[str, bytes, bytes]:
    return topic, doc["customer_id"].encode(), orjson.dumps(doc)


def history(topics: Topics, now: int, seed: int) -> list[tuple[str, dict[str, Any]]]:
    """Orders over many channels, partial and full refunds, interactions; per customer in
    the order they happen (each customer's events share a partition)."""
    rng = random.Random(seed)
    out: list[tuple[str, dict[str, Any]]] = []
    n = 0
    for cid in [f"c-{k:03d}" for k in range(90)] + list(ODD_IDS):
        orders: list[tuple[str, int]] = []
        for _ in range(rng.randint(1, 5)):
            minor = rng.randint(100, 600_000)
            at = now - rng.randint(2, 300) * DAY - rng.randint(0, DAY)
            channel = rng.choice(["online", "pos", "app", "social"])
            out.append((topics.orders, order(n, cid, minor, at, channel)))
            orders.append((f"o-{n}", minor))
            n += 1
        if rng.random() < 0.15:
            oid, minor = orders[0]
            full = rng.random() < 0.5
            part = minor if full else rng.randint(1, minor)
            out.append((topics.orders, refund(n, oid, cid, part, now - DAY, full=full)))
            n += 1
        if rng.random() < 0.3:
            out.append((topics.interactions, interaction(n, cid, now - rng.randint(1, 90) * DAY)))
            n += 1
    for k in range(6):  # interacting, never bought
        out.append((topics.interactions, interaction(n, f"fan-{k}", now - k * DAY)))
        n += 1
    return out


def tally(expected: dict[str, Expected]) -> dict[str, int]:
    return dict(Counter(w.segment for w in expected.values()))


def sse_counts(lines: Iterator[str], deadline: float) -> Iterator[dict[str, Any]]:
    """Each ``counts`` event's data as it arrives; fails once ``deadline`` (monotonic) has
    passed (heartbeats and idle reads end at the client's read timeout)."""
    name, data = "", ""
    for line in lines:
        if time.monotonic() > deadline:
            raise AssertionError("the live stream did not show the expected counts in time")
        if line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:"):
            data = line[5:].strip()
        elif line == "" and name == "counts" and data:
            yield dict(orjson.loads(data))
            name, data = "", ""
    raise AssertionError("the live stream ended")


def nonzero(counts: dict[str, int]) -> dict[str, int]:
    return {k: v for k, v in counts.items() if v}


class Fed:
    """One deployment: a worker fed through Kafka, `rfm refresh`, and the log sent so far."""

    def __init__(self, isolated: Isolated, start_worker: Callable[..., WorkerProcess]) -> None:
        self.iso = isolated
        self.settings = isolated.settings()
        self.topics = Topics(self.settings.topic_prefix)
        detached(asyncio.run, ensure_topics(self.settings))
        self.config = isolated.config_file(CONFIG)
        self.worker = start_worker(self.config)
        self.client = redis.Redis.from_url(isolated.infra.redis_url)
        self.log: list[dict[str, Any]] = []  # every event sent, in order
        self.inputs = 0  # of them, those the worker counts (not erasures)

    def send(self, events: list[tuple[str, dict[str, Any]]]) -> None:
        """Through Kafka, then wait until the worker has dealt with every one."""
        detached(produce, self.settings, [keyed(t, e) for t, e in events])
        self.log += [e for _, e in events]
        self.inputs += sum(1 for t, _ in events if t != self.topics.erasure)
        wait_for(
            lambda: events_applied(self.client, self.iso.name) >= self.inputs,
            timeout=120,
            what=f"the worker to apply {self.inputs} events",
            diagnose=self.worker.tail,
        )

    def erase(self, cid: str, at: int) -> None:
        self.send([(self.topics.erasure, erasure(cid, at))])

        def published() -> bool:
            return any(
                m.json()["customer_id"] == cid and m.json()["to"] is None
                for m in detached(read_topic, self.settings, self.topics.changes)
            )

        wait_for(published, timeout=60, what=f"the erasure of {cid}", diagnose=self.worker.tail)

    def refresh(self) -> None:
        rfm(self.iso, self.config, "refresh")

    def oracle(self) -> dict[str, Expected]:
        return recompute(self.log, load_scheme("rfm-classic", 5))

    def api(self) -> ApiServer:
        return ApiServer(self.iso.process_env(self.config), self.iso.tmp / "api.log", TOKEN)

    def close(self) -> None:
        self.client.close()


def test_api_and_live_stream_over_state_a_worker_made_from_kafka(
    isolated: Isolated, start_worker: Callable[..., WorkerProcess]
) -> None:
    fed = Fed(isolated, start_worker)
    now = wall_ms() - 60_000
    try:
        fed.send(history(fed.topics, now, seed=11))
        fed.erase(ERASED, now)
        fed.refresh()
        expected = fed.oracle()
        assert ERASED not in expected and set(ODD_IDS) <= set(expected)

        with fed.api() as api, api.client() as http:
            # -- segment counts ---------------------------------------------------------------
            segments = http.get("/api/segments").json()
            counts = {s["id"]: s["customers"] for s in segments["segments"]}
            assert nonzero(counts) == tally(expected)
            assert segments["total"] == len(expected)

            # -- segment report: exact money per segment ----------------------------------------
            report = http.get("/api/report").json()
            rows = {r["id"]: r for r in report["segments"]}
            by_segment: dict[str, list[Expected]] = {}
            for want in expected.values():
                by_segment.setdefault(want.segment, []).append(want)
            for seg, members in by_segment.items():
                row = rows[seg]
                assert row["customers"] == len(members), seg
                assert row["orders"] == sum(w.orders for w in members), seg
                assert Decimal(row["revenue"]) == sum((w.monetary for w in members), Decimal(0))
                assert row["channels"] == dict(Counter(c for w in members for c in w.channels))
            assert report["total"]["customers"] == len(expected)
            assert Decimal(report["total"]["revenue"]) == sum(
                (w.monetary for w in expected.values()), Decimal(0)
            )

            # -- R x F grid ---------------------------------------------------------------------
            grid = http.get("/api/grid").json()
            cells = {
                f"{r['r']}:{f}": n
                for r in grid["rows"]
                for f, n in zip(grid["f"], r["customers"], strict=True)
            }
            assert nonzero(cells) == aggregates(expected)[1]

            # -- every customer's lookup; the erased one is gone ---------------------------------
            for cid, want in expected.items():
                doc = http.get("/api/customers/" + quote(cid, safe="")).json()
                assert doc["customer_id"] == cid and doc["segment"] == want.segment, cid
                assert doc["scores"] == want.scores, cid
                assert doc["metrics"]["orders"] == want.orders, cid
                assert Decimal(doc["metrics"]["monetary"]) == want.monetary, cid
                assert doc["metrics"]["interactions"] == want.interactions, cid
                assert set(doc["channels"]) == set(want.channels), cid
            assert http.get("/api/customers/" + ERASED).status_code == 404
            exported = http.get("/api/export").text.splitlines()
            assert sorted(orjson.loads(x)["customer_id"] for x in exported) == sorted(expected)

            # -- live: a new customer's first order, through Kafka and the worker ----------------
            with http.stream("GET", "/api/live") as live:
                assert live.headers["content-type"].startswith("text/event-stream")
                pushed = sse_counts(live.iter_lines(), time.monotonic() + 90)
                first = next(pushed)
                assert first == {"counts": nonzero(counts), "total": len(expected)}

                newcomer = "new {1}:😀"
                fed.send([(fed.topics.orders, order(9_000, newcomer, 777_700, now, "pos"))])
                moved = next(p for p in pushed if p["total"] == len(expected) + 1)
                placed = http.get("/api/customers/" + quote(newcomer, safe="")).json()["segment"]
                grown = Counter(nonzero(counts))
                grown[placed] += 1
                assert moved["counts"] == dict(grown)

                # after a refresh the stream ends where the oracle does
                fed.refresh()
                final = fed.oracle()
                assert newcomer in final
                target = {"counts": tally(final), "total": len(final)}
                next(p for p in pushed if p == target)
    finally:
        fed.close()


def test_dashboard_count_moves_when_an_event_goes_through_kafka(
    isolated: Isolated,
    start_worker: Callable[..., WorkerProcess],
    browser_page: object,  # noqa: F811 (the imported fixture)
) -> None:
    from playwright.sync_api import Page, expect

    page = browser_page
    assert isinstance(page, Page)
    fed = Fed(isolated, start_worker)
    now = wall_ms() - 60_000
    try:
        fed.send(history(fed.topics, now, seed=12))
        fed.refresh()
        expected = fed.oracle()
        with fed.api() as api:
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(api.url + "/")
            page.fill("#token", TOKEN)
            page.click("#login button[type=submit]")
            expect(page.locator("#status")).to_have_attribute(
                "data-state", "streaming", timeout=DEADLINE_MS
            )

            def shows(counts: dict[str, int], total: int) -> None:
                for seg in load_scheme("rfm-classic", 5).ids:
                    cell = page.locator(f'#counts tr[data-segment="{seg}"] td.n')
                    expect(cell).to_have_text(f"{counts.get(seg, 0):,}", timeout=DEADLINE_MS)
                expect(page.locator("#total")).to_have_text(f"{total:,}", timeout=DEADLINE_MS)

            shows(tally(expected), len(expected))
            page.evaluate("window.__sameDocument = true")

            # new customers through Kafka: the board moves without a reload, and after a
            # refresh it shows the oracle's tally of everything sent
            fed.send(
                [
                    (fed.topics.orders, order(9_000 + k, cid, 45_600 + k, now, "app"))
                    for k, cid in enumerate(["walk-in {9}", "walk-in:😀", "walk-in/3"])
                ]
            )
            expect(page.locator("#total")).to_have_text(
                f"{len(expected) + 3:,}", timeout=DEADLINE_MS
            )
            fed.refresh()
            final = fed.oracle()
            shows(tally(final), len(final))
            assert page.evaluate("window.__sameDocument === true"), "the page reloaded"
            assert not errors, errors
            page.close()  # ends the live stream before the server stops
    finally:
        fed.close()
