"""Exact money: amounts travel as integer minor units and are formatted back only at the edges."""

from __future__ import annotations


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
    # digits, optionally "." and digits: str methods, not a regex (every order event runs it);
    # isascii() keeps out the other scripts' digits that isdigit() and int() would take
    whole, dot, frac = text.partition(".")
    if not (text.isascii() and whole.isdigit() and (frac.isdigit() or not dot)):
        raise AmountError(f"amount is not a plain decimal number: {str(value)[:40]!r}")
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
