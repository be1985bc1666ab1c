"""`rfm export --format csv` through the real CLI, fed by a real worker (SPEC section 8).

Every cell of every row is checked against the batch oracle (tests/oracle.py), which reads
only the raw events; the expected cells are formatted here from the SPEC's shapes, not by
the exporter.
"""

from __future__ import annotations

import csv
import io
import random
import time
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
import redis

from stream.kafka.topics import Topics
from stream.schemes import load_scheme
from tests.conftest import Isolated
from tests.oracle import Expected, recompute
from tests.support import (
    WorkerProcess,
    clock_swept,
    events_applied,
    lines,
    read_topic,
    rfm,
    wait_for,
)

pytestmark = pytest.mark.integration

DAY = 86_400_000
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
TAIPEI = timezone(timedelta(hours=8))
CONFIG = """
[scoring]
clock = "event"
window_days = 90
buckets = 4
scheme = "rfim"
"""
# docs/operations.md: the columns of `rfm export --format csv`, in order.
COLUMNS = [
    "customer_id",
    "segment",
    "seq",
    "r",
    "f",
    "m",
    "i",
    "orders",
    "monetary",
    "last_order_at",
    "interactions",
    "p_alive",
    "expected_purchases_90d",
    "clv",
    "churn_risk",
]
# Ids a spreadsheet would run as formulas, ids CSV must quote, and plain ones.
ODD_IDS = ["=1+1", "+886912", "-5", "@home", "\ttab", "a,b", 'say "hi"', "line\nbreak", "客戶"]
INTERACTING_ONLY = {"@home", "i-only"}


def rfc3339(ms: int) -> str:
    return (EPOCH + timedelta(milliseconds=ms)).astimezone(TAIPEI).isoformat()


