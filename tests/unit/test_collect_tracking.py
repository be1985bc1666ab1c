"""The Segment-compatible tracking API (SPEC section 11): track and batch bodies as events."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest

from stream.collect.guest import guest_customer_id
from stream.collect.outgoing import MappingContext, Outgoing, PayloadError
from stream.collect.tracking import map_batch, map_track
from stream.config import StoreSettings
from stream.core.events import Event, InteractionEvent, OrderEvent, parse_interaction, parse_order

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "tracking"
STORE = StoreSettings()
NOW = int(datetime.fromisoformat("2026-12-06T00:00:00+00:00").timestamp() * 1000)
KEY = b"unit-test guest key"
CTX = MappingContext(currency="TWD", currency_decimals=2, guest_key=KEY, shop="lanyu-tea")
NAMES = {"Product Reviewed": "review", "Live Stream Viewed": "live_view", "Post Shared": "share"}


def load(name: str) -> tuple[bytes, Any]:
    raw = (FIXTURES / f"{name}.json").read_bytes()
    return raw, orjson.loads(raw)


def parsed(out: Outgoing) -> Event:
    parse = parse_interaction if out.kind == "interactions" else parse_order
    event = parse(orjson.dumps(out.doc), STORE, NOW)
    assert event.customer_id == out.customer_id  # the Kafka key is the event's customer
    return event


def no_email_written(raw: bytes, out: list[Outgoing]) -> None:
    written = b"".join(orjson.dumps(o.doc) + o.customer_id.encode() for o in out).lower()
    for email in re.findall(rb"[\w.+-]+@[\w-]+(?:\.[\w-]+)+", raw):
        assert email.lower() not in written


def the_event(name: str) -> tuple[Outgoing, Event]:
    """The one event of a fixture's call, after checking no e-mail of it was written."""
    raw, call = load(name)
    out = map_track(call, CTX, NAMES)
    assert out is not None
    no_email_written(raw, out)
    [one] = out
    return one, parsed(one)


def test_order_completed() -> None:
    done, event = the_event("track_order_completed")
    assert isinstance(event, OrderEvent)
    assert not event.refund
    assert done.customer_id == "7390412345678"
    # two tins at 450 and a box of cakes at 220.5, plus 60 shipping and 60 tax
    assert Decimal(done.doc["amount"]) == Decimal(450) * 2 + Decimal("220.5") + 60 + 60
    assert (event.order_id, event.channel) == ("W-50314", "online")
    assert event.event_id == "track:lanyu-tea:ajs-next-1f0c2e6b9d8a4c3e8f7a6b5c4d3e2f10"


def test_order_refunded_by_a_guest() -> None:
    refund, event = the_event("track_order_refunded")
    assert isinstance(event, OrderEvent)
    assert (event.refund, event.full, event.order_id) == (True, False, "W-50377")
    assert refund.customer_id == guest_customer_id("guo.ting@example.tw", KEY)
    assert Decimal(refund.doc["amount"]) == Decimal(380)
    assert refund.doc["occurred_at"] == "2026-11-29T03:12:00+08:00"


def test_a_configured_event_is_an_interaction() -> None:
    seen, event = the_event("track_interaction")
    assert isinstance(event, InteractionEvent)
    assert (event.customer_id, event.kind, event.channel) == ("7390498765432", "review", "line")
    assert seen.kind == "interactions"


def test_a_batch_maps_item_by_item() -> None:
    raw, body = load("batch")
    results = map_batch(body, CTX, NAMES)
    assert [index for index, _ in results] == list(range(7))
    outcome = dict(results)
    done = outcome[0]
    assert isinstance(done, list)
    assert Decimal(done[0].doc["amount"]) == Decimal("560.00")
    assert parsed(done[0]).channel == "pos"
    assert outcome[1] is None and outcome[2] is None  # identify, page
    live = outcome[3]
    assert isinstance(live, list)
    event = parsed(live[0])
    assert isinstance(event, InteractionEvent)
    assert (event.kind, event.channel) == ("live_view", "facebook")
    assert outcome[4] is None  # an event name nobody configured
    bad = outcome[5]
    assert isinstance(bad, PayloadError)
    assert "properties.total" in str(bad)
    assert outcome[6] is None  # an anonymous interaction: nobody to score
    no_email_written(raw, [o for _, r in results if isinstance(r, list) for o in r])


