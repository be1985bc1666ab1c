"""`rfm collect` under a flood, on loopback, bounded in counts and time (issue "Hold up under
hostile traffic"): a crowd of unsigned webhooks is answered 401 without spending the shop's
tokens or writing a log line each; a signed flood from one shop gets 429 with
``Retry-After`` past that shop's bucket while another shop, the bearer token and a write key
are all answered 200 throughout; every event answered 200 is in Kafka, none answered 429 is,
and a delivery refused with 429 is applied when sent again."""

from __future__ import annotations

import asyncio
import base64
import time
from typing import Any

import httpx
import orjson
import pytest

from stream.kafka.topics import Topics
from tests.api_support import order
from tests.conftest import Isolated
from tests.support import read_topic, wait_for
from tests.test_collect import (
    HEADERS,
    SECRETS,
    SHOPS,
    TOKEN,
    WRITE_KEY,
    CollectServer,
    config_text,
    shopify_style_order,
    sign,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

RATE, BURST = 20, 40  # per source, set low so a test-sized flood passes them
FLOOD, AT_ONCE = 400, 40  # signed webhooks of one shop, and how many are open at once
UNSIGNED = 300
OTHERS = 30  # requests of each other source, sent while the flood runs
DAY = 86_400_000


def webhook_request(platform: str, payload: dict[str, Any], delivery: str, secret: str) -> Any:
    body = orjson.dumps(payload)
    signature, delivery_header, topic_header, shop_header = HEADERS[platform]
    headers = {
        "content-type": "application/json",
        signature: sign(body, secret),
        delivery_header: delivery,
        topic_header: "orders/paid",
        shop_header: SHOPS[platform][1],
    }
    return f"/v1/webhooks/{platform}", body, headers


def paid_id(platform: str, payload: dict[str, Any]) -> str:
    return f"{platform}:{SHOPS[platform][0]}:{payload['id']}:paid"


async def flood(url: str, now: int) -> dict[str, Any]:
    """The flood and the other sources at once; every answer, by what was sent."""
    limits = httpx.Limits(max_connections=AT_ONCE + 10)
    out: dict[str, Any] = {"flood": [], "others": [], "unsigned": []}
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as http:
        gate = asyncio.Semaphore(AT_ONCE)

        async def post(
            kind: str, path: str, body: bytes, headers: dict[str, str], what: Any
        ) -> None:
            async with gate:
                answer = await http.post(path, content=body, headers=headers)
            out[kind].append((what, answer.status_code, answer.headers, answer.content))

        async def signed(n: int) -> None:
            payload = shopify_style_order(70_000 + n, 500 + n % 50, f"{n % 90 + 10}.50", now - DAY)
            path, body, headers = webhook_request(
                "shopify", payload, f"flood-{n}", SECRETS["shopify"]
            )
            await post("flood", path, body, headers, payload)

        async def unsigned(n: int) -> None:
            payload = shopify_style_order(90_000 + n, 900, "1.00", now - DAY)
            path, body, headers = webhook_request(
                "shopify", payload, f"forged-{n}", "not-the-secret"
            )
            await post("unsigned", path, body, headers, payload)

        async def other(n: int) -> None:
            kind = n % 3
            if kind == 0:  # another shop's webhook
                payload = shopify_style_order(80_000 + n, 700 + n, "42.00", now - DAY)
                path, body, headers = webhook_request(
                    "shopline", payload, f"other-{n}", SECRETS["shopline"]
                )
                await post("others", path, body, headers, ("shopline", payload))
            elif kind == 1:  # the bearer token's events
                doc = order(60_000 + n, f"bearer-{n}", 1234, now - 2 * DAY)
                headers = {"authorization": f"Bearer {TOKEN}", "content-type": "application/json"}
                await post("others", "/v1/events", orjson.dumps([doc]), headers, ("events", doc))
            else:  # a write key's tracking call
                basic = base64.b64encode(f"{WRITE_KEY}:".encode()).decode()
                call = {
                    "type": "track",
                    "event": "Order Completed",
                    "userId": f"track-{n}",
                    "messageId": f"msg-{n}",
                    "timestamp": "2026-01-02T03:04:05Z",
                    "properties": {"order_id": f"t-{n}", "total": "12.00", "currency": "TWD"},
                }
                headers = {"authorization": f"Basic {basic}", "content-type": "application/json"}
                await post("others", "/v1/track", orjson.dumps(call), headers, ("track", call))

        # the forged crowd first: it must not spend the shop's tokens
        await asyncio.gather(*(unsigned(n) for n in range(UNSIGNED)))
        started = time.monotonic()
        await asyncio.gather(
            *(signed(n) for n in range(FLOOD)), *(other(n) for n in range(3 * OTHERS))
        )
        out["flood_s"] = time.monotonic() - started
    return out


def test_a_flood_from_one_shop_is_limited_and_no_one_else_is(isolated: Isolated) -> None:
    config = isolated.config_file(
        config_text(f"[collect]\nsource_rate = {RATE}\nsource_burst = {BURST}\n")
    )
    now = int(time.time() * 1000)
    with CollectServer(isolated, config) as server:
        answers = asyncio.run(asyncio.wait_for(flood(server.url, now), 120))

        assert {status for _, status, _, _ in answers["unsigned"]} == {401}
        statuses = [status for _, status, _, _ in answers["flood"]]
        accepted = [p for p, status, _, _ in answers["flood"] if status == 200]
        limited = [(p, h) for p, status, h, _ in answers["flood"] if status == 429]
        assert len(accepted) + len(limited) == FLOOD, sorted(set(statuses))
        elapsed = answers["flood_s"]
        print(
            f"flood of {FLOOD} in {elapsed:.2f}s: {len(accepted)} accepted, {len(limited)} 429; "
            f"{UNSIGNED} unsigned: 401"
        )
        # a full bucket at the start (the forged crowd spent nothing), then the rate
        assert BURST <= len(accepted) <= BURST + RATE * elapsed + 1
        assert limited and all(int(h["retry-after"]) >= 1 for _, h in limited)
        others = [(what, status, body) for what, status, _, body in answers["others"]]
        assert [s for _, s, _ in others] == [200] * len(others), [
            (w[0], s, b) for w, s, b in others if s != 200
        ]
        assert server.metric("rfm_collect_rate_limited_total", source="shop:lanyu") == len(limited)
        assert server.metric("rfm_collect_rate_limited_total", source="shop:hill") == 0
        assert server.metric("rfm_collect_bad_signatures_total", platform="shopify") == UNSIGNED
        log = server.log.read_text(encoding="utf-8")
        assert log.count("unknown shop or bad signature") <= 2, "a line per forged request"
        assert log.count("answering 429") <= 2, "a line per limited request"

        # a delivery refused with 429 wrote nothing (not even its delivery id): sent again
        # once the bucket has a token, it is applied
        again, _ = limited[0]
        path, body, headers = webhook_request(
            "shopify", again, "flood-again-" + str(again["id"]), SECRETS["shopify"]
        )

        def resent() -> bool:
            answer = server.http.post(path, content=body, headers=headers)
            return answer.status_code == 200 and answer.json()["accepted"] == 1

        wait_for(resent, timeout=10, interval=0.2, what="the refused delivery to be applied")

    settings = isolated.settings()
    held = {
        m.json()["event_id"] for m in read_topic(settings, Topics(settings.topic_prefix).orders)
    }
    acknowledged = {paid_id("shopify", p) for p in accepted} | {paid_id("shopify", again)}
    acknowledged |= {paid_id("shopline", p) for (k, p), _, _ in others if k == "shopline"}
    acknowledged |= {d["event_id"] for (k, d), _, _ in others if k == "events"}
    acknowledged |= {f"track:segment:{c['messageId']}" for (k, c), _, _ in others if k == "track"}
    assert acknowledged <= held, f"{len(acknowledged - held)} acknowledged events not in Kafka"
    refused = {paid_id("shopify", p) for p, _ in limited} - {paid_id("shopify", again)}
    assert not refused & held, "an event answered 429 reached Kafka"
    forged = {paid_id("shopify", p) for p, *_ in answers["unsigned"]}
    assert not forged & held


def _health_probes(server: CollectServer) -> float:
    reply = server.http.get("/metrics", headers={"authorization": f"Bearer {TOKEN}"})
    for line in reply.text.splitlines():
        if line.startswith("rfm_collect_health_probes_total "):
            return float(line.split()[1])
    raise AssertionError("no rfm_collect_health_probes_total in /metrics")


def test_a_crowd_of_health_probes_asks_kafka_a_handful_of_times(isolated: Isolated) -> None:
    """300 /healthz at once, each on its own connection: all answered 200 from the one
    metadata request in flight or the answer kept for a second, not one request each."""
    with CollectServer(isolated, isolated.config_file(config_text())) as server:
        before = _health_probes(server)

        async def crowd() -> list[int]:
            limits = httpx.Limits(max_connections=300, max_keepalive_connections=0)
            async with httpx.AsyncClient(base_url=server.url, timeout=30, limits=limits) as c:
                replies = await asyncio.gather(*(c.get("/healthz") for _ in range(300)))
            return [r.status_code for r in replies]

        started = time.monotonic()
        statuses = asyncio.run(crowd())
        seconds = time.monotonic() - started
        asked = _health_probes(server) - before
    assert statuses == [200] * 300, sorted(set(statuses))
    # one per second the crowd lasted, and the one that may have been in flight
    assert asked <= seconds + 2, (asked, seconds)
    print(f"\n300 /healthz at once in {seconds:.2f}s: {asked:.0f} metadata requests to Kafka")
