"""The operator API's pure parts: money averages, time ranges, matrices, the access guard."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consumers.api.guard import bearer_matches, host_name, is_loopback
from consumers.api.live import sse_event
from consumers.api.matrices import HOUR_MS, RangeError, grid_doc, hour_range, transitions_doc
from consumers.api.report import average_minor, report_doc
from stream.schemes import load_scheme


@given(st.integers(0, 10**15), st.integers(1, 10**7))
def test_average_minor_rounds_half_up_exactly(total: int, n: int) -> None:
    want = (Decimal(total) / Decimal(n)).quantize(Decimal(1), rounding=ROUND_HALF_UP)
    assert average_minor(total, n) == int(want)


def test_average_of_nothing_is_none() -> None:
    assert average_minor(100, 0) is None


def test_report_formats_money_and_orders_channels() -> None:
    scheme = load_scheme("simple", 5)
    doc = report_doc(
        scheme,
        {"high_value": 3, "potential": 0},
        {
            "high_value|orders": 7,
            "high_value|monetary": 100_001,
            "high_value|ch:pos": 1,
            "high_value|ch:online": 3,
            "potential|ch:app": 0,
        },
        2,
    )
    high = next(r for r in doc["segments"] if r["id"] == "high_value")
    assert high["revenue"] == "1000.01"
    assert high["average_order_value"] == "142.86"  # 1000.01 / 7 = 142.858...
    assert high["average_monetary"] == "333.34"  # 1000.01 / 3 = 333.336...
    assert list(high["channels"]) == ["online", "pos"]
    potential = next(r for r in doc["segments"] if r["id"] == "potential")
    assert potential["average_order_value"] is None and potential["channels"] == {}
    assert doc["total"]["customers"] == 3 and doc["total"]["revenue"] == "1000.01"


def test_hour_range_defaults_to_the_last_day_and_snaps_to_hours() -> None:
    now = 1_000 * HOUR_MS + 123
    hours = hour_range(None, None, now)
    assert hours == range(976, 1001)
    assert hour_range("1970-01-01T01:30:00+00:00", "1970-01-01T03:00:00Z", now) == range(1, 3)
    # an unencoded '+' in a query string arrives as a space
    assert hour_range("1970-01-01T09:00:00 08:00", "1970-01-01T03:00:00Z", now) == range(1, 3)


@pytest.mark.parametrize(
    ("start", "end", "message"),
    [
        ("soon", None, "from: expected an ISO 8601"),
        ("2026-01-01T00:00:00", None, "from: needs a UTC offset"),
        ("2026-01-02T00:00:00Z", "2026-01-01T00:00:00Z", "earlier than"),
        ("2020-01-01T00:00:00Z", "2026-01-01T00:00:00Z", "at most 400 days"),
    ],
)
def test_hour_range_rejects_bad_input(start: str, end: str | None, message: str) -> None:
    with pytest.raises(RangeError, match=message):
        hour_range(start, end, 1_800_000_000_000)


def test_transitions_sum_hours_and_name_first_assignments_and_erasures() -> None:
    doc = transitions_doc(
        range(5, 7), [{">champions": 2, "loyal>at_risk": 1}, {">champions": 1, "at_risk>": 1}]
    )
    assert doc["total"] == 5
    assert doc["moves"][0] == {"from": None, "to": "champions", "count": 3}
    assert {"from": "at_risk", "to": None, "count": 1} in doc["moves"]
    assert doc["from"] == "1970-01-01T05:00:00.000Z" and doc["to"] == "1970-01-01T07:00:00.000Z"


def test_grid_rows_best_recency_first_and_off_scale_counted() -> None:
    doc = grid_doc({"5:1": 2, "1:3": 4, "6:1": 1, "x": 1}, 5)
    assert doc["rows"][0] == {"r": 5, "customers": [2, 0, 0, 0, 0]}
    assert doc["rows"][4] == {"r": 1, "customers": [0, 0, 4, 0, 0]}
    assert doc["off_scale"] == 2 and doc["total"] == 8


def test_bearer_token_must_match_exactly() -> None:
    assert bearer_matches("Bearer s3cret", "s3cret")
    assert bearer_matches("bearer s3cret", "s3cret")
    for header in (None, "", "s3cret", "Basic s3cret", "Bearer s3cre", "Bearer s3cretX"):
        assert not bearer_matches(header, "s3cret")
    assert bearer_matches("Bearer 權杖", "權杖")


def test_host_names_and_loopback_binds() -> None:
    assert host_name("127.0.0.1:8080") == "127.0.0.1"
    assert host_name("[::1]:8080") == "::1"
    assert host_name("LocalHost") == "localhost"
    assert host_name("evil.example:80") == "evil.example"
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0")


def test_sse_event_is_one_data_line() -> None:
    assert sse_event("counts", {"a\nb": 1}) == b'event: counts\ndata: {"a\\nb":1}\n\n'
