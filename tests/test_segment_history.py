"""Why did this customer move? The customer lookup's segment history, end to end: events go
through Kafka to a real `rfm worker`, the real `rfm api` reads what its commits kept.

Fixed thresholds and the event clock make every score computable by hand here (the oracle
below), independently of the scorer: F edges 1,2,4,8 and M edges 100,500,1000,5000 (score =
1 + edges below the value), R 5 throughout (every event within hours of the clock), and
rfm-classic's map on R and fm = (F + M + 1) // 2.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
import redis

from stream.kafka import ensure_topics
from stream.kafka.topics import Topics
from stream.shell.processor import wall_ms
from stream.store.history import segment_history
from stream.store.keys import Keys
from tests.api_support import ApiServer, erasure, order, refund, score_events
from tests.conftest import Isolated
from tests.support import WorkerProcess, changes_of, events_applied, produce, wait_for
from tests.test_erasure_traces import keyed, outbox_empty, traces

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

CONFIG = """
[store]
segment_history = 3
[scoring]
mode = "fixed"
clock = "event"
window_days = 0
[scoring.edges]
r = [7, 14, 30, 60]
f = [1, 2, 4, 8]
m = [100, 500, 1000, 5000]
i = [1, 2, 4, 8]
"""
HOUR = 3_600_000
TWICE, MOVER = "客戶 {2}:twice", "mover"


def scores(f: int, m: int) -> dict[str, int | None]:
    return {"r": 5, "f": f, "m": m, "i": None}


NEW, POTENTIAL, CHAMPIONS = "new_customers", "potential_loyalist", "champions"


# (customer, event, seq it moves the customer to, from, to, scores after) in publication order
def steps(t0: int) -> list[tuple[str, dict[str, Any], int, str | None, str, dict[str, Any]]]:
    most_back = refund(4, "o-2", TWICE, 195_000, t0 + 3 * HOUR, False)
    all_back = refund(6, "o-5", MOVER, 300_000, t0 + 5 * HOUR, True)
    return [
        # 50.00, one order: F1 M1, fm 1
        (MOVER, order(1, MOVER, 5_000, t0), 1, None, NEW, scores(1, 1)),
        # 2,000.00, one order: F1 M4, fm 3
        (TWICE, order(2, TWICE, 200_000, t0 + HOUR), 1, None, POTENTIAL, scores(1, 4)),
        # 2,050.00 in two orders: F2 M4, fm 3
        (MOVER, order(3, MOVER, 200_000, t0 + 2 * HOUR), 2, NEW, POTENTIAL, scores(2, 4)),
        # 1,950.00 refunded of 2,000.00: F1 M1 (50.00), fm 1
        (TWICE, most_back, 2, POTENTIAL, NEW, scores(1, 1)),
        # 5,050.00 in three orders: F3 M5, fm 4
        (MOVER, order(5, MOVER, 300_000, t0 + 4 * HOUR), 3, POTENTIAL, CHAMPIONS, scores(3, 5)),
        # the 3,000.00 order refunded in full: it no longer counts, F2 M4 (2,050.00), fm 3
        (MOVER, all_back, 4, CHAMPIONS, POTENTIAL, scores(2, 4)),
    ]


def test_the_lookup_shows_why_each_change_happened(
    isolated: Isolated, start_worker: Callable[..., WorkerProcess]
) -> None:
    settings = isolated.settings()
    topics = Topics(settings.topic_prefix)
    keys = Keys(settings.key_prefix)
    config = isolated.config_file(CONFIG)
    asyncio.run(ensure_topics(settings))
    worker = start_worker(config)
    client = redis.Redis.from_url(isolated.infra.redis_url)
    t0 = wall_ms() - 24 * HOUR
    plan = steps(t0)
    try:
        # all at once: each event that moves a customer makes a change of its own
        produce(settings, [keyed(topics.orders, event) for _, event, *_ in plan])
        wait_for(
            lambda: events_applied(client, isolated.name) >= len(plan),
            timeout=60,
            what=f"{len(plan)} events applied",
            diagnose=worker.tail,
        )
        wait_for(lambda: outbox_empty(client, keys), timeout=30, what="the outbox to drain")

        with ApiServer(isolated.process_env(config), isolated.tmp / "api.log") as api:
            http = api.client()
            assert http.get("/api/thresholds").json()["mode"] == "fixed"
            version = 0  # fixed edges are never republished: version 0 throughout
            for cid, kept in ((TWICE, 2), (MOVER, 3)):  # MOVER moved 4 times, 3 are kept
                published = changes_of(settings, cid)
                want = [
                    {
                        "seq": seq,
                        "at": by_seq["at"],
                        "from": from_segment,
                        "to": to_segment,
                        "cause": "refund" if event["type"] == "order_refunded" else "order",
                        "trigger_event_id": event["event_id"],
                        "scores_before": before,
                        "scores": after,
                        "thresholds_version": version,
                    }
                    for (who, event, seq, from_segment, to_segment, after), before in zip(
                        plan, _befores(plan), strict=True
                    )
                    if who == cid
                    for by_seq in [published[seq - 1]]
                ][::-1][:kept]
                assert [p["seq"] for p in published] == list(range(1, len(published) + 1))
                doc = http.get("/api/customers", params={"id": cid}).json()
                assert doc["history"] == want, worker.tail()
                assert doc["recent_changes"] == want

            # the transition matrix counts every move, also those one commit carried together
            flow = http.get("/api/transitions").json()
            counted = {(m["from"], m["to"]): m["count"] for m in flow["moves"]}
            assert counted == Counter((frm, to) for _, _, _, frm, to, _ in plan)

            # the cap holds in Redis too, not only in what the lookup shows
            assert client.llen(keys.history(MOVER)) == 3

            # an erasure takes the history with the customer: nothing of it is left
            produce(settings, [keyed(topics.erasure, erasure(TWICE, t0 + 6 * HOUR))])
            wait_for(
                lambda: events_applied(client, isolated.name) >= len(plan) + 1,
                timeout=60,
                what="the erasure applied",
                diagnose=worker.tail,
            )
            wait_for(lambda: outbox_empty(client, keys), timeout=30, what="the outbox to drain")
            assert http.get("/api/customers", params={"id": TWICE}).status_code == 404
            assert traces(client, settings.key_prefix, [TWICE, MOVER]).keys() == {MOVER}
            http.close()
    finally:
        client.close()


def _befores(plan: list[Any]) -> list[dict[str, Any] | None]:
    """Each step's scores before it: the same customer's previous step's after, if any."""
    last: dict[str, dict[str, Any]] = {}
    out: list[dict[str, Any] | None] = []
    for cid, _event, _seq, _from, _to, after in plan:
        out.append(last.get(cid))
        last[cid] = after
    return out