def test_the_track_endpoint_body_names_no_type() -> None:
    _, call = load("track_interaction")
    del call["type"]
    assert map_track(call, CTX, NAMES) == map_track({**call, "type": "track"}, CTX, NAMES)
    assert map_track({**call, "type": "identify"}, CTX, NAMES) is None


def test_the_time_of_a_call_without_one_is_when_it_arrived() -> None:
    _, call = load("track_interaction")
    del call["timestamp"]
    with pytest.raises(PayloadError, match="timestamp"):
        map_track(call, CTX, NAMES)
    out = map_track(call, replace(CTX, received_at_ms=NOW - 1000), NAMES)
    assert out is not None
    assert parsed(out[0]).occurred_at == NOW - 1000
    out = map_track({**call, "originalTimestamp": "2026-11-30T12:45:08Z"}, CTX, NAMES)
    assert out is not None
    assert out[0].doc["occurred_at"] == "2026-11-30T12:45:08Z"


def test_orders() -> None:
    _, call = load("track_order_completed")
    props = call["properties"]
    revenue_only = {**call, "properties": {**props, "total": None}}
    out = map_track(revenue_only, CTX, NAMES)
    assert out is not None
    assert out[0].doc["amount"] == "1120.50"
    no_currency = {**call, "properties": {**props, "currency": None}}
    assert map_track(no_currency, CTX, NAMES) == map_track(call, CTX, NAMES)
    full = {**call, "event": "Order Refunded", "properties": {**props, "full": True}}
    out = map_track(full, CTX, NAMES)
    assert out is not None
    assert parsed(out[0]).full is True


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"properties": {"order_id": "W-1", "total": 10, "currency": "USD"}}, r"'USD'.*TWD"),
        ({"properties": {"total": 10}}, "properties.order_id"),
        ({"properties": {"order_id": "W-1", "total": "10.005"}}, "properties.total"),
        ({"messageId": None}, "messageId"),
        ({"userId": None}, "userId or an email"),
        ({"timestamp": "2026-11-22 09:30"}, "timestamp"),
        ({"event": None}, "event"),
        ({"properties": "W-1"}, "properties"),
    ],
)
def test_a_call_we_cannot_map_names_the_field(change: dict[str, Any], reason: str) -> None:
    _, call = load("track_order_completed")
    with pytest.raises(PayloadError, match=reason):
        map_track({**call, **change}, CTX, NAMES)


def test_a_refund_must_give_money_back() -> None:
    _, call = load("track_order_refunded")
    with pytest.raises(PayloadError, match="greater than 0"):
        map_track({**call, "properties": {**call["properties"], "total": 0}}, CTX, NAMES)
    with pytest.raises(PayloadError, match=r"properties\.full"):
        map_track({**call, "properties": {**call["properties"], "full": "yes"}}, CTX, NAMES)


def test_bodies_that_are_not_a_batch() -> None:
    for body, reason in (([], "JSON object"), ({}, "missing field batch"), ({"batch": {}}, "list")):
        with pytest.raises(PayloadError, match=reason):
            map_batch(body, CTX, NAMES)
    results = map_batch({"batch": ["x", {"event": "Order Completed"}]}, CTX, NAMES)
    assert [index for index, _ in results] == [0, 1]
    [(_, bad), (_, untyped)] = results
    assert isinstance(bad, PayloadError)
    assert isinstance(untyped, PayloadError)
    assert "type" in str(untyped)
