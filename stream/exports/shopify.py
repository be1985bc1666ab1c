"""Shopify's orders export (Admin > Orders > Export, "CSV for Excel" or "Plain CSV file").

As Shopify's help centre describes the file: one row per line item; the order's own columns
(status, totals, dates) are filled on its first row and mostly left blank on the rows of
its other items, which repeat ``Name``. Columns read here:

- ``Name`` (the order number shown in the admin, ``#1001``): groups an order's rows;
- ``Id``: the order's id, the ``id`` of Shopify's webhooks, so an order the collector sent
  and its back-fill are one order to the worker;
- ``Email``: the buyer (the export has no customer id), keyed as the collector keys guests;
- ``Financial Status``: paid, partially_refunded, refunded count; pending, authorized,
  partially_paid, voided, expired (and unpaid) do not;
- ``Currency``, ``Total``, ``Refunded Amount``: the money, exact;
- ``Created at`` (when the order was placed: the purchase), ``Paid at``, ``Cancelled at``:
  ``2026-03-01 14:05:09 +0800``;
- ``Source`` (web, pos, iphone, an app's name or id): the channel.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import tzinfo

from stream.collect.outgoing import epoch_ms
from stream.exports.cells import CellError, cell, instant, status, text
from stream.exports.order import ExportedOrder, Unpaid
from stream.exports.preset import Preset, Row

NAME = "Name"
ID = "Id"
EMAIL = "Email"
FINANCIAL_STATUS = "Financial Status"
CURRENCY = "Currency"
TOTAL = "Total"
REFUNDED = "Refunded Amount"
CREATED_AT = "Created at"
PAID_AT = "Paid at"
CANCELLED_AT = "Cancelled at"
SOURCE = "Source"

PAID = frozenset({"paid", "partially_refunded", "refunded"})
UNPAID = frozenset({"pending", "authorized", "partially_paid", "voided", "expired", "unpaid"})


def read(rows: Sequence[Row], zone: tzinfo | None) -> ExportedOrder | Unpaid:
    """The order of one run of rows; its columns are on the first."""
    first = rows[0][1]
    financial = status(cell(first, FINANCIAL_STATUS))
    if financial in UNPAID:
        return Unpaid(financial)
    if financial not in PAID:
        raise CellError(
            f"{FINANCIAL_STATUS} {text(first, FINANCIAL_STATUS)[:40]!r} is not one of "
            f"{', '.join(sorted(PAID | UNPAID))} (the order's first row carries it)"
        )
    if not text(first, ID):
        raise CellError(f"{ID} is empty on the order's first row")
    placed_at = instant(cell(first, CREATED_AT), zone)
    times = [placed_at]
    if text(first, PAID_AT):
        times.append(instant(cell(first, PAID_AT), zone))
    cancelled_at = None
    if text(first, CANCELLED_AT):
        cancelled_at = instant(cell(first, CANCELLED_AT), zone)
        times.append(cancelled_at)
    return ExportedOrder(
        order_id=cell(first, ID),
        email=text(first, EMAIL),
        total=cell(first, TOTAL),
        refunded=cell(first, REFUNDED),
        currency=cell(first, CURRENCY),
        placed_at=placed_at,
        settled_at=max(times, key=epoch_ms),
        cancelled_at=cancelled_at,
        wholly_refunded=financial == "refunded",
        source=text(first, SOURCE),
    )


def preset(name: str, platform: str) -> Preset:
    """This layout under another platform's name (SHOPLINE's export is read as this one)."""
    return Preset(
        name=name,
        platform=platform,
        group_by=NAME,
        required=(
            NAME,
            ID,
            EMAIL,
            FINANCIAL_STATUS,
            CURRENCY,
            TOTAL,
            REFUNDED,
            CREATED_AT,
            CANCELLED_AT,
        ),
        optional=(PAID_AT, SOURCE),
        read=read,
    )


PRESET = preset("shopify-orders", "shopify")
