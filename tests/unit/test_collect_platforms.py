"""Storefront webhooks (SPEC section 11) mapped to section 2 events the worker's parsers accept.

Every fixture in tests/fixtures/webhooks is mapped; each event is parsed by the worker's own
parsers with the default store settings, and its customer, amount (against a sum worked out
here from the fixture's numbers), channel and ids are checked. No e-mail of any fixture may
appear in anything the mapping writes.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest

from stream.collect.guest import guest_customer_id
from stream.collect.outgoing import MappingContext, Outgoing, PayloadError
from stream.collect.platforms import PLATFORMS
from stream.collect.platforms.sources import channel_of
from stream.config import StoreSettings
from stream.core.events import (
    ErasureEvent,
    Event,
    OrderEvent,
    parse_erasure,
    parse_interaction,
    parse_order,
)

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "webhooks"
STORE = StoreSettings()
NOW = int(datetime.fromisoformat("2026-12-06T00:00:00+00:00").timestamp() * 1000)
KEY = b"unit-test guest key"
CTX = MappingContext(currency="TWD", currency_decimals=2, guest_key=KEY, shop="lanyu-tea")
EMAIL = re.compile(rb"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]+")
D = Decimal


def guest(email: str) -> str:
    return guest_customer_id(email, KEY)


@dataclass(frozen=True)
class Want:
    """One expected event: an order ("paid"/"refund"/"full refund") or an erasure."""

    what: str
    customer: str
    amount: Decimal | None = None
    order_id: str | None = None
    event_id: str | None = None
    channel: str | None = None
    occurred_at: str | None = None


SHOPIFY_1042 = "shopify:lanyu-tea:5612874301495"
SHOPLINE_1088 = "shopline:lanyu-tea:21057168152571061289431726"
WOO_4750 = "woocommerce:lanyu-tea:4750"

# (platform, fixture, topic) -> the events, in order; None: a topic we do not use
CASES: list[tuple[str, str, str, list[Want] | None]] = [
    (
        "shopify",
        "orders_paid_registered",
        "orders/paid",
        [
            Want(
                "paid",
                "7390412345678",
                # two tins at 450 + a cup at 380, less the 100 code, plus 60 delivery
                D("450.00") * 2 + D("380.00") - D("100.00") + D("60.00"),
                "5612874301495",
                f"{SHOPIFY_1042}:paid",
                "online",
                "2026-11-20T10:12:41+08:00",
            )
        ],
    ),
    (
        "shopify",
        "orders_paid_guest",
        "orders/paid",
        [
            Want(
                "paid",
                guest("lin.meihua@example.com"),
                D("320.00") + D("180.00") * 2,
                "5612901105719",
                "shopify:lanyu-tea:5612901105719:paid",
                "pos",
            )
        ],
    ),
    (
        "shopify",
        "orders_updated_partial_refund",
        "orders/updated",
        [
            # the update repeats the completion (11 days after it: inside the horizon)
            Want("paid", "7390412345678", D("1240.00"), "5612874301495", f"{SHOPIFY_1042}:paid"),
            # one tin back; the failed transaction gave nothing back
            Want(
                "refund",
                "7390412345678",
                D("450.00"),
                "5612874301495",
                f"{SHOPIFY_1042}:refund:1020304050607",
                "online",
                "2026-12-01T14:05:09+08:00",
            ),
        ],
    ),
    (
        "shopify",
        "orders_cancelled_paid",
        "orders/cancelled",
        [
            Want(
                "full refund",
                "7390498765432",
                D("890.00"),
                "5613002283063",
                "shopify:lanyu-tea:5613002283063:cancelled",
                "online",
                "2026-11-25T09:15:40+08:00",
            )
        ],
    ),
    (
        "shopify",
        "customers_redact",
        "customers/redact",
        [Want("erasure", "7390412345678"), Want("erasure", guest("chen.yating@example.tw"))],
    ),
    ("shopify", "products_update", "products/update", None),
    (
        "shopline",
        "orders_paid_registered",
        "orders/paid",
        [
            Want(
                "paid",
                "4200843728",
                D("1650.00") + D("250.00") * 2,
                "21057168152571061289431726",
                f"{SHOPLINE_1088}:paid",
                "online",
                "2026-11-18T20:31:07+08:00",
            )
        ],
    ),
    (
        "shopline",
        "orders_paid_guest",
        "orders/paid",
        [
            Want(
                "paid",
                guest("huang.shufen@example.tw"),
                D("600.00") * 2 - D("50.00"),
                "21057201947301866214880315",
                "shopline:lanyu-tea:21057201947301866214880315:paid",
                "pos",
            )
        ],
    ),
    (
        "shopline",
        "orders_updated_partial_refund",
        "orders/updated",
        [
            # 17 days after the purchase: the completion is not repeated; the refund is read
            # in the shop's money (TWD), not the buyer's (16.20 USD)
            Want(
                "refund",
                "4200843728",
                D("250.00") * 2,
                "21057168152571061289431726",
                f"{SHOPLINE_1088}:refund:SL201AS4571669738589065294",
                "online",
            )
        ],
    ),
    (
        "shopline",
        "orders_cancelled_paid",
        "orders/cancelled",
        [
            Want(
                "full refund",
                "4200917766",
                D("3200.00") + D("140.00") * 2,
                "21057230019884410076551203",
                "shopline:lanyu-tea:21057230019884410076551203:cancelled",
                "online",
                "2026-11-27T19:42:15+08:00",
            )
        ],
    ),
    (
        "shopline",
        "customers_redact",
        "customers/redact",
        [Want("erasure", "4200843728"), Want("erasure", guest("wang.jiahao@example.tw"))],
    ),
    ("shopline", "products_update", "products/update", None),
    (
        "woocommerce",
        "order_created_registered",
        "order.created",
        [
            Want(
                "paid",
                "17",
                D("1200.00") + D("300.00") + D("60.00"),
                "4750",
                f"{WOO_4750}:paid",
                "online",
                "2026-11-21T01:02:19+00:00",
            )
        ],
    ),
    (
        "woocommerce",
        "order_updated_guest",
        "order.updated",
        [
            Want(
                "paid",
                guest("tsai.yuchen@example.tw"),
                D("260.00") * 3,
                "4762",
                "woocommerce:lanyu-tea:4762:paid",
                "online",
            )
        ],
    ),
    (
        "woocommerce",
        "order_updated_partial_refund",
        "order.updated",
        [
            Want("paid", "17", D("1560.00"), "4750", f"{WOO_4750}:paid"),
            Want(
                "refund",
                "17",
                D("300.00"),
                "4750",
                f"{WOO_4750}:refund:4821",
                "online",
                "2026-12-02T06:31:45+00:00",
            ),
        ],
    ),
    (
        "woocommerce",
        "order_updated_cancelled_paid",
        "order.updated",
        [
            Want("paid", "23", D("900.00") + D("90.00"), "4771"),
            Want(
                "full refund",
                "23",
                D("900.00") + D("90.00"),
                "4771",
                "woocommerce:lanyu-tea:4771:cancelled",
            ),
        ],
    ),
    ("woocommerce", "customer_deleted", "customer.deleted", None),
    ("woocommerce", "product_updated", "product.updated", None),
]


def load(platform: str, name: str) -> tuple[bytes, Any]:
    raw = (FIXTURES / platform / f"{name}.json").read_bytes()
    return raw, orjson.loads(raw)


def event_of(out: Outgoing) -> Event:
    """The event the worker reads from this document, keyed as the worker will see it."""
    parse = {"orders": parse_order, "interactions": parse_interaction, "erasure": parse_erasure}
    event = parse[out.kind](orjson.dumps(out.doc), STORE, NOW)
    assert event.customer_id == out.customer_id
    return event


def mapped(platform: str, topic: str, payload: Any, ctx: MappingContext = CTX) -> list[Outgoing]:
    out = PLATFORMS[platform].map(topic, payload, ctx)
    assert out is not None
    return out


def check(out: Outgoing, want: Want) -> None:
    event = event_of(out)
    assert out.customer_id == want.customer
    if want.what == "erasure":
        assert isinstance(event, ErasureEvent)
        assert out.kind == "erasure"
        return
    assert isinstance(event, OrderEvent)
    assert out.kind == "orders"
    assert event.refund == (want.what != "paid")
    assert event.full == (want.what == "full refund")
    assert want.amount is not None
    assert D(out.doc["amount"]) == want.amount
    assert D(event.amount) / 100 == want.amount
    assert event.order_id == want.order_id
    if want.event_id is not None:
        assert event.event_id == want.event_id
    if want.channel is not None:
        assert event.channel == want.channel
    if want.occurred_at is not None:
        assert out.doc["occurred_at"] == want.occurred_at


@pytest.mark.parametrize(("platform", "name", "topic", "wants"), CASES)
def test_each_fixture_maps_to_events_the_worker_accepts(
    platform: str, name: str, topic: str, wants: list[Want] | None
) -> None:
    raw, payload = load(platform, name)
    out = PLATFORMS[platform].map(topic, payload, CTX)
    if wants is None:
        assert out is None
        return
    assert out is not None
    assert len(out) == len(wants), [o.doc for o in out]
    for got, want in zip(out, wants, strict=True):
        check(got, want)
    written = b"\n".join(orjson.dumps(o.doc) + o.customer_id.encode() for o in out).lower()
    for email in EMAIL.findall(raw):
        assert email.strip().lower() not in written


def test_every_fixture_is_covered() -> None:
    named = {(platform, name) for platform, name, _, _ in CASES}
    on_disk = {(path.parent.name, path.stem) for path in FIXTURES.glob("*/*.json")}
    assert on_disk == named


def test_the_platforms_and_their_headers() -> None:
    assert set(PLATFORMS) == {"shopify", "shopline", "woocommerce"}
    assert {name: p.signature_header for name, p in PLATFORMS.items()} == {
        "shopify": "X-Shopify-Hmac-Sha256",
        "shopline": "X-Shopline-Hmac-Sha256",
        "woocommerce": "X-WC-Webhook-Signature",
    }
    assert PLATFORMS["woocommerce"].topic_header == "X-WC-Webhook-Topic"
    assert PLATFORMS["woocommerce"].shop_header == "X-WC-Webhook-Source"
    assert PLATFORMS["shopify"].delivery_header == "X-Shopify-Webhook-Id"


@pytest.mark.parametrize("platform", ["shopify", "shopline"])
def test_a_redelivery_and_each_topic_of_one_payment_are_the_same_event(platform: str) -> None:
    _, payload = load(platform, "orders_paid_registered")
    first = mapped(platform, "orders/paid", payload)
    assert mapped(platform, "orders/paid", copy.deepcopy(payload)) == first
    # orders/create of an order already paid, and orders/updated, name the same completion
    assert mapped(platform, "orders/create", payload) == first
    assert mapped(platform, "orders/updated", payload) == first


def test_woocommerce_created_then_updated_is_one_completion() -> None:
    _, created = load("woocommerce", "order_created_registered")
    _, updated = load("woocommerce", "order_updated_partial_refund")
    [completion] = mapped("woocommerce", "order.created", created)
    again = mapped("woocommerce", "order.updated", updated)
    assert again[0].doc["event_id"] == completion.doc["event_id"]
    assert again[0].doc["order_id"] == completion.doc["order_id"]


def test_only_refunds_without_a_date_of_their_own_are_undated() -> None:
    """WooCommerce's ``refunds`` carry no date, so no horizon can hold their repeats back:
    they, and nothing else of any platform, ask the collector to remember them."""
    undated = {
        e.doc["event_id"]
        for platform, name, topic, _ in CASES
        for e in PLATFORMS[platform].map(topic, load(platform, name)[1], CTX) or []
        if e.undated
    }
    assert undated and all(":refund:" in i and i.startswith("woocommerce:") for i in undated)
    _, updated = load("woocommerce", "order_updated_partial_refund")
    refunds = [e for e in mapped("woocommerce", "order.updated", updated) if e.undated]
    assert [e.doc["type"] for e in refunds] == ["order_refunded"] * len(updated["refunds"])


@pytest.mark.parametrize("platform", ["shopify", "shopline"])
def test_orders_not_paid_or_nobody_to_score_give_no_events(platform: str) -> None:
    _, payload = load(platform, "orders_paid_guest")
    pending = {**payload, "financial_status": "pending"}
    assert mapped(platform, "orders/create", pending) == []
    assert mapped(platform, "orders/updated", pending) == []
    # a walk-in sale: no customer and no e-mail
    assert mapped(platform, "orders/paid", {**payload, "email": None, "contact_email": None}) == []
    assert mapped(platform, "orders/paid", {**payload, "test": True}) == []
    voided = {**payload, "financial_status": "voided", "cancelled_at": "2026-11-21T16:00:00+08:00"}
    assert mapped(platform, "orders/cancelled", voided) == []


def test_a_cancelled_order_that_kept_the_money_is_a_full_refund_of_its_total() -> None:
    _, payload = load("shopify", "orders_cancelled_paid")
    kept = {**payload, "financial_status": "paid", "refunds": []}
    [out] = mapped("shopify", "orders/cancelled", kept)
    check(out, Want("full refund", "7390498765432", D("890.00"), "5613002283063"))


def test_order_updates_repeat_history_only_within_the_horizon() -> None:
    _, payload = load("shopify", "orders_updated_partial_refund")
    late = {**payload, "updated_at": "2027-01-20T09:00:00+08:00"}
    assert mapped("shopify", "orders/updated", late) == []
    wide = replace(CTX, repeat_horizon_ms=90 * 86_400_000)
    assert [o.doc["event_id"] for o in mapped("shopify", "orders/updated", late, wide)] == [
        f"{SHOPIFY_1042}:paid",
        f"{SHOPIFY_1042}:refund:1020304050607",
    ]


def test_a_wholly_refunded_order_closes_with_a_full_refund() -> None:
    _, payload = load("shopify", "orders_updated_partial_refund")
    refunded = {**payload, "financial_status": "refunded"}
    *_, closing = mapped("shopify", "orders/updated", refunded)
    check(
        closing,
        Want(
            "full refund",
            "7390412345678",
            D("1240.00"),
            "5612874301495",
            f"{SHOPIFY_1042}:refunded",
        ),
    )
    assert closing.doc["occurred_at"] == "2026-12-01T14:05:09+08:00"  # the last refund


def test_woocommerce_statuses() -> None:
    _, payload = load("woocommerce", "order_updated_partial_refund")
    for waiting in ("pending", "on-hold", "failed"):
        unpaid = {**payload, "status": waiting, "date_paid_gmt": None, "refunds": []}
        assert mapped("woocommerce", "order.updated", unpaid) == []
    never_paid = {**payload, "status": "cancelled", "date_paid_gmt": None}
    assert mapped("woocommerce", "order.updated", never_paid) == []
    refunded = {**payload, "status": "refunded"}
    *_, closing = mapped("woocommerce", "order.updated", refunded)
    check(closing, Want("full refund", "17", D("1560.00"), "4750", f"{WOO_4750}:refunded"))
    # saved again long after the payment: the refunds, not the completion
    later = {**payload, "date_modified_gmt": "2027-03-01T00:00:00"}
    assert [o.doc["event_id"] for o in mapped("woocommerce", "order.updated", later)] == [
        f"{WOO_4750}:refund:4821"
    ]


@pytest.mark.parametrize(
    ("platform", "name", "topic", "change", "field"),
    [
        (
            "shopify",
            "orders_paid_registered",
            "orders/paid",
            {"total_price_set": {"shop_money": {"amount": "1240.00", "currency_code": "USD"}}},
            "total_price_set.shop_money.currency_code",
        ),
        (
            "shopify",
            "orders_paid_registered",
            "orders/paid",
            {"total_price_set": None, "total_price": "1240.005"},
            "total_price",
        ),
        ("shopify", "orders_paid_registered", "orders/paid", {"id": None}, "id"),
        (
            "shopify",
            "orders_paid_registered",
            "orders/paid",
            {"processed_at": "20 Nov 2026"},
            "processed_at",
        ),
        (
            "shopline",
            "orders_paid_registered",
            "orders/paid",
            {"currency": "HKD", "total_price_set": None},
            "currency",
        ),
        (
            "shopline",
            "customers_redact",
            "customers/redact",
            {"customer": {"phone": "+886"}},
            "customer",
        ),
        (
            "woocommerce",
            "order_created_registered",
            "order.created",
            {"currency": "USD"},
            "currency",
        ),
        ("woocommerce", "order_created_registered", "order.created", {"total": "-5.00"}, "total"),
        (
            "woocommerce",
            "order_updated_partial_refund",
            "order.updated",
            {"refunds": [{"id": 1, "total": "-1.234"}]},
            "refunds[0].total",
        ),
    ],
)
def test_a_payload_we_cannot_map_names_the_field(
    platform: str, name: str, topic: str, change: dict[str, Any], field: str
) -> None:
    _, payload = load(platform, name)
    with pytest.raises(PayloadError) as caught:
        PLATFORMS[platform].map(topic, {**payload, **change}, CTX)
    assert field in str(caught.value)
    assert "\n" not in str(caught.value)


def test_another_currency_names_both() -> None:
    _, payload = load("woocommerce", "order_created_registered")
    with pytest.raises(PayloadError, match=r"'USD'.*TWD"):
        mapped("woocommerce", "order.created", {**payload, "currency": "USD"})


@pytest.mark.parametrize("platform", ["shopify", "shopline", "woocommerce"])
def test_a_body_that_is_not_an_object_is_refused(platform: str) -> None:
    topic = "order.created" if platform == "woocommerce" else "orders/paid"
    with pytest.raises(PayloadError, match="expected a JSON object"):
        PLATFORMS[platform].map(topic, [1, 2], CTX)


def test_a_store_without_decimals_gets_whole_amounts() -> None:
    _, payload = load("shopify", "orders_paid_registered")
    whole = replace(CTX, currency_decimals=0)
    [out] = mapped("shopify", "orders/paid", payload, whole)
    assert out.doc["amount"] == "1240"
    assert (
        parse_order(orjson.dumps(out.doc), replace(STORE, currency_decimals=0), NOW).amount == 1240
    )


@pytest.mark.parametrize(
    ("source", "channel"),
    [
        ("web", "online"),
        ("checkout", "online"),  # WooCommerce's classic checkout
        ("store-api", "online"),  # WooCommerce's block checkout
        ("pos", "pos"),
        ("shopline_pos", "pos"),
        ("iphone", "app"),
        ("Mobile App", "app"),
        ("shopee", "marketplace"),
        ("facebook_live", "social"),
        ("marketplace", "marketplace"),
        ("shopify_draft_order", "other"),
        ("rest-api", "other"),
        ("580111", "other"),
        (None, None),
        ("", None),
    ],
)
def test_order_sources_to_channels(source: str | None, channel: str | None) -> None:
    assert channel_of(source) == channel


def test_a_guest_named_only_on_the_customer_record() -> None:
    _, payload = load("shopify", "orders_paid_guest")
    only_customer = {**payload, "email": None, "contact_email": None}
    only_customer["customer"] = {"id": None, "email": "Lin.MeiHua@example.com"}
    [out] = mapped("shopify", "orders/paid", only_customer)
    assert out.customer_id == guest("lin.meihua@example.com")
