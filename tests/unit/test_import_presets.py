"""`rfm import --preset`: the storefronts' own order exports mapped to SPEC section 2 events.

Every fixture in tests/fixtures/exports is mapped; every event is parsed by the worker's own
parser with the default store settings and compared with tests/fixtures/exports/
expected.json, whose totals are worked out here from each order's line items (the mapping
reads the export's Total column instead). No e-mail of any fixture may appear in anything
the mapping writes or says.
"""

from __future__ import annotations

import csv
import json
import re
from collections import Counter
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream.collect.guest import guest_customer_id
from stream.collect.outgoing import MappingContext
from stream.collect.platforms import PLATFORMS
from stream.config import StoreSettings
from stream.core.events import OrderEvent, parse_order
from stream.exports import PRESETS, Published, Rejected, Tally, outcomes
from stream.exports.accounts import AccountsError, accounts, columns
from stream.exports.cells import Cell, CellError, instant, status, zone
from stream.exports.shopify import PRESET as SHOPIFY
from stream.importer import export_header, export_rows, outcome_records

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "exports"
WEBHOOKS = FIXTURES.parent / "webhooks"
EXPECTED: dict[str, Any] = json.loads((FIXTURES / "expected.json").read_text(encoding="utf-8"))
FILES = sorted(name for name in EXPECTED if name.endswith(".csv"))
STORE = StoreSettings()
NOW = int(datetime.fromisoformat("2026-12-06T00:00:00+00:00").timestamp() * 1000)
KEY = b"unit-test guest key for exports"
CTX = MappingContext(currency="TWD", currency_decimals=2, guest_key=KEY, shop="lanyu-tea")
EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]+")
D = Decimal


def ms(rfc3339: str) -> int:
    return int(datetime.fromisoformat(rfc3339).timestamp() * 1000)


def mapped(name: str, ctx: MappingContext = CTX, **kwargs: Any) -> list[Any]:
    spec = EXPECTED[name]
    shop_zone = zone(spec["timezone"]) if spec["timezone"] else None
    found = outcomes(export_rows(FIXTURES / name), PRESETS[spec["preset"]], ctx, shop_zone)
    return list(found)


def total(order: dict[str, Any]) -> Decimal:
    """Line items, plus shipping and taxes, less the discount: not the export's Total."""
    items = sum((quantity * D(price) for quantity, price in order["items"]), D(0))
    return items + D(order["extra"]) - D(order["discount"])


def buyer(order: dict[str, Any]) -> str:
    return order["customer"] if "customer" in order else guest_customer_id(order["email"], KEY)


def parsed(outcome: Published) -> list[OrderEvent]:
    out = []
    for event in outcome.events:
        assert event.kind == "orders"
        got = parse_order(orjson.dumps(event.doc), STORE, NOW)
        assert event.customer_id == got.customer_id  # the Kafka key is the customer
        out.append(got)
    return out


@pytest.mark.parametrize("name", FILES)
def test_every_event_parses_and_is_what_the_rows_say(name: str) -> None:
    spec = EXPECTED[name]
    published = {o.line: o for o in mapped(name) if isinstance(o, Published)}
    assert sorted(published) == [order["line"] for order in spec["orders"]]
    for order in spec["orders"]:
        events = parsed(published[order["line"]])
        prefix = f"{spec['platform']}:lanyu-tea:{order['id']}"
        paid = events[0]
        assert not paid.refund
        assert paid.event_id == f"{prefix}:paid"
        assert (paid.order_id, paid.customer_id) == (order["id"], buyer(order))
        assert paid.amount == total(order) * 100
        assert paid.occurred_at == ms(order["placed_at"])
        assert paid.channel == order["channel"]
        refund = order.get("refund")
        assert len(events) == (2 if refund else 1), order["id"]
        if refund:
            back = events[1]
            assert back.refund and back.full == refund["full"]
            assert back.event_id == f"{prefix}:{refund['id']}"
            assert (back.order_id, back.customer_id) == (order["id"], buyer(order))
            want = total(order) if refund["amount"] is None else D(refund["amount"])
            assert back.amount == want * 100
            assert back.occurred_at == ms(refund["at"])


@pytest.mark.parametrize("name", FILES)
def test_unpaid_and_anonymous_orders_are_counted_not_published(name: str) -> None:
    tally = Tally()
    for outcome in mapped(name):
        tally.add(outcome)
    spec = EXPECTED[name]
    assert tally.skipped == Counter(spec["skipped"])
    assert tally.completions == len(spec["orders"])
    assert tally.refunds == sum(1 for order in spec["orders"] if order.get("refund"))
    assert not tally.rejected


