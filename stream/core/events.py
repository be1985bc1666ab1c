"""Input events (SPEC section 2): strict parsing into typed records.

Everything a storefront can get wrong becomes a ``Rejected`` with a one-line reason that
goes to the dead-letter topic; nothing here raises anything else on bad bytes. A reason
names the field and, for a field with a fixed vocabulary, the values it allows; every
missing required field is named at once, so a sender fixes an event in one round.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from stream.config import INTERACTION_KINDS, StoreSettings
from stream.core.money import AmountError, to_minor

# in the order the events reference lists them: error messages show them so
CHANNELS = ("online", "pos", "app", "social", "marketplace", "other")
ORDER_TYPES = ("order_completed", "order_refunded")
INTERACTION_TYPES = ("interaction",)
ORDER_FIELDS = ("event_id", "type", "order_id", "customer_id", "amount", "currency", "occurred_at")
INTERACTION_FIELDS = ("event_id", "type", "customer_id", "kind", "occurred_at")
MAX_ID_LEN = 128
MAX_EVENT_ID_LEN = 256
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


class Rejected(ValueError):
    """Bad input; ``str(exc)`` is the one-line reason recorded in the dead-letter topic."""


@dataclass(frozen=True, slots=True, init=False)
class OrderEvent:
    event_id: str
    customer_id: str
    order_id: str
    refund: bool  # False: order_completed, True: order_refunded
    amount: int  # minor units, >= 0 (> 0 for refunds)
    occurred_at: int  # epoch milliseconds
    channel: str | None
    full: bool  # a full refund also removes the order from Frequency

    def __init__(
        self,
        event_id: str,
        customer_id: str,
        order_id: str,
        refund: bool,
        amount: int,
        occurred_at: int,
        channel: str | None = None,
        full: bool = False,
    ) -> None:
        # written out for mypyc (see stream.core.customer); frozen: hence object.__setattr__
        object.__setattr__(self, "event_id", event_id)
        object.__setattr__(self, "customer_id", customer_id)
        object.__setattr__(self, "order_id", order_id)
        object.__setattr__(self, "refund", refund)
        object.__setattr__(self, "amount", amount)
        object.__setattr__(self, "occurred_at", occurred_at)
        object.__setattr__(self, "channel", channel)
        object.__setattr__(self, "full", full)


@dataclass(frozen=True, slots=True, init=False)
class InteractionEvent:
    event_id: str
    customer_id: str
    kind: str
    occurred_at: int
    channel: str | None

    def __init__(
        self,
        event_id: str,
        customer_id: str,
        kind: str,
        occurred_at: int,
        channel: str | None = None,
    ) -> None:
        # written out for mypyc (see stream.core.customer); frozen: hence object.__setattr__
        object.__setattr__(self, "event_id", event_id)
        object.__setattr__(self, "customer_id", customer_id)
        object.__setattr__(self, "kind", kind)
        object.__setattr__(self, "occurred_at", occurred_at)
        object.__setattr__(self, "channel", channel)


@dataclass(frozen=True, slots=True)
class ErasureEvent:
    customer_id: str
    requested_at: int


Event = OrderEvent | InteractionEvent | ErasureEvent


def _decode(raw: bytes) -> dict[str, Any]:
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        reason = "not valid UTF-8" if "utf-8" in str(exc).lower() else "not valid JSON"
        raise Rejected(f"{reason}: {str(exc).splitlines()[0][:120]}") from None
    if not isinstance(doc, dict):
        raise Rejected(f"expected a JSON object, got {json_type(doc)}")
    return doc


def json_type(value: object) -> str:
    """The JSON name of a decoded value's type (``array``, not ``list``): reasons speak of
    what the sender wrote."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def allowed_values(values: tuple[str, ...]) -> str:
    """``(allowed: a, b)``: how every reason lists the values a field may take."""
    return f"(allowed: {', '.join(values)})"


def _missing(doc: dict[str, Any], names: tuple[str, ...]) -> list[str] | None:
    """The fields of ``names`` that ``doc`` lacks (absent or null), in that order; ``None``
    when it has them all (no list built for the events that do: nearly all of them)."""
    for name in names:
        if doc.get(name) is None:
            return [name for name in names if doc.get(name) is None]
    return None


def _missing_fields(missing: list[str], vocab: dict[str, tuple[str, ...]]) -> Rejected:
    """One reason naming every missing field, with the values allowed for those of them
    that have a fixed vocabulary (``vocab``)."""
    if len(missing) == 1:
        name = missing[0]
        hint = f" {allowed_values(vocab[name])}" if name in vocab else ""
        return Rejected(f"missing field {name}{hint}")
    hints = [f"{name} allowed: {', '.join(vocab[name])}" for name in missing if name in vocab]
    hint = f" ({'; '.join(hints)})" if hints else ""
    return Rejected(f"missing fields {', '.join(missing)}{hint}")


def one_of(value: object, name: str, allowed: tuple[str, ...]) -> str:
    """``value`` if it is one of ``allowed``; the reason names the field and lists them."""
    if isinstance(value, str):
        if value in allowed:
            return value
        raise Rejected(f"unknown {name} {value[:40]!r} {allowed_values(allowed)}")
    raise Rejected(f"{name} must be a string, got {json_type(value)} {allowed_values(allowed)}")


