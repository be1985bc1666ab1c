"""Storefront webhooks through `rfm collect` (SPEC section 11): Shopify, SHOPLINE and
WooCommerce orders, refunds, cancellations and redaction requests, signed as the platforms
sign them, change customers exactly as the section 2 events written out here by hand do
(``rfm export`` against the batch oracle); the same delivery three times is produced once."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from stream.collect.guest import guest_customer_id
from tests.conftest import Isolated
from tests.support import WorkerProcess, assert_export_is_the_oracle
from tests.test_collect import (
    GUEST_KEY,
    SHOPS,
    CollectServer,
    applied_and_exported,
    collect_server,  # noqa: F401 (a fixture)
    input_records,
    shopify_style_order,
    spec_order,
    wait_applied,
    woocommerce_order,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

DAY = 86_400_000


def accepted(answer: httpx.Response, events: int) -> None:
    assert answer.status_code == 200, answer.text
    assert answer.json()["accepted"] == events, answer.text


def full(event: dict[str, Any]) -> dict[str, Any]:
    return {**event, "full": True}


def test_webhooks_change_customers_as_the_same_spec_events_do(
    isolated: Isolated,
    start_worker: Callable[..., WorkerProcess],
    collect_server: Callable[[str], CollectServer],  # noqa: F811 (the fixture imported above)
) -> None:
    server = collect_server("")
    worker = start_worker(isolated.tmp / "rfm.toml")
    now = (int(time.time()) - 60) * 1000
    t1, t2, t3 = now - 20 * DAY, now - 12 * DAY, now - 2 * DAY
    expected: list[dict[str, Any]] = []
    redactions: list[tuple[str, dict[str, Any], list[dict[str, Any]]]] = []

    for platform in ("shopify", "shopline"):
        shop = SHOPS[platform][0]
        # Shopify's ids are numbers, SHOPLINE's strings; the events carry them as text
        raw: list[Any] = [7001, 7002, 7003] if platform == "shopify" else ["sl-1", "sl-2", "sl-3"]
        orders: list[Any] = [1001, 1002, 1003, 1004]
        if platform == "shopline":
            orders = [str(n) for n in orders]
        buyer = [str(b) for b in raw]
        mail = f" Mei.Lin+{platform}@Example.com "
        guest = guest_customer_id(mail, GUEST_KEY.encode())

        def post(topic: str, payload: Any, events: int, platform: str = platform) -> None:
            accepted(server.webhook(platform, topic, payload), events)

        def spec(
            n: int, what: str, cid: str, amount: str, at: int, refund: bool = False,
            prefix: str = f"{platform}:{shop}",
        ) -> dict[str, Any]:  # fmt: skip
            return spec_order(f"{prefix}:{n}:{what}", str(n), cid, amount, at, refund=refund)

        # paid; then updated with a partial refund (repeating the completion: same event id)
        post("orders/paid", shopify_style_order(orders[0], raw[0], "1240.00", t1), 1)
        refunded = shopify_style_order(
            orders[0], raw[0], "1240.00", t1, status="partially_refunded", updated_at=t2,
            refunds=((9001, "300.00", t2),),
        )  # fmt: skip
        post("orders/updated", refunded, 2)
        expected += [
            spec(1001, "paid", buyer[0], "1240.00", t1),
            spec(1001, "paid", buyer[0], "1240.00", t1),
            spec(1001, "refund:9001", buyer[0], "300.00", t2, refund=True),
        ]
        # a guest's order: the customer is the keyed hash of the e-mail
        post("orders/paid", shopify_style_order(orders[1], None, "560.00", t2, email=mail), 1)
        expected.append(spec(1002, "paid", guest, "560.00", t2))
        # paid, then cancelled: a full refund
        post("orders/paid", shopify_style_order(orders[2], raw[1], "90.00", t2), 1)
        cancelled = shopify_style_order(
            orders[2], raw[1], "90.00", t2, status="refunded", cancelled_at=t3
        )
        post("orders/cancelled", cancelled, 1)
        expected += [
            spec(1003, "paid", buyer[1], "90.00", t2),
            full(spec(1003, "cancelled", buyer[1], "90.00", t3, refund=True)),
        ]
        # one delivery three times: produced once
        again = shopify_style_order(orders[3], raw[2], "75.50", t3)
        for events, answer in zip((1, 0, 0), ["first", "again", "again"], strict=True):
            reply = server.webhook(platform, "orders/paid", again, delivery=f"{platform}-once")
            accepted(reply, events)
            assert reply.json().get("redelivery", False) is (answer == "again")
        expected.append(spec(1004, "paid", buyer[2], "75.50", t3))
        # a topic we do not use
        post("products/update", {"id": 1, "title": "Alishan oolong"}, 0)
        # the buyer asks to be forgotten: the account, and the guest id of the e-mail
        redact = {"shop_domain": SHOPS[platform][1], "customer": {"id": raw[0], "email": mail}}
        forget = [{"customer_id": cid, "requested_at": now} for cid in (buyer[0], guest)]
        redactions.append((platform, redact, forget))

    # WooCommerce: order.created (paid); order.updated with a refund; cancelled after payment
    def woo(topic: str, payload: Any, events: int, delivery: str | None = None) -> None:
        accepted(server.webhook("woocommerce", topic, payload, delivery=delivery), events)

    def spec_wc(
        n: int, what: str, cid: str, amount: str, at: int, refund: bool = False
    ) -> dict[str, Any]:
        return spec_order(f"woocommerce:harbour:{n}:{what}", str(n), cid, amount, at, refund=refund)

    woo("order.created", woocommerce_order(501, 42, "880.00", t1), 1)
    refunds = ((77, "100.00"),)
    woo("order.updated", woocommerce_order(501, 42, "880.00", t1, "completed", t2, refunds), 2)
    # a later save (a note, past the repeat horizon of the payment) lists the refund again,
    # undated: the collector sent it once and sends nothing now
    woo("order.updated", woocommerce_order(501, 42, "880.00", t1, "completed", t3, refunds), 0)
    woo("order.created", woocommerce_order(502, 43, "65.00", t2), 1)
    woo("order.updated", woocommerce_order(502, 43, "65.00", t2, "cancelled", t3), 2)
    for events in (1, 0, 0):
        woo("order.created", woocommerce_order(503, 44, "10.00", t3), events, "wc-once")
    expected += [
        spec_wc(501, "paid", "42", "880.00", t1),
        spec_wc(501, "paid", "42", "880.00", t1),
        spec_wc(501, "refund:77", "42", "100.00", t2, refund=True),
        spec_wc(502, "paid", "43", "65.00", t2),
        spec_wc(502, "paid", "43", "65.00", t2),
        full(spec_wc(502, "cancelled", "43", "65.00", t3, refund=True)),
        spec_wc(503, "paid", "44", "10.00", t3),
    ]

    # redaction once the worker holds what it erases (topics are not ordered among themselves)
    wait_applied(isolated, server, worker)
    for platform, redact, forget in redactions:
        accepted(server.webhook(platform, "customers/redact", redact), len(forget))
        expected += forget
    assert_export_is_the_oracle(applied_and_exported(isolated, worker), expected)

    once = ["shopify:lanyu:1004:paid", "shopline:hill:1004:paid", "woocommerce:harbour:503:paid"]
    written = [r.get("event_id") for r in input_records(isolated)]
    assert [written.count(event_id) for event_id in once] == [1, 1, 1], "a redelivery was written"
    assert written.count("woocommerce:harbour:501:refund:77") == 1, "an undated repeat was written"
    for platform in SHOPS:
        assert server.metric("rfm_collect_redeliveries_dropped_total", platform=platform) == 2
    for source in ("shopify", "shopline"):
        assert server.metric("rfm_collect_unused_topics_total", source=source) == 1
    log = server.log.read_text(errors="replace").lower()
    assert "mei.lin" not in log and "example.com" not in log, "an e-mail reached the log"
