"""The documents the front door writes: exact money, timestamps and ids the worker accepts."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream.collect.outgoing import (
    CustomerOrder,
    MappingContext,
    PayloadError,
    erasure,
    identifier,
    interaction,
    minor_units,
    timestamp,
)
from stream.config import StoreSettings
from stream.core.events import parse_erasure, parse_interaction, parse_order
from stream.core.money import format_minor

FAST = settings(max_examples=300, deadline=None)
STORE = StoreSettings()
NOW = int(datetime.fromisoformat("2026-12-06T00:00:00+00:00").timestamp() * 1000)


def decimal_amount(value: object, decimals: int, field: str) -> str:
    """The amount as the documents carry it."""
    return format_minor(minor_units(value, decimals, field), decimals)


CTX = MappingContext(currency="TWD", currency_decimals=2, guest_key=b"k", shop="lanyu-tea")


@FAST
@given(
    number=st.decimals(min_value=0, max_value=10**15, places=6, allow_nan=False),
    decimals=st.integers(0, 4),
    pad=st.integers(0, 3),
)
def test_decimal_strings_convert_exactly_or_not_at_all(
    number: Decimal, decimals: int, pad: int
) -> None:
    text = format(number, "f") + ("0" * pad if "." in format(number, "f") else "")
    step = Decimal(1).scaleb(-decimals)
    if number == number.quantize(step):
        assert Decimal(decimal_amount(text, decimals, "total")) == number
        assert decimal_amount(text, decimals, "total") == format(number.quantize(step), "f")
        assert minor_units(text, decimals, "total") == int(number.scaleb(decimals))
    else:
        with pytest.raises(PayloadError, match=f"total has more than {decimals} decimal places"):
            decimal_amount(text, decimals, "total")


@FAST
@given(minor=st.integers(0, 10**12), decimals=st.integers(0, 4))
def test_json_numbers_read_as_written(minor: int, decimals: int) -> None:
    written = Decimal(minor).scaleb(-decimals)
    as_float = float(written)
    if Decimal(repr(as_float)) == written:  # the sender's number survives as a float
        assert Decimal(decimal_amount(as_float, decimals, "total")) == written


@pytest.mark.parametrize(
    ("value", "decimals", "expected"),
    [
        ("1240.00", 2, "1240.00"),
        ("1240", 2, "1240.00"),
        (" 59.9 ", 2, "59.90"),
        ("1280.00", 0, "1280"),
        ("0", 2, "0.00"),
        ("-0.00", 2, "0.00"),
        (1240.5, 2, "1240.50"),
        (0.1, 2, "0.10"),
        (300, 2, "300.00"),
        (1e-05, 5, "0.00001"),
    ],
)
def test_amounts(value: object, decimals: int, expected: str) -> None:
    assert decimal_amount(value, decimals, "total") == expected


@pytest.mark.parametrize(
    "value",
    [
        "",
        "1,240.00",
        "1e3",
        "NaN",
        "Infinity",
        "12.",
        ".5",
        "1_000",
        "-5.00",
        True,
        None,
        [],
        float("nan"),
        -3,
        1e-05,
    ],
)
def test_what_is_not_an_exact_amount_is_refused_by_field(value: object) -> None:
    with pytest.raises(PayloadError, match="total"):
        decimal_amount(value, 2, "total")


@pytest.mark.parametrize(
    ("value", "naive_is_utc", "expected"),
    [
        ("2026-11-20T10:15:00+08:00", False, "2026-11-20T10:15:00+08:00"),
        ("2026-11-22T09:30:12.481Z", False, "2026-11-22T09:30:12.481Z"),
        ("2026-11-21T01:02:19", True, "2026-11-21T01:02:19+00:00"),
        (1796105109000, False, 1796105109000),
    ],
)
def test_timestamps(value: str | int, naive_is_utc: bool, expected: str | int) -> None:
    assert timestamp(value, "at", naive_is_utc=naive_is_utc) == expected


@pytest.mark.parametrize(
    "value", ["2026-11-21T01:02:19", "yesterday", "", None, -1, "1969-12-31T23:59:59Z", 3.5]
)
def test_times_the_worker_would_refuse_are_refused_here(value: object) -> None:
    with pytest.raises(PayloadError, match="at"):
        timestamp(value, "at")


def test_ids() -> None:
    assert identifier(5612874301495, "id") == "5612874301495"
    assert identifier("00042", "id") == "00042"
    for bad in (None, "", True, 1.5, {"id": 1}, "x" * 129):
        with pytest.raises(PayloadError, match=r"customer\.id"):
            identifier(bad, "customer.id")


@FAST
@given(
    customer=st.text(min_size=1, max_size=128),
    order=st.one_of(st.text(min_size=1, max_size=40), st.integers(0, 10**15).map(str)),
    minor=st.integers(0, 10_000_000 * 100),
    channel=st.sampled_from([None, "online", "pos", "app", "social", "marketplace", "other"]),
)
def test_any_order_document_parses_to_the_same_order(
    customer: str, order: str, minor: int, channel: str | None
) -> None:
    placed = CustomerOrder(CTX, order, customer, channel)
    done = placed.completed(f"x:{order}:paid", minor, "2026-11-20T10:15:00+08:00")
    event = parse_order(orjson.dumps(done.doc), STORE, NOW)
    assert (event.customer_id, event.order_id, event.amount, event.channel, event.refund) == (
        customer,
        order,
        minor,
        channel,
        False,
    )
    assert done.kind == "orders"
    assert done.customer_id == customer
    if minor:
        back = placed.refunded(f"x:{order}:refund:1", minor, 1796105109000, full=True)
        refund = parse_order(orjson.dumps(back.doc), STORE, NOW)
        assert (refund.refund, refund.full, refund.amount) == (True, True, minor)


def test_interaction_and_erasure_documents_parse() -> None:
    seen = interaction(
        event_id="track:s:m1", customer_id="c-1", kind="comment", occurred_at="2026-11-20T10:15:00Z"
    )
    assert parse_interaction(orjson.dumps(seen.doc), STORE, NOW).kind == "comment"
    assert seen.kind == "interactions"
    gone = erasure("c-1", "2026-12-03T09:12:44+08:00")
    assert parse_erasure(orjson.dumps(gone.doc), STORE, NOW).customer_id == "c-1"
    assert erasure("c-1").doc == {"customer_id": "c-1"}  # the worker takes the time it reads it


def test_what_the_worker_would_refuse_is_refused_here() -> None:
    with pytest.raises(PayloadError, match="greater than 0"):
        CustomerOrder(CTX, "o", "c").refunded("e", 0, 0)
    with pytest.raises(PayloadError, match="customer_id is longer than 128"):
        CustomerOrder(CTX, "o", "c" * 129)
    with pytest.raises(PayloadError) as info:
        CustomerOrder(CTX, "o", "c", "facebook")
    assert str(info.value) == (
        "unknown channel 'facebook' (allowed: online, pos, app, social, marketplace, other)"
    )
    with pytest.raises(PayloadError, match="event_id is longer than 256"):
        CustomerOrder(CTX, "o", "c").completed("e" * 257, 1, 0)
    with pytest.raises(PayloadError, match="event_id is longer than 256"):
        interaction(event_id="e" * 257, customer_id="c", kind="like", occurred_at=0)
