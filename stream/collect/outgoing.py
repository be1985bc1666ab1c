"""The events the front door writes: SPEC section 2 documents, each with its topic and key.

Every builder checks what the worker's parsers (``stream.core.events``) would check that it
can know without the wall clock, so a mapped payload that is wrong fails here, with a
``PayloadError`` naming the field, instead of in the dead-letter topic later.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Literal

from stream.core.events import CHANNELS, MAX_EVENT_ID_LEN, MAX_ID_LEN, allowed_values
from stream.core.money import format_minor

DAY_MS = 86_400_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
_PLAIN = re.compile(r"(-?)([0-9]+)(?:\.([0-9]+))?\Z", re.ASCII)


class PayloadError(ValueError):
    """A verified payload we cannot map; ``str(exc)`` is a one-line reason naming the field."""


@dataclass(frozen=True)
class MappingContext:
    currency: str  # the store's currency (settings.store.currency)
    currency_decimals: int
    guest_key: bytes  # secret key of the keyed hash for guest e-mails
    shop: str  # the configured shop name the request was verified for
    # Order payloads that repeat an order's whole history (Shopify's orders/updated,
    # WooCommerce's order.updated) re-send a completion or refund only this long after it
    # happened: later copies would reach the worker after its dedupe marks expired and
    # count again. Keep it well under store.dedupe_window.
    repeat_horizon_ms: int = 15 * DAY_MS
    # When the request arrived (epoch ms): the time of a tracking call that carries none.
    received_at_ms: int | None = None


@dataclass(frozen=True)
class Outgoing:
    kind: Literal["orders", "interactions", "erasure"]  # which input topic
    customer_id: str  # the Kafka key
    doc: dict[str, Any]  # the JSON-ready event
    # The platform repeats it on later saves with no date of its own (WooCommerce's
    # ``refunds``), so no repeat horizon can hold it back: the collector remembers sending it.
    undated: bool = False


def identifier(value: object, field: str, limit: int = MAX_ID_LEN) -> str:
    """A platform id as text: numbers become their digits, as the worker keeps ids as sent."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if value is None or value == "":
        raise PayloadError(f"missing field {field}")
    if not isinstance(value, str):
        raise PayloadError(f"{field} must be a string or an integer, got {type(value).__name__}")
    if len(value) > limit:
        raise PayloadError(f"{field} is longer than {limit} characters")
    return value


def minor_units(value: object, decimals: int, field: str) -> int:
    """An amount >= 0 in minor units, exactly; trailing zeros past ``decimals`` are fine.

    Platforms send decimal strings ("1280.00") and some send JSON numbers; a number's
    shortest round-trip text is what the sender wrote, so that text is what is read.
    """
    if isinstance(value, bool) or value is None:
        raise PayloadError(f"missing field {field}" if value is None else f"{field} is a boolean")
    if isinstance(value, int):
        text = str(value)
    elif isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise PayloadError(f"{field} is not finite")
        text = format(Decimal(repr(value)), "f")
    elif isinstance(value, str):
        text = value.strip()
    else:
        raise PayloadError(f"{field} must be a decimal string or a number")
    match = _PLAIN.match(text)
    if not match:
        raise PayloadError(f"{field} is not a plain decimal number: {str(value)[:40]!r}")
    sign, whole, frac = match.group(1), match.group(2), match.group(3) or ""
    kept, rest = frac[:decimals], frac[decimals:]
    if rest.strip("0"):
        raise PayloadError(f"{field} has more than {decimals} decimal places: {str(value)[:40]!r}")
    minor = int(whole) * 10**decimals + (int(kept.ljust(decimals, "0")) if decimals else 0)
    if sign and minor:
        raise PayloadError(f"{field} is negative: {str(value)[:40]!r}")
    return minor


def check_currency(currency: object, ctx: MappingContext, field: str) -> None:
    if currency is None or currency == "":
        raise PayloadError(f"missing field {field}")
    if currency != ctx.currency:
        raise PayloadError(
            f"{field} {str(currency)[:10]!r} is not the store currency {ctx.currency}"
        )


