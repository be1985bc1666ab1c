"""WooCommerce webhooks (https://developer.woocommerce.com/docs/apis/rest-api/v3/webhooks/).

``order.created``, ``order.updated`` and ``order.restored`` carry the whole order (the REST
API's order resource), so each is mapped as the order's history so far:
- the completion, once the order is paid: status processing or completed (on-hold and
  pending still wait for the money), or any order with ``date_paid_gmt``; from
  ``order.updated`` only within ``ctx.repeat_horizon_ms`` of the payment;
- each refund in ``refunds`` (WooCommerce has no refund topic: a refund saves the order,
  which fires ``order.updated``);
- a full refund when the order is refunded, or cancelled after it was paid.

Event ids are ``woocommerce:<shop>:<order id>:paid|refund:<id>|cancelled|refunded``, so
the repeats are dropped by the worker. The ``refunds`` list has no dates, so a refund is
repeated on every later save, months later too, past the worker's ``store.dedupe_window``:
those events are marked ``undated`` and the collector sends each once (``repeats``).

WooCommerce has no webhook for a personal-data erasure (WordPress's eraser fires none), and
``customer.deleted`` deletes an account rather than asking to forget the buyer: no topic
maps to an erasure. Dates are the ``*_gmt`` fields: UTC written without an offset.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from stream.collect.guest import buyer_id
from stream.collect.outgoing import (
    CustomerOrder,
    MappingContext,
    Outgoing,
    PayloadError,
    check_currency,
    epoch_ms,
    identifier,
    minor_units,
    timestamp,
)
from stream.collect.platforms.platform import Platform
from stream.collect.platforms.sources import channel_of
from stream.core.events import MAX_EVENT_ID_LEN

PAID_STATUSES = frozenset({"processing", "completed", "refunded"})
ORDER_TOPICS = frozenset({"order.created", "order.updated", "order.restored"})


def _time(order: dict[str, Any], *fields: str) -> str | int:
    for field in fields:
        if order.get(field) not in (None, ""):
            return timestamp(order[field], field, naive_is_utc=True)
    raise PayloadError(f"missing field {fields[0]}")


def _buyer(order: dict[str, Any], ctx: MappingContext) -> str | None:
    """WooCommerce writes customer_id 0 for a guest."""
    raw = order.get("customer_id")
    customer_id = None if raw in (None, 0, "0", "") else identifier(raw, "customer_id")
    billing = order.get("billing")
    email = billing.get("email") if isinstance(billing, dict) else None
    return buyer_id(customer_id, email, ctx.guest_key)


def _refund_minor(refund: object, index: int, decimals: int) -> tuple[str, int]:
    """(refund id, amount); the order lists each refund's total as a negative amount."""
    field = f"refunds[{index}]"
    if not isinstance(refund, dict):
        raise PayloadError(f"{field} must be an object")
    refund_id = identifier(refund.get("id"), f"{field}.id", MAX_EVENT_ID_LEN)
    total = refund.get("total")
    if isinstance(total, str):
        total = total.strip().removeprefix("-")
    elif isinstance(total, int | float) and not isinstance(total, bool):
        total = abs(total)
    return refund_id, minor_units(total, decimals, f"{field}.total")


def _order_events(topic: str, order: dict[str, Any], ctx: MappingContext) -> list[Outgoing]:
    customer_id = _buyer(order, ctx)
    if customer_id is None:
        return []
    order_id = identifier(order.get("id"), "id", MAX_EVENT_ID_LEN)
    prefix = f"woocommerce:{ctx.shop}:{order_id}"
    status = order.get("status")
    if status not in PAID_STATUSES and order.get("date_paid_gmt") in (None, ""):
        return []  # nothing counted yet, so nothing to take back either
    placed = CustomerOrder(ctx, order_id, customer_id, channel_of(order.get("created_via")))
    check_currency(order.get("currency"), ctx, "currency")
    total = minor_units(order.get("total"), ctx.currency_decimals, "total")
    saved_at = _time(order, "date_modified_gmt", "date_created_gmt")

    out: list[Outgoing] = []
    paid_at = _time(order, "date_paid_gmt", "date_completed_gmt", "date_created_gmt")
    repeated = topic != "order.created"
    if not repeated or epoch_ms(saved_at) - epoch_ms(paid_at) <= ctx.repeat_horizon_ms:
        out.append(placed.completed(f"{prefix}:paid", total, paid_at))
    refunds = order.get("refunds") or []
    if not isinstance(refunds, list):
        raise PayloadError("refunds must be a list")
    for index, refund in enumerate(refunds):
        refund_id, minor = _refund_minor(refund, index, ctx.currency_decimals)
        if minor > 0:
            refund = placed.refunded(f"{prefix}:refund:{refund_id}", minor, saved_at)
            out.append(replace(refund, undated=True))
    closing = {"cancelled": "cancelled", "refunded": "refunded"}.get(str(status))
    if closing is not None and total > 0:
        # the order's total: the worker caps refunds at what the order counted
        out.append(placed.refunded(f"{prefix}:{closing}", total, saved_at, full=True))
    return out


def map_webhook(topic: str, payload: Any, ctx: MappingContext) -> list[Outgoing] | None:
    if topic not in ORDER_TOPICS:
        return None
    if not isinstance(payload, dict):
        raise PayloadError(f"expected a JSON object, got {type(payload).__name__}")
    return _order_events(topic, payload, ctx)


PLATFORM = Platform(
    name="woocommerce",
    signature_header="X-WC-Webhook-Signature",
    delivery_header="X-WC-Webhook-Delivery-ID",
    topic_header="X-WC-Webhook-Topic",
    shop_header="X-WC-Webhook-Source",
    map=map_webhook,
)