def test_one_buyer_however_the_e_mail_is_typed() -> None:
    published = [o for o in mapped("shopify_orders.csv") if isinstance(o, Published)]
    by_line = {o.line: {e.customer_id for e in o.events} for o in published}
    assert by_line[2] == by_line[5] == by_line[21]  # Mei.Lin@..., " mei.lin@... ", mei.lin@...
    assert len(set.union(*by_line.values())) == 6


@pytest.mark.parametrize("name", [*FILES, "shopify_orders_rejects.csv"])
def test_no_e_mail_leaves_the_mapping(name: str) -> None:
    source = (FIXTURES / name).read_text(encoding="utf-8")
    addresses = set(EMAIL.findall(source))
    assert addresses
    preset = EXPECTED.get(name, {"preset": "shopify-orders", "timezone": None})
    shop_zone = zone(preset["timezone"]) if preset["timezone"] else None
    found = list(outcomes(export_rows(FIXTURES / name), PRESETS[preset["preset"]], CTX, shop_zone))
    tally = Tally()
    written = []
    for outcome in found:
        tally.add(outcome)
        written.append(repr(outcome))
    written.append(tally.summary())
    written += [value.decode() for _, value, _ in outcome_records(found)]
    text = "\n".join(written).lower()
    assert not EMAIL.search(text)
    assert not any(address.strip().lower() in text for address in addresses)


def test_rejects_name_their_line_and_the_rest_still_maps() -> None:
    found = list(outcomes(export_rows(FIXTURES / "shopify_orders_rejects.csv"), SHOPIFY, CTX))
    assert [(o.line, o.reason) for o in found if isinstance(o, Rejected)] == [
        (3, "Currency 'USD' is not the store currency TWD"),
        (4, "Total has more than 2 decimal places: '12.345'"),
        (
            5,
            "Financial Status 'chargeback' is not one of authorized, expired, paid, "
            "partially_paid, partially_refunded, pending, refunded, unpaid, voided "
            "(the order's first row carries it)",
        ),
        (6, "Created at is not a date and time: '05/03/2026 10:15'"),
        (9, "Id 5410000000201 is also on line 2"),  # the order's rows were split
    ]
    good = [o for o in found if isinstance(o, Published)]
    assert [(o.line, [e.doc["amount"] for e in o.events]) for o in good] == [
        (2, ["500.00"]),
        (7, ["700.00"]),  # two rows, one order
    ]
    for outcome in good:
        parsed(outcome)


@pytest.mark.parametrize("name", FILES)
def test_a_re_import_repeats_every_event_id(name: str) -> None:
    """Ids come from the platform's order ids, so the worker drops a second import."""
    first = [value for _, value, _ in outcome_records(mapped(name))]
    again = [value for _, value, _ in outcome_records(mapped(name))]
    assert first == again
    ids = [orjson.loads(value)["event_id"] for value in first]
    assert len(ids) == len(set(ids))
    other_shop = MappingContext("TWD", 2, KEY, "another-shop")
    assert not set(ids) & {
        orjson.loads(v)["event_id"] for _, v, _ in outcome_records(mapped(name, other_shop))
    }


def test_the_store_currency_decimals_bound_every_amount() -> None:
    """Yen-like stores: whole amounts pass (trailing zeros are exact), cents are refused."""
    yen = MappingContext(currency="TWD", currency_decimals=0, guest_key=KEY, shop="lanyu-tea")
    found = mapped("shopify_orders.csv", yen)
    rejected = {o.line: o.reason for o in found if isinstance(o, Rejected)}
    assert rejected == {
        5: "Total has more than 0 decimal places: '899.50'",
        19: "Total has more than 0 decimal places: '1855.25'",
    }
    first = next(o for o in found if isinstance(o, Published))
    assert first.events[0].doc["amount"] == "1280"


def test_woocommerce_times_are_read_in_the_shop_time_zone() -> None:
    name = "woocommerce_orders.csv"
    rows = list(export_rows(FIXTURES / name))
    preset = PRESETS["woocommerce-orders"]
    unzoned = list(outcomes(rows, preset, CTX))
    rejected = {o.line: o.reason for o in unzoned if isinstance(o, Rejected)}
    assert sorted(rejected) == [order["line"] for order in EXPECTED[name]["orders"]]
    assert rejected[2] == (
        "date '2026-01-18 20:41:07' has no UTC offset: pass --timezone, the shop's time zone"
    )
    assert all("pass --timezone" in reason for reason in rejected.values())
    by_name = [e.doc for o in outcomes(rows, preset, CTX, zone("Asia/Taipei")) for e in _events(o)]
    by_offset = [e.doc for o in outcomes(rows, preset, CTX, zone("+08:00")) for e in _events(o)]
    assert by_name == by_offset
    in_utc = [e.doc for o in outcomes(rows, preset, CTX, zone("UTC")) for e in _events(o)]
    shift = [
        ms(a["occurred_at"]) - ms(b["occurred_at"]) for a, b in zip(in_utc, by_name, strict=True)
    ]
    assert set(shift) == {8 * 3_600_000}