def timestamp(value: object, field: str, *, naive_is_utc: bool = False) -> str | int:
    """An RFC 3339 time with its offset (kept as sent) or epoch milliseconds.

    ``naive_is_utc``: the platform documents the field as UTC without saying so in the text
    (WooCommerce's ``*_gmt`` dates); the offset is then written out.
    """
    if value is None or value == "":
        raise PayloadError(f"missing field {field}")
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            raise PayloadError(f"{field} is before 1970")
        return value
    if not isinstance(value, str):
        raise PayloadError(f"{field} must be an RFC 3339 string or epoch milliseconds")
    try:
        # the worker reads it the same way (stream.core.events._timestamp)
        parsed = datetime.fromisoformat(value.upper())
    except ValueError:
        raise PayloadError(f"{field} is not RFC 3339: {value[:40]!r}") from None
    if parsed.tzinfo is None:
        if not naive_is_utc:
            raise PayloadError(f"{field} has no UTC offset: {value[:40]!r}")
        parsed = parsed.replace(tzinfo=UTC)
        value = parsed.isoformat()
    if parsed < _EPOCH:
        raise PayloadError(f"{field} is before 1970")
    return value


def epoch_ms(value: str | int) -> int:
    """The instant of a value ``timestamp`` accepted."""
    if isinstance(value, int):
        return value
    return (datetime.fromisoformat(value.upper()) - _EPOCH) // _MS


@dataclass(frozen=True)
class CustomerOrder:
    """One order of one customer: what its completion and its refunds have in common."""

    ctx: MappingContext
    order_id: str
    customer_id: str
    channel: str | None = None  # one of the SPEC channels

    def __post_init__(self) -> None:
        identifier(self.customer_id, "customer_id")
        identifier(self.order_id, "order_id", MAX_EVENT_ID_LEN)
        if self.channel is not None and self.channel not in CHANNELS:
            shown = allowed_values(CHANNELS)
            raise PayloadError(f"unknown channel {self.channel[:40]!r} {shown}")

    def completed(self, event_id: str, amount_minor: int, occurred_at: str | int) -> Outgoing:
        return self._event("order_completed", event_id, amount_minor, occurred_at)

    def refunded(
        self, event_id: str, amount_minor: int, occurred_at: str | int, *, full: bool = False
    ) -> Outgoing:
        """A refund of ``amount_minor`` (> 0); ``full`` also takes the order out of Frequency."""
        if amount_minor <= 0:
            raise PayloadError("a refund amount must be greater than 0")
        out = self._event("order_refunded", event_id, amount_minor, occurred_at)
        if full:
            out.doc["full"] = True
        return out

    def _event(
        self, kind: str, event_id: str, amount_minor: int, occurred_at: str | int
    ) -> Outgoing:
        identifier(event_id, "event_id", MAX_EVENT_ID_LEN)
        doc: dict[str, Any] = {
            "event_id": event_id,
            "type": kind,
            "order_id": self.order_id,
            "customer_id": self.customer_id,
            "amount": format_minor(amount_minor, self.ctx.currency_decimals),
            "currency": self.ctx.currency,
            "occurred_at": occurred_at,
        }
        if self.channel is not None:
            doc["channel"] = self.channel
        return Outgoing("orders", self.customer_id, doc)


def interaction(
    *,
    event_id: str,
    customer_id: str,
    kind: str,
    occurred_at: str | int,
    channel: str | None = None,
) -> Outgoing:
    identifier(customer_id, "customer_id")
    identifier(event_id, "event_id", MAX_EVENT_ID_LEN)
    doc: dict[str, Any] = {
        "event_id": event_id,
        "type": "interaction",
        "customer_id": customer_id,
        "kind": kind,
        "occurred_at": occurred_at,
    }
    if channel is not None:
        doc["channel"] = channel
    return Outgoing("interactions", customer_id, doc)


def erasure(customer_id: str, requested_at: str | int | None = None) -> Outgoing:
    """Without ``requested_at`` the worker takes the time it reads the request."""
    identifier(customer_id, "customer_id")
    doc: dict[str, Any] = {"customer_id": customer_id}
    if requested_at is not None:
        doc["requested_at"] = requested_at
    return Outgoing("erasure", customer_id, doc)
