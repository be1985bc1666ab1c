"""The default clock (`clock = "wall"`, SPEC section 3) end to end: a real worker with no
configuration at all, the real CLI, Kafka and Redis.

On the wall clock the window is measured from the time of day, not from the events: orders
older than 365 days count for nothing even when nothing newer has arrived, and an order
leaves the window when the wall clock passes its 365th day, with no event from anyone. The
expected state is the batch oracle (tests/oracle.py) evaluated at the wall-clock time of
the export.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import orjson
import pytest
import redis

from stream.kafka import ensure_topics
from stream.kafka.topics import Topics
from stream.schemes import load_scheme
from tests.conftest import Isolated
from tests.oracle import recompute
from tests.support import (
    WorkerProcess,
    changes_of,
    clock_swept,
    events_applied,
    produce,
    rfm,
    wait_for,
)

pytestmark = pytest.mark.integration

DAY = 86_400_000
HOUR = 3_600_000
WINDOW = 365 * DAY  # the default window_days
EDGE_S = 15  # the edge orders leave the window this long after they are sent


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


def order(n: int, cid: str, at: int, cents: int) -> dict[str, Any]:
    return {
        "event_id": f"o{n}",
        "type": "order_completed",
        "order_id": f"o{n}",
        "customer_id": cid,
        "amount": f"{Decimal(cents) / 100:.2f}",
        "currency": "TWD",
        "occurred_at": at,
    }


def interaction(n: int, cid: str, at: int) -> dict[str, Any]:
    return {
        "event_id": f"i{n}",
        "type": "interaction",
        "customer_id": cid,
        "kind": "comment",
        "channel": "facebook",
        "occurred_at": at,
    }


def population(seed: int, now: int) -> list[dict[str, Any]]:
    """Forty customers, every event 20 to 300 days old: far from the window's edge."""
    rng = random.Random(seed)
    events: list[dict[str, Any]] = []
    for c in range(40):
        cid = f"{c:05d}"
        for _ in range(rng.randint(1, 6)):
            at = now - rng.randint(20 * 24, 300 * 24) * HOUR
            events.append(order(len(events), cid, at, rng.randint(100, 500_000)))
        if c % 3 == 0:
            at = now - rng.randint(20 * 24, 300 * 24) * HOUR
            events.append(interaction(len(events), cid, at))
    return events


def test_the_default_wall_clock_windows_and_sweeps_by_the_time_of_day(
    isolated: Isolated, start_worker: Callable[..., WorkerProcess]
) -> None:
    settings = isolated.settings()
    assert settings.scoring.clock == "wall"  # no configuration: the defaults
    topics = Topics(settings.topic_prefix)
    client = redis.Redis.from_url(isolated.infra.redis_url)

    def send(events: list[dict[str, Any]]) -> None:
        produce(
            settings,
            [
                (
                    topics.interactions if e["type"] == "interaction" else topics.orders,
                    e["customer_id"].encode(),
                    orjson.dumps(e),
                )
                for e in events
            ],
        )

    def applied(n: int) -> None:
        wait_for(
            lambda: events_applied(client, isolated.name) >= n,
            timeout=120,
            what=f"{n} events applied",
            diagnose=worker.tail,
        )

    def swept() -> bool:
        return clock_swept(client, isolated.name, now=wall_ms())

    asyncio.run(ensure_topics(settings))
    worker = start_worker()
    log = population(20261208, wall_ms())
    send(log)
    applied(len(log))
    rfm(isolated, None, "refresh")  # thresholds from the population, before the edge

    t0 = wall_ms()
    edge_at = t0 - WINDOW + EDGE_S * 1000  # inside the window for EDGE_S more seconds
    late = [
        # a big spender whose four big orders are about to leave the window
        *(order(1000 + k, "fading", edge_at + k, 900_000) for k in range(4)),
        order(1004, "fading", t0 - 25 * DAY, 150),
        # interactions only, three about to leave the window
        *(interaction(1010 + k, "engaged", edge_at + k) for k in range(3)),
        interaction(1013, "engaged", t0 - 30 * DAY),
        # two orders already older than 365 days by the wall clock (not by the events)
        order(1020, "ancient", t0 - 375 * DAY, 50_000),
        order(1021, "ancient", t0 - 370 * DAY, 50_000),
        order(1022, "ancient", t0 - 100 * DAY, 1_000),
    ]
    send(late)
    log += late
    applied(len(log))
    assert events_applied(client, isolated.name) == len(log)
    assert int(client.hget(f"{isolated.name}:stats", "rejected") or 0) == 0

    # No event after these: the wall clock alone carries the edge orders out.
    passed = edge_at + 3 + WINDOW  # the last edge order is out from here on
    wait_for(
        lambda: wall_ms() >= passed and swept(),
        timeout=EDGE_S + 60,
        what="the wall clock to pass the edge and the sweep to follow",
        diagnose=worker.tail,
    )
    chain = changes_of(settings, "fading")
    assert chain and chain[-1]["cause"] == "clock", (
        "no clock-driven move for 'fading': if its first change already shows 1 order, "
        f"its events were applied after the edge had passed (a loaded machine?): {chain}"
    )
    assert len(chain) > 1 and chain[-2]["metrics"]["orders"] > 1
    assert (chain[-1]["metrics"]["orders"], chain[-1]["metrics"]["monetary"]) == (1, "1.50")

    rfm(isolated, None, "refresh")
    wait_for(swept, timeout=60, what="the refresh's changes published", diagnose=worker.tail)
    exported = rfm(isolated, None, "export")
    now = wall_ms()

    scheme = load_scheme("rfm-classic", 5)
    expected = recompute(log, scheme, now=now)
    # What the log is built for: nothing else is near the window's edge (the expected state
    # holds for the whole run), and the event clock would count what the wall clock drops.
    assert recompute(log, scheme, now=passed) == expected
    assert recompute(log, scheme, now=now + HOUR) == expected
    by_events = recompute(log, scheme)
    assert (by_events["ancient"].orders, expected["ancient"].orders) == (3, 1)
    assert (expected["fading"].orders, expected["engaged"].interactions) == (1, 1)

    rows = {r["customer_id"]: r for r in map(orjson.loads, exported.splitlines())}
    assert set(rows) == set(expected)
    mismatches = []
    for cid, want in expected.items():
        row = rows[cid]
        got = (
            row["segment"],
            row["scores"],
            row["metrics"]["orders"],
            Decimal(row["metrics"]["monetary"]),
            row["metrics"]["interactions"],
        )
        wanted = (want.segment, want.scores, want.orders, want.monetary, want.interactions)
        if got != wanted:
            mismatches.append((cid, got, wanted))
    assert not mismatches, f"{len(mismatches)} customers differ from the oracle: {mismatches[:5]}"
    assert worker.alive, worker.tail()
    client.close()
