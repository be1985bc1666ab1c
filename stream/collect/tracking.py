"""The Segment-compatible tracking API: ``track`` calls as order and interaction events.

Segment's e-commerce spec names the two order events: "Order Completed" (``properties``:
``order_id``, ``total``, else ``revenue``, ``currency``) and "Order Refunded" (``order_id``,
``total``: what was given back; ``full: true``, our addition, also takes the order out of
Frequency). Other event names map to an interaction kind through the configured
``interaction_names``; any other call or event is not ours (None).

The customer is ``userId``; without one, an order falls back to the guest id of the
e-mail in ``properties`` or ``context.traits``, and an anonymous interaction is skipped: an
anonymousId belongs to a browser, not to a customer we can score. The event id is the call's
``messageId``, the id Segment's libraries keep across their retries.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from stream.collect.guest import buyer_id
from stream.collect.outgoing import (
    CustomerOrder,
    MappingContext,
    Outgoing,
    PayloadError,
    check_currency,
    identifier,
    interaction,
    minor_units,
    timestamp,
)
from stream.collect.platforms.sources import channel_of
from stream.core.events import MAX_EVENT_ID_LEN

ORDER_COMPLETED = "Order Completed"
ORDER_REFUNDED = "Order Refunded"
_MAX_CHANNEL = 64  # what the worker accepts as an interaction's channel


def _object(value: Any, field: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise PayloadError(f"{field} must be an object")
    return value


def _when(call: dict[str, Any], ctx: MappingContext) -> str | int:
    for field in ("timestamp", "originalTimestamp"):
        if call.get(field) not in (None, ""):
            return timestamp(call[field], field)
    if ctx.received_at_ms is None:
        raise PayloadError("missing field timestamp")
    return ctx.received_at_ms


def _event_id(call: dict[str, Any], ctx: MappingContext) -> str:
    message_id = identifier(call.get("messageId"), "messageId", MAX_EVENT_ID_LEN)
    return f"track:{ctx.shop}:{message_id}"


def _user(call: dict[str, Any]) -> str | None:
    user = call.get("userId")
    return None if user in (None, "") else identifier(user, "userId")


def _email(call: dict[str, Any], properties: dict[str, Any]) -> object:
    traits = _object(_object(call.get("context"), "context").get("traits"), "context.traits")
    return properties.get("email") or traits.get("email")


def _order(
    call: dict[str, Any], properties: dict[str, Any], ctx: MappingContext, refund: bool
) -> list[Outgoing]:
    customer_id = buyer_id(_user(call), _email(call, properties), ctx.guest_key)
    if customer_id is None:
        raise PayloadError("an order needs userId or an email")
    event_id = _event_id(call, ctx)
    order_id = identifier(properties.get("order_id"), "properties.order_id", MAX_EVENT_ID_LEN)
    currency = properties.get("currency")
    if currency is not None:  # optional in Segment's spec: then it is the store's
        check_currency(currency, ctx, "properties.currency")
    key = "total"
    if not refund and properties.get("total") is None and properties.get("revenue") is not None:
        key = "revenue"
    amount = minor_units(properties.get(key), ctx.currency_decimals, f"properties.{key}")
    occurred_at = _when(call, ctx)
    order = CustomerOrder(ctx, order_id, customer_id, channel_of(properties.get("channel")))
    if not refund:
        return [order.completed(event_id, amount, occurred_at)]
    full = properties.get("full", False)
    if not isinstance(full, bool):
        raise PayloadError("properties.full must be true or false")
    return [order.refunded(event_id, amount, occurred_at, full=full)]


def map_track(
    call: Any, ctx: MappingContext, interaction_names: Mapping[str, str]
) -> list[Outgoing] | None:
    """One ``track`` call (the body of ``POST /v1/track``, or one item of a batch)."""
    if not isinstance(call, dict):
        raise PayloadError(f"expected a JSON object, got {type(call).__name__}")
    if call.get("type", "track") != "track":
        return None
    event = call.get("event")
    if not isinstance(event, str) or not event:
        raise PayloadError("missing field event")
    properties = _object(call.get("properties"), "properties")
    if event in (ORDER_COMPLETED, ORDER_REFUNDED):
        return _order(call, properties, ctx, refund=event == ORDER_REFUNDED)
    kind = interaction_names.get(event)
    if kind is None:
        return None
    customer_id = _user(call)
    if customer_id is None:
        return None
    channel = properties.get("channel")
    if not isinstance(channel, str) or not channel or len(channel) > _MAX_CHANNEL:
        channel = None
    return [
        interaction(
            event_id=_event_id(call, ctx),
            customer_id=customer_id,
            kind=kind,
            occurred_at=_when(call, ctx),
            channel=channel,
        )
    ]


def map_batch(
    body: Any, ctx: MappingContext, interaction_names: Mapping[str, str]
) -> list[tuple[int, list[Outgoing] | PayloadError | None]]:
    """Each item of ``POST /v1/batch`` by its index: its events, None, or why it is bad.

    Items name their own type (``track``, ``identify``, ``page``...); only ``track`` maps.
    A body that is not ``{"batch": [...]}`` raises PayloadError for the whole request.
    """
    if not isinstance(body, dict):
        raise PayloadError(f"expected a JSON object, got {type(body).__name__}")
    items = body.get("batch")
    if not isinstance(items, list):
        raise PayloadError("missing field batch" if items is None else "batch must be a list")
    out: list[tuple[int, list[Outgoing] | PayloadError | None]] = []
    for index, item in enumerate(items):
        try:
            if isinstance(item, dict) and "type" not in item:
                raise PayloadError("missing field type")
            out.append((index, map_track(item, ctx, interaction_names)))
        except PayloadError as exc:
            out.append((index, exc))
    return out
