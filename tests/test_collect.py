"""`rfm collect` (SPEC section 11) as a real process in front of a real Kafka and a real
`rfm worker`: SPEC events posted to /v1/events and Segment calls to /v1/track and /v1/batch
change customers exactly as producing the same section 2 events directly does (``rfm
export`` against the batch oracle over those events, written out here by hand); a request
with an invalid item is refused naming each bad index, and nothing of it reaches Kafka.

Also the harness the other ``test_collect_*`` files use: the server as a child process,
signed webhooks, the payloads of each platform.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import redis

from stream.kafka.topics import Topics
from stream.process import Child
from tests.api_support import interaction, order, refund
from tests.conftest import Isolated
from tests.ports import free_ports
from tests.support import (
    WorkerProcess,
    assert_export_is_the_oracle,
    events_applied,
    group_drained,
    read_topic,
    rfm,
    wait_for,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

TOKEN = "collect-" + "k3" * 12
WRITE_KEY = "wk-" + "q7" * 10
GUEST_KEY = "guest-key-" + "z" * 22
SECRETS = {
    "shopify": "shpss_" + "a1" * 12,
    "shopline": "sl-" + "b2" * 12,
    "woocommerce": "wc-" + "c3" * 12,
}
SHOPS = {  # platform -> (shop name, the domain its shop header carries)
    "shopify": ("lanyu", "lanyu-tea.myshopify.com"),
    "shopline": ("hill", "hill-tea.myshopline.com"),
    "woocommerce": ("harbour", "https://harbour.example/"),
}
HEADERS = {  # platform -> (signature, delivery id, topic, shop)
    "shopify": (
        "X-Shopify-Hmac-Sha256",
        "X-Shopify-Webhook-Id",
        "X-Shopify-Topic",
        "X-Shopify-Shop-Domain",
    ),
    "shopline": (
        "X-Shopline-Hmac-Sha256",
        "X-Shopline-Webhook-Id",
        "X-Shopline-Topic",
        "X-Shopline-Shop-Domain",
    ),
    "woocommerce": (
        "X-WC-Webhook-Signature",
        "X-WC-Webhook-Delivery-ID",
        "X-WC-Webhook-Topic",
        "X-WC-Webhook-Source",
    ),
}
DAY = 86_400_000
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
ODD_IDS = ("客戶 {1}:x", "a/b?c#d%e f", "😀 emoji")


def config_text(extra: str = "") -> str:
    shops = "".join(
        f'[collect.shops.{name}]\nplatform = "{platform}"\ndomain = "{domain}"\n'
        f'secret_env = "TEST_{platform.upper()}_SECRET"\n'
        for platform, (name, domain) in SHOPS.items()
    )
    return (
        '[scoring]\nclock = "event"\nrefresh_interval = "1h"\n'
        + extra
        + shops
        + '[collect.tracking]\ninteractions = {"Product Reviewed" = "review", '
        '"Live Viewed" = "live_view"}\n'
    )


def rfc3339(ms: int, offset_hours: int = 0) -> str:
    zone = timezone(timedelta(hours=offset_hours))
    return (EPOCH + timedelta(milliseconds=ms)).astimezone(zone).isoformat(timespec="seconds")


def sign(body: bytes, secret: str) -> str:
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


def content(body: Any) -> Any:
    """Bytes and iterators of bytes (sent chunked) as they are; anything else as JSON."""
    return body if isinstance(body, bytes | Iterator) else orjson.dumps(body)


class CollectServer(Child):
    """`rfm collect` as a child process on a free loopback port, its log kept for failures."""

    def __init__(self, iso: Isolated, config: Path, name: str = "collect") -> None:
        [self.port] = free_ports(1)
        env = iso.process_env(config)
        env.update(
            RFM_COLLECT_TOKEN=TOKEN,
            RFM_COLLECT_WRITE_KEYS=f"other-key,{WRITE_KEY}",
            RFM_COLLECT_GUEST_KEY=GUEST_KEY,
            **{f"TEST_{p.upper()}_SECRET": s for p, s in SECRETS.items()},
        )
        argv = [sys.executable, "-m", "stream.cli", "collect", "--port", str(self.port)]
        super().__init__(name, argv, env, iso.tmp / f"{name}.log")
        self.http = httpx.Client(base_url=self.url, timeout=30)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def healthy(self) -> bool:
        try:
            return self.http.get("/healthz", timeout=5).status_code == 200
        except httpx.TransportError:
            return False

    def __enter__(self) -> CollectServer:
        self.start()
        self.wait_ready(self.healthy, timeout=60, what="200 on /healthz")
        return self

    def __exit__(self, *_: object) -> None:
        self.http.close()
        self.stop(timeout=15)

    def events(self, body: Any, **headers: str) -> httpx.Response:
        return self.http.post(
            "/v1/events",
            content=content(body),
            headers={
                "authorization": f"Bearer {TOKEN}",
                "content-type": "application/json",
                **headers,
            },
        )

    def tracking(self, path: str, body: Any, key: str = WRITE_KEY) -> httpx.Response:
        basic = base64.b64encode(f"{key}:".encode()).decode()
        return self.http.post(
            path,
            content=content(body),
            headers={"authorization": f"Basic {basic}", "content-type": "application/json"},
        )

    def webhook(
        self,
        platform: str,
        topic: str,
        payload: Any,
        *,
        delivery: str | None = None,
        secret: str | None = None,
        signed_body: bytes | None = None,
        drop: str | None = None,
    ) -> httpx.Response:
        """A webhook as the platform sends it: raw body signed with the shop's secret;
        ``signed_body``: sign this instead (a tampered body), ``drop``: leave out a header."""
        body = payload if isinstance(payload, bytes) else orjson.dumps(payload)
        signature, delivery_header, topic_header, shop_header = HEADERS[platform]
        headers = {
            "content-type": "application/json",
            signature: sign(signed_body or body, secret or SECRETS[platform]),
            delivery_header: delivery or f"{platform}-{time.monotonic_ns()}",
            topic_header: topic,
            shop_header: SHOPS[platform][1],
        }
        if drop is not None:
            del headers[drop]
        return self.http.post(f"/v1/webhooks/{platform}", content=body, headers=headers)

    def metric(self, name: str, **labels: str) -> float:
        text = self.http.get("/metrics", headers={"authorization": f"Bearer {TOKEN}"}).text
        want = name + (
            "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}" if labels else ""
        )
        for line in text.splitlines():
            if line.startswith(want + " "):
                return float(line.rsplit(" ", 1)[1])
        return 0.0


@pytest.fixture
def collect_server(isolated: Isolated) -> Iterator[Callable[[str], CollectServer]]:
    servers: list[CollectServer] = []

    def start(config_extra: str = "") -> CollectServer:
        server = CollectServer(isolated, isolated.config_file(config_text(config_extra)))
        servers.append(server.__enter__())
        return server

    yield start
    for server in servers:
        server.__exit__()


def input_records(iso: Isolated) -> list[dict[str, Any]]:
    settings = iso.settings()
    topics = Topics(settings.topic_prefix)
    return [m.json() for topic in topics.inputs for m in read_topic(settings, topic)]


def wait_applied(iso: Isolated, server: CollectServer, worker: WorkerProcess) -> None:
    """Until the worker has dealt with every order and interaction the server produced."""
    produced = sum(
        server.metric("rfm_collect_events_produced_total", topic=topic)
        for topic in ("orders", "interactions")
    )
    client = redis.Redis.from_url(iso.infra.redis_url)
    try:
        wait_for(
            lambda: events_applied(client, iso.name) >= produced,
            timeout=120,
            what=f"the worker to apply {produced:.0f} events",
            diagnose=worker.tail,
        )
    finally:
        client.close()


def applied_and_exported(iso: Isolated, worker: WorkerProcess) -> str:
    """Once the worker has consumed every input record: refresh the thresholds, export."""
    settings = iso.settings()
    wait_for(
        lambda: group_drained(settings, settings.group_id, *Topics(settings.topic_prefix).inputs),
        timeout=120,
        interval=0.5,
        what="the worker to consume every input record",
        diagnose=worker.tail,
    )
    config = iso.tmp / "rfm.toml"
    rfm(iso, config, "refresh")
    return rfm(iso, config, "export")


# ---- payloads ---------------------------------------------------------------------------


def shopify_style_order(
    order_id: int | str,
    customer: int | str | None,
    total: str,
    paid_at: int,
    *,
    status: str = "paid",
    email: str | None = None,
    updated_at: int | None = None,
    refunds: tuple[tuple[int | str, str, int], ...] = (),  # (refund id, amount, when)
    cancelled_at: int | None = None,
) -> dict[str, Any]:
    """An order as Shopify's and SHOPLINE's order webhooks carry it (the fields we read)."""
    return {
        "id": order_id,
        "email": email,
        "customer": None if customer is None else {"id": customer, "email": email},
        "created_at": rfc3339(paid_at, 8),
        "processed_at": rfc3339(paid_at, 8),
        "updated_at": rfc3339(updated_at or paid_at, 8),
        "cancelled_at": None if cancelled_at is None else rfc3339(cancelled_at, 8),
        "financial_status": status,
        "source_name": "web",
        "currency": "TWD",
        "total_price": total,
        "total_price_set": {
            "shop_money": {"amount": total, "currency_code": "TWD"},
            "presentment_money": {"amount": total, "currency_code": "TWD"},
        },
        "test": False,
        "refunds": [
            {
                "id": refund_id,
                "created_at": rfc3339(at, 8),
                "transactions": [
                    {"kind": "refund", "status": "success", "amount": amount, "currency": "TWD"}
                ],
            }
            for refund_id, amount, at in refunds
        ],
    }


def woocommerce_order(
    order_id: int,
    customer: int,
    total: str,
    paid_at: int,
    status: str = "processing",
    saved_at: int | None = None,
    refunds: tuple[tuple[int, str], ...] = (),  # (refund id, amount)
    email: str = "buyer@example.com",
) -> dict[str, Any]:
    """An order as WooCommerce's order.* webhooks carry it (UTC dates without an offset)."""

    def gmt(ms: int) -> str:
        return (EPOCH + timedelta(milliseconds=ms)).strftime("%Y-%m-%dT%H:%M:%S")

    return {
        "id": order_id,
        "status": status,
        "currency": "TWD",
        "created_via": "checkout",
        "total": total,
        "customer_id": customer,
        "billing": {"email": email},
        "date_created_gmt": gmt(paid_at),
        "date_paid_gmt": gmt(paid_at),
        "date_modified_gmt": gmt(saved_at or paid_at),
        "refunds": [{"id": rid, "total": f"-{amount}"} for rid, amount in refunds],
    }


