"""Exact money: amounts travel as integer minor units and are formatted back only at the edges."""

from __future__ import annotations

import re

_DECIMAL = re.compile(r"^([0-9]+)(?:\.([0-9]+))?\Z", re.ASCII)


class AmountError(ValueError):
    """The amount cannot be represented exactly in the store currency."""


def to_minor(value: object, decimals: int) -> int:
    """Minor units from a decimal string (``"59.90"``) or a JSON number, exactly.

    JSON numbers arrive as Python floats; their shortest round-trip text is what the
    sender wrote for any amount with a handful of decimals, so we parse that text rather
    than trusting binary arithmetic.
    """
    if isinstance(value, bool):
        raise AmountError("amount must be a decimal string or a number, got a boolean")
    if isinstance(value, int):
        text = str(value)
    elif isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise AmountError("amount is not finite")
        text = repr(value)
        if ("e" in text or "E" in text) and abs(value) >= 1:
            # A whole number too large for plain repr (1e+20): exact as an integer.
            text = str(int(value)) if value.is_integer() else format(value, "f")
    elif isinstance(value, str):
        text = value.strip()
    else:
        raise AmountError(
            f"amount must be a decimal string or a number, got {type(value).__name__}"
        )
    negative = text.startswith("-")
    if negative:
        text = text[1:]
    match = _DECIMAL.match(text)
    if not match:
        raise AmountError(f"amount is not a plain decimal number: {str(value)[:40]!r}")
    whole, frac = match.group(1), match.group(2) or ""
    if len(frac) > decimals:
        raise AmountError(f"amount has more than {decimals} decimal places: {str(value)[:40]!r}")
    minor = int(whole) * 10**decimals + (int(frac.ljust(decimals, "0")) if decimals else 0)
    return -minor if negative else minor


def format_minor(minor: int, decimals: int) -> str:
    """``123450, 2 -> "1234.50"``: the wire form of money in change events and exports."""
    sign = "-" if minor < 0 else ""
    minor = abs(minor)
    if decimals == 0:
        return f"{sign}{minor}"
    whole, frac = divmod(minor, 10**decimals)
    return f"{sign}{whole}.{frac:0{decimals}d}"
