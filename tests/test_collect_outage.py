"""`rfm collect` while Kafka is down (SPEC section 11): every request is answered 503 with
``Retry-After`` within 5 s, the time the platforms wait (each one measured); once the broker
is back, every request that got a 2xx, before or after, is in Kafka and applied by the
worker, and the requests refused during the outage, sent again as the platforms do, are
applied once. On a private stack on free ports, so the shared broker keeps running."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import redis

from stream.kafka.topics import Topics
from tests.api_support import order
from tests.conftest import Isolated
from tests.support import (
    WorkerProcess,
    assert_export_is_the_oracle,
    events_applied,
    read_topic,
    rfm,
    wait_for,
)
from tests.test_collect import (
    TOKEN,
    CollectServer,
    config_text,
    shopify_style_order,
    spec_order,
)
from tests.test_faults import PrivateStack, kill_and_wait, private_stack  # noqa: F401 (fixture)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

DAY = 86_400_000
PLATFORM_WAIT = 5.0  # seconds a storefront platform waits for an answer
IN_FLIGHT, CROWD = 3, 12  # collect.max_in_flight, and requests sent at once during the outage


def test_broker_outage_is_503_within_5s_and_nothing_answered_2xx_is_lost(
    private_stack: PrivateStack,  # noqa: F811 (the fixture imported above)
    tmp_path: Path,
) -> None:
    iso = Isolated(private_stack.infra, "outage", tmp_path)
    config = iso.config_file(config_text(f"[collect]\nmax_in_flight = {IN_FLIGHT}\n"))
    now = int(time.time() * 1000) - 60_000
    sent: list[dict[str, Any]] = []  # every event of a request answered 2xx
    refused: list[tuple[str, Any]] = []  # requests answered 503, to be sent again

    def request(server: CollectServer, n: int) -> tuple[str, Any, httpx.Response]:
        """Alternately a batch of SPEC events and a Shopify webhook, each with new events."""
        if n % 2:
            payload = shopify_style_order(5000 + n, 9000 + n % 3, f"{n}.50", now - n * DAY)
            delivery = f"outage-{n}"
            answer = server.webhook("shopify", "orders/paid", payload, delivery=delivery)
            return "webhook", (payload, delivery), answer
        batch = [
            order(100 * n + k, f"c-{k}", 100 * (n + k) + 25, now - (n + k) * DAY) for k in range(3)
        ]
        return "events", batch, server.events(batch)

    def accepted(kind: str, body: Any) -> None:
        if kind == "events":
            sent.extend(body)
        else:
            payload, _ = body
            paid = spec_order(
                f"shopify:lanyu:{payload['id']}:paid",
                str(payload["id"]),
                str(payload["customer"]["id"]),
                payload["total_price"],
                0,
            )
            sent.append({**paid, "occurred_at": payload["processed_at"]})

    def resend(server: CollectServer, kind: str, body: Any) -> httpx.Response:
        if kind == "events":
            return server.events(body)
        payload, delivery = body
        return server.webhook("shopify", "orders/paid", payload, delivery=delivery)

    with CollectServer(iso, config) as server:
        for n in range(4):
            kind, body, answer = request(server, n)
            assert answer.status_code == 200, answer.text
            accepted(kind, body)

        kill_and_wait(private_stack.status().kafka.pid or 0)
        took: list[float] = []
        for n in range(4, 10):
            started = time.monotonic()
            kind, body, answer = request(server, n)
            took.append(time.monotonic() - started)
            assert answer.status_code == 503, answer.text
            assert int(answer.headers["retry-after"]) > 0
            refused.append((kind, body))
        print(f"503 answered in {', '.join(f'{t:.2f}s' for t in took)}")
        assert max(took) < PLATFORM_WAIT, took
        assert server.http.get("/healthz").status_code == 503
        assert server.metric("rfm_collect_broker_failures_total") == len(took)

        # a crowd while Kafka is down: IN_FLIGHT wait for the acknowledgement, the rest are
        # answered 503 at once instead of piling up behind them
        crowd = asyncio.run(asyncio.wait_for(at_once(server, now), 60))
        quick = [t for status, reason, t, _ in crowd if status == 503 and "in flight" in reason]
        waited = [t for status, reason, t, _ in crowd if status == 503 and "in time" in reason]
        print(
            f"crowd of {CROWD}: {len(quick)} refused in <= {max(quick, default=0):.2f}s,",
            f"{len(waited)} waited",
        )
        assert (len(quick), len(waited)) == (CROWD - IN_FLIGHT, IN_FLIGHT), crowd
        assert max(quick) < 1.0 <= min(waited)
        assert server.metric("rfm_collect_overloaded_total") == CROWD - IN_FLIGHT
        refused.extend(("events", batch) for *_, batch in crowd)  # the senders try again

        private_stack.up()
        wait_for(server.healthy, timeout=90, what="/healthz to answer 200 again")
        for kind, body in refused:  # the platforms send again
            answer = resend(server, kind, body)
            assert answer.status_code == 200, answer.text
            assert answer.json()["accepted"] > 0, "a delivery refused with 503 must be applied"
            accepted(kind, body)
        for n in range(10, 14):
            kind, body, answer = request(server, n)
            assert answer.status_code == 200, answer.text
            accepted(kind, body)
        assert server.alive, server.tail()

    settings = iso.settings()
    topics = Topics(settings.topic_prefix)
    records = read_topic(settings, topics.orders)
    held = {m.json()["event_id"] for m in records}
    assert {e["event_id"] for e in sent} <= held, "an event answered 2xx is not in Kafka"

    worker = WorkerProcess(iso.process_env(config), tmp_path / "worker.log").start()
    try:
        wait_for(
            lambda: applied(iso) >= len(records),
            timeout=120,
            what="the worker to apply every record",
            diagnose=worker.tail,
        )
        rfm(iso, config, "refresh")
        assert_export_is_the_oracle(rfm(iso, config, "export"), sent)
    finally:
        worker.stop()


async def at_once(
    server: CollectServer, now: int
) -> list[tuple[int, str, float, list[dict[str, Any]]]]:
    """CROWD event batches sent together: (status, error, seconds to the answer, batch)."""
    limits = httpx.Limits(max_connections=CROWD)
    async with httpx.AsyncClient(base_url=server.url, timeout=30, limits=limits) as http:

        async def one(n: int) -> tuple[int, str, float, list[dict[str, Any]]]:
            batch = [order(90_000 + n, f"crowd-{n}", 500, now - DAY)]
            started = time.monotonic()
            answer = await http.post(
                "/v1/events",
                content=orjson.dumps(batch),
                headers={"authorization": f"Bearer {TOKEN}", "content-type": "application/json"},
            )
            assert int(answer.headers.get("retry-after", "0")) > 0, answer.text
            return answer.status_code, answer.json()["error"], time.monotonic() - started, batch

        return list(await asyncio.gather(*(one(n) for n in range(CROWD))))


def applied(iso: Isolated) -> int:
    client = redis.Redis.from_url(iso.infra.redis_url, socket_timeout=2)
    try:
        return events_applied(client, iso.name)
    except redis.RedisError:
        return -1
    finally:
        client.close()