def spec_order(
    event_id: str, order_id: str, customer: str, amount: str, at: int, *, refund: bool = False
) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "type": "order_refunded" if refund else "order_completed",
        "order_id": order_id,
        "customer_id": customer,
        "amount": amount,
        "occurred_at": at,
        "channel": "online",
    }


# ---- SPEC events and the tracking API ------------------------------------------------------


def tracked(message_id: str, type_: str, cid: str, at: int, **fields: str) -> dict[str, Any]:
    """The section 2 event a tracking call stands for (its id: ``track:segment:<messageId>``)."""
    doc = {"event_id": f"track:segment:{message_id}", "type": type_, "customer_id": cid}
    return {**doc, **fields, "occurred_at": rfc3339(at)}


def test_spec_events_and_tracking_calls_change_customers_as_kafka_does(
    isolated: Isolated,
    start_worker: Callable[..., WorkerProcess],
    collect_server: Callable[[str], CollectServer],
) -> None:
    server = collect_server("")
    worker = start_worker(isolated.tmp / "rfm.toml")
    now = int(time.time() * 1000) - 60_000
    expected: list[dict[str, Any]] = []  # the same events as a storefront would produce them

    def posted(body: Any, events: int) -> None:
        answer = server.events(body)
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"accepted": events}

    # -- /v1/events: a batch, then single events -----------------------------------------------
    customers = [f"c-{k:02d}" for k in range(24)] + list(ODD_IDS)
    batch = [
        order(n, cid, (n * 3_701) % 90_000 + 1_000, now - (n % 200 + 1) * DAY)
        for n, cid in enumerate(customers * 2)
    ]
    batch[5]["occurred_at"] = now - 3 * DAY  # epoch ms work as well as RFC 3339
    batch[6]["amount"] = 12.5  # and JSON numbers as well as decimal strings
    posted(batch, len(batch))
    singles = [
        {**order(900, "c-01", 0, now - DAY), "amount": 0},  # a free order counts for R and F
        refund(1, "o-2", "c-02", 550, now - DAY, full=False),
        refund(2, "o-3", "c-03", 1, now - DAY, full=True),
        interaction(1, "fan-1", now - 2 * DAY),
        interaction(2, ODD_IDS[1], now - 2 * DAY, kind="live_view"),
    ]
    for event in singles:
        posted(event, 1)
    expected += batch + singles

    # -- an invalid item refuses the whole request, naming each bad index ----------------------
    refused = [
        order(950, "c-05", 1200, now - DAY),  # valid, yet not written: its request is refused
        {**order(951, "c-05", 100, now - DAY), "amount": "-3.00"},
        {k: v for k, v in order(952, "c-05", 100, now - DAY).items() if k != "customer_id"},
        {**order(953, "c-05", 100, now - DAY), "type": "order_shipped"},
        {**order(954, "c-05", 100, now - DAY), "currency": "USD"},
        order(955, "c-05", 100, now + DAY),  # in the future
    ]
    answer = server.events(refused)
    assert answer.status_code == 400
    errors = answer.json()["errors"]
    assert [e["index"] for e in errors] == [1, 2, 3, 4, 5]
    assert "negative" in errors[0]["reason"] and "customer_id" in errors[1]["reason"]
    assert "order_shipped" in errors[2]["reason"] and "USD" in errors[3]["reason"]
    assert "future" in errors[4]["reason"]

    # -- the tracking API ----------------------------------------------------------------------
    def day(n: int) -> str:
        return rfc3339(now - n * DAY)

    completed = {
        "type": "track",
        "event": "Order Completed",
        "userId": "u-1",
        "messageId": "m-1",
        "timestamp": day(5),
        "properties": {"order_id": "W-1", "total": "300.00", "currency": "TWD"},
    }
    answer = server.tracking("/v1/track", completed)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"accepted": 1}
    w2 = {"order_id": "W-2", "total": 80}  # a JSON number, as Segment's spec writes them
    refunded = {"order_id": "W-1", "total": "100"}
    calls = [
        {**completed, "userId": "u-2", "messageId": "m-2", "properties": w2},
        {**completed, "event": "Product Reviewed", "messageId": "m-3", "timestamp": day(4)},
        {**completed, "event": "Order Refunded", "messageId": "m-4", "timestamp": day(3),
         "properties": refunded},
        {"type": "identify", "userId": "u-1", "messageId": "m-5", "traits": {"plan": "tea club"}},
        {**completed, "event": "Page Scrolled", "messageId": "m-6"},  # not an event we count
    ]  # fmt: skip
    answer = server.tracking("/v1/batch", {"batch": calls})
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"accepted": 3}
    expected += [
        tracked("m-1", "order_completed", "u-1", now - 5 * DAY, order_id="W-1", amount="300"),
        tracked("m-2", "order_completed", "u-2", now - 5 * DAY, order_id="W-2", amount="80"),
        tracked("m-3", "interaction", "u-1", now - 4 * DAY, kind="review"),
        tracked("m-4", "order_refunded", "u-1", now - 3 * DAY, order_id="W-1", amount="100"),
    ]
    bad_calls = [
        {**completed, "userId": "u-3", "messageId": "m-7"},  # valid, not written
        {**completed, "messageId": "m-8", "properties": {"total": "1", "currency": "USD"}},
        {"type": "track", "userId": "u-3", "messageId": "m-9"},
    ]
    answer = server.tracking("/v1/batch", {"batch": bad_calls})
    assert answer.status_code == 400
    assert [e["index"] for e in answer.json()["errors"]] == [1, 2]
    assert server.tracking("/v1/track", completed, key="no-such-key").status_code == 401

    # -- erasures, once the worker holds what they erase (topics are not ordered among
    # themselves, for the front door as for any producer) -------------------------------------
    wait_applied(isolated, server, worker)
    erasures: list[dict[str, Any]] = [
        {"type": "erasure", "customer_id": "c-04", "requested_at": rfc3339(now)},
        {"customer_id": ODD_IDS[0], "requested_at": now},  # the erasure topic's own document
        {"type": "erasure", "customer_id": "u-2"},  # stamped with the time it arrived
    ]
    posted(erasures, len(erasures))
    expected += [{**e, "requested_at": now} for e in erasures]

    assert_export_is_the_oracle(applied_and_exported(isolated, worker), expected)
    written = {r.get("event_id") for r in input_records(isolated)}
    assert not written & {"evt-o950", "track:segment:m-7"}, "a refused request was written"
    assert server.metric("rfm_collect_items_rejected_total", route="/v1/events") == 5
    assert server.metric("rfm_collect_items_rejected_total", route="/v1/batch") == 2
    assert server.metric("rfm_collect_events_produced_total", topic="erasure") == 3
