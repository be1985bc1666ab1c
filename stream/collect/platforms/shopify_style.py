"""Orders and redaction requests in the shape of Shopify's Admin API webhooks.

SHOPLINE's Open API follows the same shape (topics, field names, shop/presentment money
sets), so one mapping serves both; each platform module names its headers.

Topic -> events:
- ``orders/paid``: the completion.
- ``orders/create``: the completion when the order is already paid (orders that apps and
  marketplaces import arrive paid and never fire ``orders/paid``).
- ``orders/updated``: the order's history again: its completion, each refund, the closing
  full refund, each only within ``ctx.repeat_horizon_ms`` of when it happened. This is
  where refunds come from: ``refunds/create`` does not say whose order it was.
- ``orders/cancelled``: a full refund of a paid order (an unpaid one was never counted).
- ``customers/redact``: erasure of the customer id and of the guest id of the e-mail.

Event ids are ``<platform>:<shop>:<order id>:paid|refund:<id>|cancelled|refunded``, so
every copy of one fact (a redelivery, orders/paid after orders/create, each orders/updated)
is the same event to the worker.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from stream.collect.guest import buyer_id, guest_customer_id
from stream.collect.outgoing import (
    CustomerOrder,
    MappingContext,
    Outgoing,
    PayloadError,
    check_currency,
    epoch_ms,
    erasure,
    identifier,
    minor_units,
    timestamp,
)
from stream.collect.platforms.platform import Platform
from stream.collect.platforms.sources import channel_of
from stream.core.events import MAX_EVENT_ID_LEN

# financial_status of an order whose money was taken (and maybe given back since)
PAID = frozenset({"paid", "partially_refunded", "refunded"})


class _Order:
    """One order payload and what every event of it shares."""

    def __init__(
        self, platform: str, payload: dict[str, Any], ctx: MappingContext, customer_id: str
    ) -> None:
        self.payload = payload
        self.ctx = ctx
        order_id = identifier(payload.get("id"), "id", MAX_EVENT_ID_LEN)
        self.prefix = f"{platform}:{ctx.shop}:{order_id}"
        self.order = CustomerOrder(
            ctx, order_id, customer_id, channel_of(payload.get("source_name"))
        )
        self.paid = payload.get("financial_status") in PAID

    def time(self, *fields: str) -> str | int:
        """The first of ``fields`` the payload has."""
        for field in fields:
            if self.payload.get(field) not in (None, ""):
                return timestamp(self.payload[field], field)
        raise PayloadError(f"missing field {fields[0]}")

    def total_minor(self) -> int:
        shop = _shop_money(self.payload.get("total_price_set"))
        if shop is not None:
            amount, currency = shop
            check_currency(currency, self.ctx, "total_price_set.shop_money.currency_code")
            return minor_units(
                amount, self.ctx.currency_decimals, "total_price_set.shop_money.amount"
            )
        check_currency(self.payload.get("currency"), self.ctx, "currency")
        return minor_units(
            self.payload.get("total_price"), self.ctx.currency_decimals, "total_price"
        )

    def completion(self) -> Outgoing:
        paid_at = self.time("processed_at", "created_at")
        return self.order.completed(f"{self.prefix}:paid", self.total_minor(), paid_at)

    def refund(self, index: int, refund: object) -> tuple[str | int, Outgoing | None]:
        """(when, the refund's event or None when it gave no money back)."""
        field = f"refunds[{index}]"
        if not isinstance(refund, dict):
            raise PayloadError(f"{field} must be an object")
        refund_id = identifier(refund.get("id"), f"{field}.id", MAX_EVENT_ID_LEN)
        at = timestamp(
            refund.get("created_at") or refund.get("processed_at"), f"{field}.created_at"
        )
        minor = _refunded_minor(refund, self.ctx, field)
        if minor == 0:
            return at, None
        return at, self.order.refunded(f"{self.prefix}:refund:{refund_id}", minor, at)

    def closing(self, refunded_at: str | int | None) -> tuple[str | int, Outgoing] | None:
        """The full refund of a cancelled or wholly refunded paid order, and when it came.

        Its amount is the order's total; the worker caps refunds at what the order counted,
        so it also settles partial refunds already applied.
        """
        if not self.paid:
            return None
        if self.payload.get("cancelled_at"):
            suffix, at = "cancelled", self.time("cancelled_at")
        elif self.payload.get("financial_status") == "refunded":
            suffix, at = (
                "refunded",
                refunded_at if refunded_at is not None else self.time("updated_at"),
            )
        else:
            return None
        minor = self.total_minor()
        if minor == 0:  # a free order: no refund to send (the worker wants one > 0)
            return None
        return at, self.order.refunded(f"{self.prefix}:{suffix}", minor, at, full=True)


def _buyer(order: dict[str, Any], ctx: MappingContext) -> str | None:
    customer = order.get("customer")
    customer_id = None
    email = order.get("email") or order.get("contact_email")
    if isinstance(customer, dict):
        if customer.get("id") not in (None, ""):
            customer_id = identifier(customer["id"], "customer.id")
        email = email or customer.get("email")
    return buyer_id(customer_id, email, ctx.guest_key)


def _shop_money(money_set: object) -> tuple[object, object] | None:
    """(amount, currency) in the shop's currency from a ``*_set``, when the payload has one."""
    if isinstance(money_set, dict) and isinstance(money_set.get("shop_money"), dict):
        shop = money_set["shop_money"]
        return shop.get("amount"), shop.get("currency_code")
    return None


def _refunded_minor(refund: dict[str, Any], ctx: MappingContext, field: str) -> int:
    """The money a refund gave back: its successful refund transactions."""
    transactions = refund.get("transactions")
    if not isinstance(transactions, list):
        raise PayloadError(f"missing field {field}.transactions")
    total = 0
    for i, transaction in enumerate(transactions):
        where = f"{field}.transactions[{i}]"
        if not isinstance(transaction, dict):
            raise PayloadError(f"{where} must be an object")
        if transaction.get("kind") != "refund" or transaction.get("status") != "success":
            continue
        amount, currency = transaction.get("amount"), transaction.get("currency")
        shop = _shop_money(transaction.get("amount_set"))
        if shop is not None:  # the buyer may have paid in another currency than the shop's
            amount, currency = shop
        check_currency(currency, ctx, f"{where}.currency")
        total += minor_units(amount, ctx.currency_decimals, f"{where}.amount")
    return total


def _object(payload: Any) -> dict[str, Any]:
    if not isinstance(payload, dict):
        raise PayloadError(f"expected a JSON object, got {type(payload).__name__}")
    return payload


def _order(platform: str, payload: Any, ctx: MappingContext) -> _Order | None:
    """The order, or None when it has nobody to score or is a test order."""
    body = _object(payload)
    customer_id = _buyer(body, ctx)
    if customer_id is None or body.get("test") is True:
        return None
    return _Order(platform, body, ctx, customer_id)


def _paid(platform: str, payload: Any, ctx: MappingContext) -> list[Outgoing]:
    order = _order(platform, payload, ctx)
    return [] if order is None else [order.completion()]


def _created(platform: str, payload: Any, ctx: MappingContext) -> list[Outgoing]:
    order = _order(platform, payload, ctx)
    return [] if order is None or not order.paid else [order.completion()]


def _updated(platform: str, payload: Any, ctx: MappingContext) -> list[Outgoing]:
    order = _order(platform, payload, ctx)
    if order is None:
        return []
    now = epoch_ms(order.time("updated_at"))

    def recent(at: str | int) -> bool:
        return now - epoch_ms(at) <= ctx.repeat_horizon_ms

    out: list[Outgoing] = []
    if order.paid and recent(order.time("processed_at", "created_at")):
        out.append(order.completion())
    refunds = order.payload.get("refunds") or []
    if not isinstance(refunds, list):
        raise PayloadError("refunds must be a list")
    last_refund: str | int | None = None
    for index, item in enumerate(refunds):
        at, event = order.refund(index, item)
        if last_refund is None or epoch_ms(at) > epoch_ms(last_refund):
            last_refund = at
        if event is not None and recent(at):
            out.append(event)
    closing = order.closing(last_refund)
    if closing is not None and recent(closing[0]):
        out.append(closing[1])
    return out


def _cancelled(platform: str, payload: Any, ctx: MappingContext) -> list[Outgoing]:
    order = _order(platform, payload, ctx)
    if order is None or not order.payload.get("cancelled_at"):
        return []
    closing = order.closing(None)
    return [] if closing is None else [closing[1]]


def _redact(platform: str, payload: Any, ctx: MappingContext) -> list[Outgoing]:
    """Both identities the buyer may have here: the account and the guest e-mail."""
    request = _object(payload)
    customer = request.get("customer")
    if not isinstance(customer, dict):
        raise PayloadError("missing field customer")
    ids: list[str] = []
    if customer.get("id") not in (None, ""):
        ids.append(identifier(customer["id"], "customer.id"))
    email = customer.get("email")
    if isinstance(email, str) and email.strip():
        ids.append(guest_customer_id(email, ctx.guest_key))
    if not ids:
        raise PayloadError("customer has neither id nor email")
    when = request.get("update_time")  # SHOPLINE says when; Shopify does not
    requested_at = None if when in (None, "") else timestamp(when, "update_time")
    return [erasure(customer_id, requested_at) for customer_id in ids]


_TOPICS: dict[str, Callable[[str, Any, MappingContext], list[Outgoing]]] = {
    "orders/paid": _paid,
    "orders/create": _created,
    "orders/updated": _updated,
    "orders/cancelled": _cancelled,
    "customers/redact": _redact,
}


def map_topic(
    platform: str, topic: str, payload: Any, ctx: MappingContext
) -> list[Outgoing] | None:
    """The events of one webhook; None for a topic we do not use."""
    handler = _TOPICS.get(topic)
    return None if handler is None else handler(platform, payload, ctx)


def platform(name: str, brand: str) -> Platform:
    """A platform of this shape; its headers are Shopify's with its own ``brand`` in them."""

    def map_webhook(topic: str, payload: Any, ctx: MappingContext) -> list[Outgoing] | None:
        return map_topic(name, topic, payload, ctx)

    return Platform(
        name=name,
        signature_header=f"X-{brand}-Hmac-Sha256",
        delivery_header=f"X-{brand}-Webhook-Id",
        topic_header=f"X-{brand}-Topic",
        shop_header=f"X-{brand}-Shop-Domain",
        map=map_webhook,
    )