def _events(outcome: Any) -> tuple[Any, ...]:
    return outcome.events if isinstance(outcome, Published) else ()


def test_a_renamed_column_and_a_byte_order_mark(tmp_path: Path) -> None:
    """``--column Total=訂單合計``: the file's own header read as the preset's; Excel's BOM."""
    source = (FIXTURES / "shopline_orders.csv").read_text(encoding="utf-8")
    header, rest = source.split("\n", 1)
    path = tmp_path / "orders.csv"
    path.write_text("\ufeff" + header.replace(",Total,", ",訂單合計,") + "\n" + rest, "utf-8")
    preset = PRESETS["shopline-orders"]
    assert preset.missing(export_header(path)) == ["Total"]
    renamed = {"Total": "訂單合計"}
    assert preset.missing(export_header(path, renamed)) == []
    again = list(outcomes(export_rows(path, renamed), preset, CTX))
    assert [repr(o) for o in again] == [repr(o) for o in mapped("shopline_orders.csv")]


def test_a_file_without_the_layout_is_named_by_its_missing_columns() -> None:
    woo = export_header(FIXTURES / "woocommerce_orders.csv")
    assert SHOPIFY.missing(woo) == [
        "Name",
        "Id",
        "Email",
        "Financial Status",
        "Currency",
        "Total",
        "Refunded Amount",
        "Created at",
        "Cancelled at",
    ]
    assert PRESETS["woocommerce-orders"].missing(woo) == []


@settings(max_examples=300, deadline=None)
@given(
    cents=st.integers(0, 10**12),
    refunded=st.integers(0, 10**12),
    decimals=st.integers(0, 4),
)
def test_amounts_are_exact_decimals(cents: int, refunded: int, decimals: int) -> None:
    """Whatever the amount, the event carries it to the last digit or the order is refused."""
    text = f"{Decimal(cents).scaleb(-4):f}"
    back = f"{Decimal(refunded).scaleb(-4):f}"
    row = {
        "Name": "#1",
        "Id": "1",
        "Email": "buyer@example.com",
        "Financial Status": "partially_refunded",
        "Currency": "TWD",
        "Total": text,
        "Refunded Amount": back,
        "Created at": "2026-01-01 00:00:00 +0000",
        "Cancelled at": "",
    }
    ctx = MappingContext("TWD", decimals, KEY, "s")
    (outcome,) = outcomes([(2, row)], SHOPIFY, ctx)
    exact = all(Decimal(v).scaleb(decimals) % 1 == 0 for v in (text, back))
    if not exact:
        assert isinstance(outcome, Rejected)
        assert "decimal places" in outcome.reason
        return
    assert isinstance(outcome, Published)
    store = StoreSettings(currency_decimals=decimals, max_amount=10**12)
    events = [parse_order(orjson.dumps(e.doc), store, NOW) for e in outcome.events]
    assert Decimal(events[0].amount).scaleb(-decimals) == Decimal(text)
    if Decimal(text) == 0 or Decimal(back) == 0:
        assert len(events) == 1
    elif Decimal(back) >= Decimal(text):
        assert events[1].full and events[1].amount == events[0].amount
    else:
        assert not events[1].full
        assert Decimal(events[1].amount).scaleb(-decimals) == Decimal(back)


def test_cells() -> None:
    assert status(Cell("s", "Partially refunded")) == "partially_refunded"
    assert status(Cell("s", "on-hold")) == "on_hold"
    assert instant(Cell("t", "2026-03-02 10:15:07 +0800"), None) == "2026-03-02T10:15:07+08:00"
    assert instant(Cell("t", "2026-03-02T02:15:07Z"), None) == "2026-03-02T02:15:07+00:00"
    assert instant(Cell("t", "2026-07-01 12:00:00"), zone("Europe/Berlin")).endswith("+02:00")
    assert instant(Cell("t", "2026-01-01 12:00:00"), zone("Europe/Berlin")).endswith("+01:00")
    assert zone("-05:30") == timezone(-timedelta(hours=5, minutes=30))
    assert zone("+0800") == timezone(timedelta(hours=8))
    with pytest.raises(CellError, match="has no UTC offset: pass --timezone"):
        instant(Cell("t", "2026-07-01 12:00:00"), None)
    with pytest.raises(ValueError, match="not a UTC offset"):
        zone("Mars/Olympus")


