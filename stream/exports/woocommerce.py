"""WooCommerce's order export: the CSV of the Customer / Order / Coupon Export extension
(sold on WooCommerce.com; WooCommerce itself has no order CSV export).

Its two built-in order formats are read, "Default" (one row per order) and "Default - One
Row per Item" (the order's columns repeated on every item's row); its developer docs say
to rely on the column keys, not their order. Columns read here:

- ``order_id``: groups an order's rows; the order id of WooCommerce's webhooks;
- ``customer_id`` (0 for a guest) and ``billing_email``: the buyer, keyed as the collector
  keys it (the account id, else the keyed hash of the e-mail);
- ``status``: processing, completed and refunded were paid; cancelled was paid only when
  something was refunded (the export has no payment date); pending, on-hold, failed and
  drafts were not. A store's own statuses are refused, by name;
- ``order_currency``, ``order_total``, ``refunded_total``: the money, exact;
- ``date``: when the order was placed, in the site's time zone and without an offset, so
  the import needs ``--timezone`` (the WordPress setting, e.g. Asia/Taipei);
- ``created_via`` (checkout, admin, rest-api...), when a custom format adds it: the channel.
The export dates no refund: refunds are dated when the order was placed.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import tzinfo

from stream.collect.outgoing import minor_units
from stream.exports.cells import CellError, cell, instant, status, text
from stream.exports.order import ExportedOrder, Unpaid
from stream.exports.preset import Preset, Row

ORDER_ID = "order_id"
CUSTOMER_ID = "customer_id"
EMAIL = "billing_email"
STATUS = "status"
CURRENCY = "order_currency"
TOTAL = "order_total"
REFUNDED = "refunded_total"
DATE = "date"
SOURCE = "created_via"

PAID = frozenset({"processing", "completed", "refunded"})
UNPAID = frozenset({"pending", "on_hold", "failed", "checkout_draft", "draft"})
CANCELLED = "cancelled"


def read(rows: Sequence[Row], zone: tzinfo | None) -> ExportedOrder | Unpaid:
    first = rows[0][1]
    state = status(cell(first, STATUS)).removeprefix("wc_")
    if state in UNPAID:
        return Unpaid(state)
    if state == CANCELLED and not _refunded_any(cell(first, REFUNDED).text):
        return Unpaid(state)
    if state not in PAID and state != CANCELLED:
        raise CellError(
            f"{STATUS} {text(first, STATUS)[:40]!r} is not one of "
            f"{', '.join(sorted(PAID | UNPAID | {CANCELLED}))}"
        )
    placed_at = instant(cell(first, DATE), zone)
    customer = text(first, CUSTOMER_ID)
    return ExportedOrder(
        order_id=cell(first, ORDER_ID),
        email=text(first, EMAIL),
        total=cell(first, TOTAL),
        refunded=cell(first, REFUNDED),
        currency=cell(first, CURRENCY),
        placed_at=placed_at,
        settled_at=placed_at,
        cancelled_at=placed_at if state == CANCELLED else None,
        wholly_refunded=state == "refunded",
        source=text(first, SOURCE),
        customer_id=None if customer in ("", "0") else customer,
    )


def _refunded_any(value: str) -> bool:
    """Whether a refunded total is above zero; one that cannot be read is left to the
    mapping, which rejects it naming the column."""
    try:
        return minor_units(value or "0", 4, REFUNDED) > 0
    except ValueError:
        return True


PRESET = Preset(
    name="woocommerce-orders",
    platform="woocommerce",
    group_by=ORDER_ID,
    required=(ORDER_ID, CUSTOMER_ID, EMAIL, STATUS, CURRENCY, TOTAL, REFUNDED, DATE),
    optional=(SOURCE,),
    read=read,
)