def _text(doc: dict[str, Any], name: str, limit: int, *, allow_int: bool = False) -> str:
    if name not in doc or doc[name] is None:
        raise Rejected(f"missing field {name}")
    value = doc[name]
    if allow_int and isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise Rejected(f"{name} must be a string, got {json_type(value)}")
    if not value:
        raise Rejected(f"{name} is empty")
    if len(value) > limit:
        raise Rejected(f"{name} is longer than {limit} characters")
    return value


def customer_id_of(doc: dict[str, Any]) -> str:
    """Ids are kept exactly as sent ("00042" stays "00042"), so numbers are refused."""
    return _text(doc, "customer_id", MAX_ID_LEN)


def _timestamp(doc: dict[str, Any], name: str, now_ms: int, skew_ms: int) -> int:
    if name not in doc or doc[name] is None:
        raise Rejected(f"missing field {name}")
    value = doc[name]
    if isinstance(value, int) and not isinstance(value, bool):
        ms = value
    elif isinstance(value, str):
        try:
            # RFC 3339 allows a lower-case "t" and "z"; fromisoformat wants them upper-case
            parsed = datetime.fromisoformat(value.upper())
        except ValueError:
            raise Rejected(
                f"{name} is not RFC 3339 or epoch milliseconds: {value[:40]!r}"
            ) from None
        if parsed.tzinfo is None:
            raise Rejected(f"{name} has no UTC offset: {value[:40]!r}")
        ms = (parsed - _EPOCH) // _MS
    else:
        raise Rejected(
            f"{name} must be an RFC 3339 string or epoch milliseconds, got {json_type(value)}"
        )
    if ms < 0:
        raise Rejected(f"{name} is before 1970")
    if ms > now_ms + skew_ms:
        raise Rejected(
            f"{name} is {(ms - now_ms) // 1000}s in the future (limit {skew_ms // 1000}s)"
        )
    return ms


def _channel(doc: dict[str, Any]) -> str | None:
    channel = doc.get("channel")
    if channel is None:
        return None
    return one_of(channel, "channel", CHANNELS)


def parse_order(raw: bytes, store: StoreSettings, now_ms: int) -> OrderEvent:
    """An order event from raw bytes; ``now_ms`` is the wall clock (future-skew check)."""
    doc = _decode(raw)
    kind = doc.get("type")
    if kind is not None:
        # a wrong type first: an interaction sent here lacks the order's fields because of it
        one_of(kind, "type", ORDER_TYPES)
    missing = _missing(doc, ORDER_FIELDS)
    if missing:
        raise _missing_fields(missing, {"type": ORDER_TYPES, "currency": (store.currency,)})
    refund = kind == "order_refunded"
    customer_id = customer_id_of(doc)
    event_id = _text(doc, "event_id", MAX_EVENT_ID_LEN)
    order_id = _text(doc, "order_id", MAX_EVENT_ID_LEN, allow_int=True)
    try:
        amount = to_minor(doc["amount"], store.currency_decimals)
    except AmountError as exc:
        raise Rejected(str(exc)) from None
    if amount < 0:
        raise Rejected("amount is negative")
    if refund and amount == 0:
        raise Rejected("a refund amount must be greater than 0")
    if amount > store.max_amount * 10**store.currency_decimals:
        raise Rejected(f"amount exceeds max_amount {store.max_amount}")
    currency = doc["currency"]
    if currency != store.currency:
        if not isinstance(currency, str):
            one_of(currency, "currency", (store.currency,))  # raises: names the type
        raise Rejected(
            f"currency {currency[:10]!r} is not the store currency (allowed: {store.currency})"
        )
    occurred_at = _timestamp(doc, "occurred_at", now_ms, store.max_future_skew_ms)
    full = doc.get("full", False)
    if not isinstance(full, bool):
        raise Rejected("full must be true or false")
    if full and not refund:
        raise Rejected("full is only meaningful on order_refunded")
    return OrderEvent(
        event_id=event_id,
        customer_id=customer_id,
        order_id=order_id,
        refund=refund,
        amount=amount,
        occurred_at=occurred_at,
        channel=_channel(doc),
        full=full,
    )


def parse_interaction(raw: bytes, store: StoreSettings, now_ms: int) -> InteractionEvent:
    doc = _decode(raw)
    kind = doc.get("type")
    if kind is not None:
        one_of(kind, "type", INTERACTION_TYPES)
    missing = _missing(doc, INTERACTION_FIELDS)
    if missing:
        raise _missing_fields(missing, {"type": INTERACTION_TYPES, "kind": INTERACTION_KINDS})
    customer_id = customer_id_of(doc)
    event_id = _text(doc, "event_id", MAX_EVENT_ID_LEN)
    what = one_of(doc["kind"], "kind", INTERACTION_KINDS)
    channel = doc.get("channel")
    if channel is not None and (not isinstance(channel, str) or len(channel) > 64):
        raise Rejected("channel must be a string of at most 64 characters")
    return InteractionEvent(
        event_id=event_id,
        customer_id=customer_id,
        kind=what,
        occurred_at=_timestamp(doc, "occurred_at", now_ms, store.max_future_skew_ms),
        channel=channel,
    )


def parse_erasure(raw: bytes, store: StoreSettings, now_ms: int) -> ErasureEvent:
    doc = _decode(raw)
    customer_id = customer_id_of(doc)
    requested = doc.get("requested_at", now_ms)
    return ErasureEvent(
        customer_id=customer_id,
        requested_at=_timestamp(
            {"requested_at": requested}, "requested_at", now_ms, store.max_future_skew_ms
        ),
    )
