"""One order as an export describes it, and the SPEC events it stands for.

An export is a snapshot: it says what an order came to (its total, what has been refunded
so far, whether it was cancelled), not when each refund happened. So a paid order becomes
- its completion: the order's total, at the time the order was placed;
- a full refund of the total when the order was cancelled (at the cancellation) or wholly
  refunded; the worker caps refunds at what the order counted, so this also settles
  partial refunds it may already have;
- otherwise a refund of the refunded amount, when there is one.
Refunds the export does not date are dated at the latest time it gives the order.

Event ids are the collector's (``<platform>:<shop>:<order id>:paid|cancelled|refunded``)
plus ``:refunds`` for the refunded total, so a re-import, or an order the collector
already sent, is dropped by the worker's dedupe. The partial-refund event stands for the
total refunded when the export was taken: a later export with more refunded repeats the
id and is dropped too, so import a period once its refunds are settled.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from stream.collect.guest import buyer_id
from stream.collect.outgoing import (
    CustomerOrder,
    MappingContext,
    Outgoing,
    check_currency,
    identifier,
    minor_units,
)
from stream.collect.platforms.sources import channel_of
from stream.core.events import MAX_EVENT_ID_LEN
from stream.exports.cells import Cell


@dataclass(frozen=True)
class Unpaid:
    """An order whose money was never taken (pending, voided, failed...): nothing to count."""

    status: str


@dataclass(frozen=True)
class ExportedOrder:
    """A paid order, read from its rows; cells still as text, read in ``events``."""

    order_id: Cell
    email: str  # "" when the export has none; never written anywhere
    total: Cell
    refunded: Cell  # the total refunded so far; "" is none
    currency: Cell
    placed_at: str  # RFC 3339
    settled_at: str  # the latest time the export gives the order (RFC 3339)
    cancelled_at: str | None = None
    wholly_refunded: bool = False  # the status says so, whatever the amounts say
    source: str = ""  # where the order was placed, as the platform names it
    customer_id: str | None = None  # the platform's account id, when the export has one


def buyer(
    order: ExportedOrder, ctx: MappingContext, accounts: Callable[[str], str | None] | None = None
) -> str | None:
    """Whose order, keyed as the collector keys it; None: an anonymous sale. ``accounts``
    gives the account id of an e-mail, for exports that name the buyer by e-mail only."""
    account = order.customer_id
    if account is None and accounts is not None and order.email.strip():
        account = accounts(order.email)
    return buyer_id(account, order.email, ctx.guest_key)


def events(
    order: ExportedOrder, platform: str, customer_id: str, ctx: MappingContext
) -> list[Outgoing]:
    """The completion and refunds of a paid order; raises ``PayloadError`` naming a cell."""
    order_id = identifier(order.order_id.text, order.order_id.column, MAX_EVENT_ID_LEN)
    check_currency(order.currency.text, ctx, order.currency.column)
    total = minor_units(order.total.text, ctx.currency_decimals, order.total.column)
    refunded = minor_units(order.refunded.text or "0", ctx.currency_decimals, order.refunded.column)
    placed = CustomerOrder(ctx, order_id, customer_id, channel_of(order.source))
    prefix = f"{platform}:{ctx.shop}:{order_id}"
    out = [placed.completed(f"{prefix}:paid", total, order.placed_at)]
    if total == 0:  # a free order: nothing to give back (the worker wants a refund > 0)
        return out
    if order.cancelled_at is not None:
        out.append(placed.refunded(f"{prefix}:cancelled", total, order.cancelled_at, full=True))
    elif order.wholly_refunded or refunded >= total:
        out.append(placed.refunded(f"{prefix}:refunded", total, order.settled_at, full=True))
    elif refunded > 0:
        out.append(placed.refunded(f"{prefix}:refunds", refunded, order.settled_at))
    return out
