"""Reading one cell of an order export: text, instants, statuses.

Exports are written for spreadsheets, not for machines: times come as
``2026-03-01 14:05:09 +0800`` (Shopify) or in the shop's local time with no offset at all
(WooCommerce), statuses as ``Partially refunded`` or ``partially_refunded``. Each reader
turns one cell into what a SPEC event carries or raises ``CellError`` naming the column.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

_OFFSET = re.compile(r"([+-])([0-9]{2}):?([0-9]{2})\Z", re.ASCII)
_SEPARATORS = re.compile(r"[\s-]+")


class CellError(ValueError):
    """A cell we cannot read; ``str(exc)`` names the column (never an e-mail)."""


@dataclass(frozen=True)
class Cell:
    """A cell's text and the column it came from, for messages about it."""

    column: str
    text: str


def text(row: Mapping[str, str | None], column: str) -> str:
    """The cell stripped; "" when the row has no such column or a short line left it out."""
    return (row.get(column) or "").strip()


def cell(row: Mapping[str, str | None], column: str) -> Cell:
    return Cell(column, text(row, column))


def instant(value: Cell, zone: tzinfo | None) -> str:
    """RFC 3339 with its offset. A time written without one is in ``zone``, the shop's time
    zone (``--timezone``); with no zone it is refused rather than guessed."""
    try:
        parsed = datetime.fromisoformat(value.text.upper())
    except ValueError:
        raise CellError(f"{value.column} is not a date and time: {value.text[:40]!r}") from None
    if parsed.tzinfo is None:
        if zone is None:
            raise CellError(
                f"{value.column} {value.text[:40]!r} has no UTC offset: "
                "pass --timezone, the shop's time zone"
            )
        parsed = parsed.replace(tzinfo=zone)
    return parsed.isoformat()


def status(value: Cell) -> str:
    """``Partially refunded``, ``partially-refunded`` -> ``partially_refunded``."""
    return _SEPARATORS.sub("_", value.text.lower())


def zone(name: str) -> tzinfo:
    """A time zone from ``+08:00``/``-0500``, ``UTC`` or an IANA name (``Asia/Taipei``)."""
    match = _OFFSET.match(name.strip())
    if match:
        sign, hours, minutes = match.groups()
        offset = timedelta(hours=int(hours), minutes=int(minutes))
        if offset >= timedelta(hours=24):
            raise ValueError(f"offset out of range: {name!r}")
        return timezone(-offset if sign == "-" else offset)
    try:
        return ZoneInfo(name.strip())
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"not a UTC offset (+08:00) or a time zone name (Asia/Taipei): {name!r}"
        ) from None