def history(seed: int, clock: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Orders (with refunds after their order) and interactions; the latest event is at
    ``clock``. Some lie outside the 90-day window."""
    rng = random.Random(seed)
    ids = [f"{n:05d}" for n in range(30)] + ODD_IDS + ["i-only"]
    orders: list[dict[str, Any]] = []
    interactions: list[dict[str, Any]] = []
    n = 0
    for cid in ids:
        bought: list[tuple[int, dict[str, Any]]] = []
        for _ in range(0 if cid in INTERACTING_ONLY else rng.randint(1, 6)):
            n += 1
            at = clock - rng.randint(1, 200 * 24) * 3_600_000
            order = {
                "event_id": f"o{n}",
                "type": "order_completed",
                "order_id": f"ord-{n}",
                "customer_id": cid,
                "amount": f"{Decimal(rng.randint(0, 900_000)) / 100:.2f}",
                "currency": "TWD",
                "occurred_at": rfc3339(at) if n % 2 else at,
            }
            bought.append((at, order))
            orders.append(order)
        for at, order in bought:
            # a refund of an order already out of the window is refused (DLQ), by design
            if at > clock - 80 * DAY and rng.random() < 0.4:
                n += 1
                cents = int(Decimal(order["amount"]) * 100)
                orders.append(
                    {
                        "event_id": f"r{n}",
                        "type": "order_refunded",
                        "order_id": order["order_id"],
                        "customer_id": cid,
                        "amount": f"{Decimal(max(1, cents // 3)) / 100:.2f}",
                        "currency": "TWD",
                        "occurred_at": rng.randint(at, clock),
                        "full": rng.random() < 0.5,
                    }
                )
        if cid in INTERACTING_ONLY or rng.random() < 0.5:
            for _ in range(rng.randint(1, 5)):
                n += 1
                interactions.append(
                    {
                        "event_id": f"i{n}",
                        "type": "interaction",
                        "customer_id": cid,
                        "kind": rng.choice(["comment", "like", "live_view", "share"]),
                        "channel": "facebook",
                        "occurred_at": clock - rng.randint(1, 200 * 24) * 3_600_000,
                    }
                )
    orders.append(
        {
            "event_id": "clock",
            "type": "order_completed",
            "order_id": "clock",
            "customer_id": "00000",
            "amount": "1.00",
            "currency": "TWD",
            "occurred_at": clock,
        }
    )
    return orders, interactions


def neutral(text: str) -> str:
    """OWASP's CSV-injection rule: a cell that a spreadsheet would read as a formula gets a
    leading apostrophe."""
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def cells(cid: str, want: Expected, seq: int) -> dict[str, str]:
    def opt(value: object) -> str:
        return "" if value is None else str(value)

    last = want.last_order_at
    return {
        "customer_id": neutral(cid),
        "segment": want.segment,
        "seq": str(seq),
        **{d: opt(want.scores[d]) for d in ("r", "f", "m", "i")},
        "orders": str(want.orders),
        "monetary": f"{want.monetary:.2f}",
        "last_order_at": ""
        if last is None
        else (EPOCH + timedelta(milliseconds=last)).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
        "interactions": str(want.interactions),
        # no CLV model is fitted in this deployment (fit_interval 24h, no `rfm fit`)
        "p_alive": "",
        "expected_purchases_90d": "",
        "clv": "",
        "churn_risk": "",
    }


def table(text: str) -> tuple[list[str], list[dict[str, str]]]:
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader)
    return header, [dict(zip(header, row, strict=True)) for row in reader]


def test_csv_export_from_the_cli_is_the_oracle_cell_by_cell(
    isolated: Isolated, start_worker: Callable[..., WorkerProcess]
) -> None:
    clock = int(time.time() * 1000) - DAY
    orders, interactions = history(20261207, clock)
    config = isolated.config_file(CONFIG)
    worker = start_worker(config)
    for kind, events in (("orders", orders), ("interactions", interactions)):
        rfm(
            isolated,
            config,
            "import",
            str(lines(isolated.tmp / f"{kind}.jsonl", events)),
            "--kind",
            kind,
        )
    client = redis.Redis.from_url(isolated.infra.redis_url)
    try:
        total = len(orders) + len(interactions)
        wait_for(
            lambda: events_applied(client, isolated.name) >= total,
            timeout=120,
            what=f"{total} events applied",
            diagnose=worker.tail,
        )
        wait_for(lambda: clock_swept(client, isolated.name), timeout=60, what="the clock sweep")
        rfm(isolated, config, "refresh")
        wait_for(lambda: clock_swept(client, isolated.name), timeout=60, what="the outbox")
        assert int(client.hget(f"{isolated.name}:stats", "rejected") or 0) == 0
    finally:
        client.close()

    expected = recompute(orders + interactions, load_scheme("rfim", 4), buckets=4, window_days=90)
    # The log is built for what this test checks: formula ids, a window that drops some
    # orders, interactions-only customers, customers without interactions.
    lifetime = recompute(orders + interactions, load_scheme("rfim", 4), buckets=4, window_days=0)
    assert any(lifetime[c].orders > w.orders for c, w in expected.items())
    assert all(expected[c].scores["r"] is None for c in INTERACTING_ONLY)
    assert {o.get("full") for o in orders if o["type"] == "order_refunded"} == {True, False}
    assert any(w.scores["i"] is None for w in expected.values())

    # seq: the number of distinct changes published for the customer (SPEC section 6)
    seqs: dict[str, set[int]] = defaultdict(set)
    for message in read_topic(isolated.settings(), Topics(f"{isolated.name}.").changes):
        change = message.json()
        seqs[change["customer_id"]].add(change["seq"])
    assert all(s == set(range(1, len(s) + 1)) for s in seqs.values())
    want = {neutral(cid): cells(cid, w, len(seqs[cid])) for cid, w in expected.items()}

    out = isolated.tmp / "all.csv"
    rfm(isolated, config, "export", "--format", "csv", "-o", str(out))
    header, rows = table(out.read_bytes().decode("utf-8"))
    assert header == COLUMNS
    assert len(rows) == len(expected)
    got = {row["customer_id"]: row for row in rows}
    assert set(got) == set(want)
    mismatches = [(cid, got[cid], w) for cid, w in want.items() if got[cid] != w]
    assert not mismatches, f"{len(mismatches)} rows differ from the oracle: {mismatches[:3]}"

    # --segment to stdout: exactly that segment's customers, the same cells.
    tally: dict[str, int] = defaultdict(int)
    for w in expected.values():
        tally[w.segment] += 1
    biggest = max(tally, key=lambda s: (tally[s], s))
    header, rows = table(rfm(isolated, config, "export", "--format", "csv", "--segment", biggest))
    assert header == COLUMNS
    assert sorted(rows, key=lambda r: r["customer_id"]) == sorted(
        (w for w in want.values() if w["segment"] == biggest), key=lambda r: r["customer_id"]
    )
    assert worker.alive, worker.tail()