def test_a_customers_export_names_the_accounts_behind_the_e_mails() -> None:
    """Shopify's customers export: ids lose the apostrophe Shopify writes before them, an
    e-mail is matched however it is typed, rows without one are passed over, and an e-mail
    on two accounts maps to neither (the buyer stays a guest rather than the wrong one)."""
    path = FIXTURES / "shopify_customers.csv"
    id_column, email_column = columns(export_header(path))
    assert (id_column, email_column) == ("Customer ID", "Email")
    found = accounts(export_rows(path), id_column, email_column)
    assert found.by_email == {
        "mei.lin@example.com": "7390400000101",
        "chen.yating@example.tw": "7390412345678",
    }
    assert found.account(" Mei.Lin@EXAMPLE.com") == "7390400000101"
    assert found.account("family@example.tw") is None
    assert found.ambiguous == {"family@example.tw"}
    assert found.rejected == []
    with pytest.raises(AccountsError, match=r"'Customer ID'.*'Email'"):
        columns(export_header(FIXTURES / "shopify_orders.csv"))


def test_with_the_customers_export_history_goes_to_the_account() -> None:
    """Every order of an e-mail the customers export knows goes to its account id; every
    other buyer is keyed as before, and nothing else about the events changes."""
    path = FIXTURES / "shopify_customers.csv"
    known = accounts(export_rows(path), *columns(export_header(path)))
    plain = [o for o in mapped("shopify_orders.csv") if isinstance(o, Published)]
    joined = list(
        outcomes(
            export_rows(FIXTURES / "shopify_orders.csv"),
            SHOPIFY,
            CTX,
            None,
            known.account,
        )
    )
    assert [o.line for o in joined if isinstance(o, Published)] == [o.line for o in plain]
    by_line = {o.line: o for o in joined if isinstance(o, Published)}
    moved = 0
    for order in EXPECTED["shopify_orders.csv"]["orders"]:
        account = {"mei.lin@example.com": "7390400000101"}.get(order["email"].strip().casefold())
        moved += account is not None
        for event in by_line[order["line"]].events:
            assert event.customer_id == (account or buyer(order))
            assert event.doc["customer_id"] == event.customer_id
    assert moved == 3
    for before, after in zip(plain, by_line.values(), strict=True):
        for a, b in zip(before.events, after.events, strict=True):
            assert {**a.doc, "customer_id": ""} == {**b.doc, "customer_id": ""}


def test_a_back_filled_order_is_the_webhook_order(tmp_path: Path) -> None:
    """The same Shopify order, once from the orders/paid webhook and once from the orders
    export joined to the customers export: one customer, one event id, one amount, so the
    worker counts it once and scores one buyer."""
    webhook = orjson.loads((WEBHOOKS / "shopify" / "orders_paid_registered.json").read_bytes())
    (live,) = PLATFORMS["shopify"].map("orders/paid", webhook, CTX)
    header = export_header(FIXTURES / "shopify_orders.csv")
    row = dict.fromkeys(header, "")
    row.update(
        {
            "Name": webhook["name"],
            "Id": str(webhook["id"]),
            "Email": webhook["email"].upper(),
            "Financial Status": "paid",
            "Currency": "TWD",
            "Total": webhook["total_price"],
            "Created at": "2026-11-20 10:12:41 +0800",
            "Paid at": "2026-11-20 10:13:02 +0800",
            "Source": "web",
        }
    )
    orders = tmp_path / "orders_export.csv"
    with orders.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerow([row[column] for column in header])
    path = FIXTURES / "shopify_customers.csv"
    known = accounts(export_rows(path), *columns(export_header(path)))
    (back,) = [o for o in outcomes(export_rows(orders), SHOPIFY, CTX, None, known.account)]
    assert isinstance(back, Published)
    (filled,) = back.events
    assert live.customer_id == filled.customer_id == str(webhook["customer"]["id"])
    for field in ("event_id", "type", "order_id", "customer_id", "amount", "currency"):
        assert filled.doc[field] == live.doc[field], field
    (unjoined,) = outcomes(export_rows(orders), SHOPIFY, CTX)
    assert isinstance(unjoined, Published)
    assert unjoined.events[0].customer_id != live.customer_id  # the split the join mends
