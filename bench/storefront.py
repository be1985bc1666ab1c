"""What a storefront sends `rfm collect`, built before any clock starts: Shopify
``orders/paid`` webhooks signed with the shop's secret, and ``POST /v1/events`` batches.

A webhook carries what Shopify's order payload carries around the fields the collector
reads (line items, addresses, discounts: about 2.5 KB), since the body's size is part of the
work (read, HMAC, parse). Every order has its own id and buyer, so no two webhooks are one
event to the worker. ``records`` gives the Kafka records the collector writes for them, by
the collector's own mapping, for the bare producer to send the very same bytes.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from bench.workload import order_event
from stream.collect.outgoing import MappingContext
from stream.collect.platforms import PLATFORMS
from stream.config import StoreSettings
from stream.core.changes import iso_ms
from stream.core.scoring import DAY_MS
from stream.shell.processor import wall_ms

SHOP = "bench"  # the shop's name in [collect.shops] and in event ids
DOMAIN = "bench-tea.myshopify.com"
TOPIC = "orders/paid"
ORDER_IDS = 5_612_874_300_000  # Shopify-sized ids: order n is ORDER_IDS + n
CUSTOMER_IDS = 7_301_000_000_000


@dataclass(frozen=True)
class Request:
    path: str
    body: bytes
    headers: dict[str, str]


def _money(amount: str, currency: str) -> dict[str, Any]:
    return {
        "shop_money": {"amount": amount, "currency_code": currency},
        "presentment_money": {"amount": amount, "currency_code": currency},
    }


def _address(n: int) -> dict[str, Any]:
    return {
        "first_name": "Ya-Ting",
        "last_name": f"Chen {n}",
        "address1": f"{n % 400 + 1} Zhongshan Rd, Sec. 2",
        "city": "Taipei",
        "zip": "104",
        "country_code": "TW",
        "phone": None,
    }


def order_payload(n: int, paid_at_ms: int, currency: str, decimals: int) -> dict[str, Any]:
    """Order ``n`` as Shopify's order webhooks carry it; its total is distinct per order."""
    unit = 10**decimals
    minor = 50_000 + n % 100_000
    total = f"{minor // unit}.{minor % unit:0{decimals}d}" if decimals else str(minor)
    at = iso_ms(paid_at_ms)
    email = f"buyer{n}@example.tw"
    items = [
        {
            "id": 14_211_873_000_000 + 2 * n + i,
            "product_id": 8_830_216_437_815 + i,
            "variant_id": 46_210_397_831_223 + i,
            "title": title,
            "sku": sku,
            "quantity": 1,
            "price": total if i == 0 else "0",
            "price_set": _money(total if i == 0 else "0", currency),
            "taxable": True,
            "requires_shipping": True,
            "properties": [],
            "discount_allocations": [],
        }
        for i, (title, sku) in enumerate(
            [("Alishan oolong, 150 g tin", "TEA-OOL-150"), ("Sample: Oriental Beauty", "SMP-OB")]
        )
    ]
    return {
        "id": ORDER_IDS + n,
        "admin_graphql_api_id": f"gid://shopify/Order/{ORDER_IDS + n}",
        "name": f"#{1000 + n}",
        "order_number": 1000 + n,
        "email": email,
        "contact_email": email,
        "created_at": at,
        "processed_at": at,
        "updated_at": at,
        "cancelled_at": None,
        "closed_at": None,
        "confirmed": True,
        "test": False,
        "currency": currency,
        "presentment_currency": currency,
        "financial_status": "paid",
        "fulfillment_status": None,
        "source_name": "web",
        "landing_site": "/collections/oolong",
        "taxes_included": True,
        "total_price": total,
        "subtotal_price": total,
        "total_discounts": "0",
        "total_price_set": _money(total, currency),
        "total_shipping_price_set": _money("0", currency),
        "discount_codes": [],
        "line_items": items,
        "shipping_address": _address(n),
        "billing_address": _address(n),
        "customer": {
            "id": CUSTOMER_IDS + n,
            "email": email,
            "first_name": "Ya-Ting",
            "last_name": f"Chen {n}",
            "verified_email": True,
            "tags": "",
            "currency": currency,
        },
        "refunds": [],
    }


def sign(body: bytes, secret: bytes) -> str:
    return base64.b64encode(hmac.new(secret, body, hashlib.sha256).digest()).decode()


def webhook(n: int, secret: bytes, now_ms: int, currency: str, decimals: int) -> Request:
    body = orjson.dumps(order_payload(n, now_ms - DAY_MS, currency, decimals))
    headers = {
        "content-type": "application/json",
        "x-shopify-hmac-sha256": sign(body, secret),
        "x-shopify-webhook-id": f"bench-delivery-{n}",
        "x-shopify-topic": TOPIC,
        "x-shopify-shop-domain": DOMAIN,
    }
    return Request("/v1/webhooks/shopify", body, headers)


def events_batch(
    first: int, count: int, token: str, now_ms: int, currency: str, decimals: int
) -> Request:
    """``count`` SPEC ``order_completed`` events (numbered from ``first``) in one request."""
    values = [
        order_event(
            f"bench-batch-{n}",
            f"bench-c{n}",
            10_000 + n % 1_000_000,
            now_ms - DAY_MS - n % 1000,
            currency=currency,
            decimals=decimals,
        )
        for n in range(first, first + count)
    ]
    headers = {"content-type": "application/json", "authorization": f"Bearer {token}"}
    return Request("/v1/events", b"[" + b",".join(values) + b"]", headers)


class Traffic:
    """Requests on demand, none sent twice: no order id, delivery id or event id repeats."""

    def __init__(self, store: StoreSettings, secret: bytes, token: str) -> None:
        self.store = store
        self.secret = secret
        self.token = token
        self.orders = 0
        self.events = 0
        self.now_ms = wall_ms()

    def webhooks(self, count: int) -> list[Request]:
        first, self.orders = self.orders, self.orders + count
        s = self.store
        return [
            webhook(n, self.secret, self.now_ms, s.currency, s.currency_decimals)
            for n in range(first, first + count)
        ]

    def batches(self, events: int, per_request: int) -> list[Request]:
        first, self.events = self.events, self.events + events
        end, s = first + events, self.store
        return [
            events_batch(
                n, min(per_request, end - n), self.token, self.now_ms, s.currency,
                s.currency_decimals,
            )
            for n in range(first, end, per_request)
        ]  # fmt: skip


def records(requests: Sequence[Request], ctx: MappingContext) -> list[tuple[bytes, bytes]]:
    """The (key, value) records the collector writes for ``requests``, byte for byte."""
    out: list[tuple[bytes, bytes]] = []
    shopify = PLATFORMS["shopify"]
    for request in requests:
        if request.path == "/v1/events":
            for item in orjson.loads(request.body):
                out.append((item["customer_id"].encode(), orjson.dumps(item)))
            continue
        for event in shopify.map(TOPIC, orjson.loads(request.body), ctx) or []:
            out.append((event.customer_id.encode(), orjson.dumps(event.doc)))
    return out