def test_an_erasure_mid_batch_takes_the_history_with_it(isolated: Isolated) -> None:
    """Erased, then buying again in the same batch: the customer starts anew, with a history
    of its own only, exactly as when the erasure had a batch to itself."""
    settings = isolated.settings()
    topics = Topics(settings.topic_prefix)
    keys = Keys(settings.key_prefix)
    t0 = wall_ms() - 24 * HOUR
    events = [
        (topics.orders, order(0, MOVER, 5_000, t0)),
        (topics.orders, order(1, MOVER, 900_000, t0 + HOUR)),
        (topics.erasure, erasure(MOVER, t0 + 2 * HOUR)),  # the second batch: the erasure ...
        (topics.orders, order(2, MOVER, 5_000, t0 + 3 * HOUR)),  # ... then a new order
    ]
    published = score_events(settings, events, batch=2)
    assert [c["cause"] for c in published if c["customer_id"] == MOVER][-2:] == [
        "erasure",
        "order",
    ]
    client = redis.Redis.from_url(isolated.infra.redis_url)
    try:
        lines = client.lrange(keys.history(MOVER), 0, -1)
        assert not [line for line in lines if b"evt-o0" in line or b"evt-o1" in line], lines
        kept = segment_history(lines, {}, 50)
        assert [(h["seq"], h["cause"], h["trigger_event_id"]) for h in kept] == [
            (1, "order", "evt-o2")
        ], lines
    finally:
        client.close()
