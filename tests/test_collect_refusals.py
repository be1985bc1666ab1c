"""What `rfm collect` refuses (SPEC section 11): webhooks that are not the shop's own
(tampered body, another secret, no signature, no shop) are 401 and echo nothing; the other
routes want their own secrets; hostile bodies (truncated, 5,000 levels deep, numbers past
every float, not UTF-8, the wrong type, past the size and count bounds, chunked past the
limit) are each a clear 4xx, never a 500; the service stays healthy and Kafka stays empty."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
import orjson
import pytest

from tests.api_support import order
from tests.conftest import Isolated
from tests.test_collect import (
    HEADERS,
    SECRETS,
    TOKEN,
    CollectServer,
    collect_server,  # noqa: F401 (a fixture)
    input_records,
    shopify_style_order,
    woocommerce_order,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

DAY = 86_400_000
LIMIT = 64 * 1024


def test_forged_unsigned_and_hostile_requests_are_refused_and_write_nothing(
    isolated: Isolated,
    collect_server: Callable[[str], CollectServer],  # noqa: F811 (the fixture imported above)
) -> None:
    limit = LIMIT
    server = collect_server(f"[collect]\nmax_body_bytes = {limit}\nmax_events = 50\n")
    now = int(time.time() * 1000) - 60_000
    paid = orjson.dumps(shopify_style_order(2001, 8001, "10.00", now - DAY))
    wc_paid = orjson.dumps(woocommerce_order(601, 51, "10.00", now - DAY))

    def refused(answer: httpx.Response, status: int, words: str = "") -> None:
        assert answer.status_code == status, (answer.status_code, answer.text)
        assert words in answer.json()["error"], answer.text

    # -- webhooks that are not the shop's own: 401, nothing produced, nothing echoed -----------
    for platform, topic, body in (
        ("shopify", "orders/paid", paid),
        ("shopline", "orders/paid", paid),
        ("woocommerce", "order.created", wc_paid),
    ):
        signature, _, _, shop_header = HEADERS[platform]
        tampered = body.replace(b"10.00", b"99.00")
        for answer in (
            server.webhook(platform, topic, tampered, signed_body=body),
            server.webhook(platform, topic, body, secret="not-the-shop-secret"),
            server.webhook(platform, topic, body, drop=signature),
            server.webhook(platform, topic, body, drop=shop_header),
        ):
            refused(answer, 401, "signature")
            assert b"99.00" not in answer.content and b"8001" not in answer.content
        assert server.metric("rfm_collect_bad_signatures_total", platform=platform) == 4
    refused(server.webhook("shopify", "orders/paid", paid, secret=SECRETS["shopline"]), 401)
    ping = server.http.post(
        "/v1/webhooks/woocommerce",
        content=b"webhook_id=12",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert ping.status_code == 200 and ping.json() == {"accepted": 0, "ping": True}
    refused(server.http.post("/v1/webhooks/magento", content=paid), 404, "platform")

    # -- the other routes' secrets -------------------------------------------------------------
    event = order(1, "c-1", 1000, now - DAY)
    refused(server.events(event, authorization="Bearer wrong"), 401, "token")
    refused(server.events(event, authorization=f"Basic {TOKEN}"), 401, "token")
    refused(server.tracking("/v1/track", {"event": "Order Completed"}, key="wrong"), 401)
    assert server.http.get("/metrics").status_code == 401
    assert server.http.get("/v1/events").status_code == 405

    # -- hostile bodies: a clear 4xx each, never a 500 -----------------------------------------
    deep = b"[" * 5000 + b"]" * 5000
    huge = b'{"event_id": "e", "type": "order_completed", "order_id": "o", "customer_id": "c",'
    hostile: list[tuple[bytes, dict[str, str], int]] = [
        (orjson.dumps(event)[:-7], {}, 400),  # truncated
        (deep, {}, 400),
        (b'{"a": ' + b"9" * 5000 + b"}", {}, 400),  # a number past every float
        (huge + b' "amount": ' + b"9" * 400 + b', "currency": "TWD", "occurred_at": 1}', {}, 400),
        (b"\xff\xfe not UTF-8", {}, 400),
        (b"", {}, 400),
        (orjson.dumps(event), {"content-type": "text/plain"}, 415),
        (orjson.dumps(event), {"content-type": "application/x-www-form-urlencoded"}, 415),
        (b" " * (limit + 1), {}, 413),
        (orjson.dumps([event] * 51), {}, 413),
    ]
    for body, headers, status in hostile:
        answer = server.events(body, **headers)
        assert answer.status_code == status, (body[:40], answer.status_code, answer.text)
    for status, answer in (
        (413, server.events(iter([b"[" + b" " * 40_000] * 3))),  # chunked, no Content-Length
        (400, server.webhook("shopify", "orders/paid", deep)),  # signed, still not JSON we read
        (400, server.webhook("shopify", "orders/paid", paid[:-9])),
        (413, server.webhook("shopify", "orders/paid", b"{" + b" " * limit + b"}")),
        (400, server.webhook("shopify", "orders/paid", b'{"id": 5, "customer": {"id": 1}}')),
        (400, server.tracking("/v1/batch", {"batch": "not a list"})),
        (400, server.tracking("/v1/track", deep)),
        (413, server.tracking("/v1/batch", {"batch": [{"type": "page"}] * 51})),
    ):
        assert answer.status_code == status, answer.text
    assert server.healthy() and server.alive, server.tail()
    assert input_records(isolated) == []
    metrics = server.http.get("/metrics", headers={"authorization": f"Bearer {TOKEN}"}).text
    assert 'status="500"' not in metrics
