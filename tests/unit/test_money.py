"""Exact money (SPEC section 2: amounts are stored exactly as integer minor units)."""

from __future__ import annotations

import math
from decimal import Decimal

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream.core.money import AmountError, format_minor, to_minor

FAST = settings(max_examples=150, deadline=None)


@pytest.mark.parametrize(
    ("value", "decimals", "expected"),
    [
        ("59.90", 2, 5990),
        ("59.9", 2, 5990),
        ("59", 2, 5900),
        ("0", 2, 0),
        ("0.00", 2, 0),
        ("0.01", 2, 1),
        ("10000000.00", 2, 1_000_000_000),
        ("1234.5", 3, 1_234_500),
        ("1234", 0, 1234),
        ("12.3456", 4, 123_456),
        (59.9, 2, 5990),
        (0.1, 2, 10),
        (0.29, 2, 29),
        (1.15, 2, 115),
        (123456789.12, 2, 12_345_678_912),
        (100, 2, 10_000),
        (0, 2, 0),
        (7, 0, 7),
    ],
)
def test_to_minor_exact(value: object, decimals: int, expected: int) -> None:
    got = to_minor(value, decimals)
    assert got == expected
    assert type(got) is int


@pytest.mark.parametrize(
    ("value", "decimals"),
    [("1.234", 2), ("0.001", 2), (1.234, 2), (0.001, 2), ("1.5", 0), ("1.00001", 4)],
)
def test_too_many_decimals_rejected(value: object, decimals: int) -> None:
    with pytest.raises(AmountError, match="decimal"):
        to_minor(value, decimals)


@pytest.mark.parametrize(("value", "expected"), [("-1.00", -100), ("-0.5", -50), (-2, -200)])
def test_negative_amounts_are_exact_and_negative(value: object, expected: int) -> None:
    # to_minor keeps the sign; the event parser is the one that rejects negatives.
    assert to_minor(value, 2) == expected


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_numbers_rejected(value: float) -> None:
    with pytest.raises(AmountError, match="finite"):
        to_minor(value, 2)


@pytest.mark.parametrize(
    "value",
    [
        "NaN",
        "nan",
        "Infinity",
        "inf",
        "-inf",
        "",
        "   ",
        "abc",
        "1,000.00",
        "1e3",
        "1E3",
        ".5",
        "5.",
        "+5",
        "--5",
        "0x10",
        "1_000",
        "59.90 TWD",
        "1.2.3",
        "5.-1",
        "- 5",
        "\u0661\u0662",  # Arabic-Indic digits: isdigit() and int() take them
        "\uff11.00",  # a full-width 1
        "\u00b2",  # superscript two
        "1.\u0665",
        None,
        True,
        False,
        [],
        {},
        [1],
        1e-05,
    ],
)
def test_garbage_rejected(value: object) -> None:
    with pytest.raises(AmountError) as exc:
        to_minor(value, 2)
    assert "\n" not in str(exc.value)


@pytest.mark.parametrize(
    ("minor", "decimals", "text"),
    [
        (123450, 2, "1234.50"),
        (0, 2, "0.00"),
        (1, 2, "0.01"),
        (-1, 2, "-0.01"),
        (-123450, 2, "-1234.50"),
        (5, 0, "5"),
        (1234, 3, "1.234"),
        (10_000_000_00, 2, "10000000.00"),
    ],
)
def test_format_minor(minor: int, decimals: int, text: str) -> None:
    assert format_minor(minor, decimals) == text


@FAST
@given(minor=st.integers(min_value=-(10**18), max_value=10**18), decimals=st.integers(0, 4))
def test_format_then_parse_round_trips(minor: int, decimals: int) -> None:
    text = format_minor(minor, decimals)
    if decimals:
        assert len(text.split(".")[1]) == decimals
    else:
        assert "." not in text
    assert to_minor(text, decimals) == minor


@FAST
@given(
    amount=st.decimals(
        min_value=0, max_value=10**7, places=2, allow_nan=False, allow_infinity=False
    ),
    decimals=st.integers(2, 4),
)
def test_decimal_strings_are_exact(amount: Decimal, decimals: int) -> None:
    assert to_minor(str(amount), decimals) == int(amount * 10**decimals)


@FAST
@given(minor=st.integers(min_value=0, max_value=10**9))
def test_json_numbers_are_exact(minor: int) -> None:
    """A JSON number such as 59.9 or 1234.05 (what orjson hands us) is stored exactly."""
    number = orjson.loads(format_minor(minor, 2).encode())
    assert isinstance(number, float)
    assert to_minor(number, 2) == minor
    assert to_minor(orjson.loads(str(minor).encode()), 2) == minor * 100


@FAST
@given(minor=st.integers(min_value=0, max_value=10**12), decimals=st.integers(0, 4))
def test_more_decimals_than_allowed_rejected(minor: int, decimals: int) -> None:
    text = format_minor(minor, decimals + 1)  # one written decimal place too many
    with pytest.raises(AmountError):
        to_minor(text, decimals)
