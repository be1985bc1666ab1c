"""The one timestamp shape changes carry, against the standard library's calendar."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from stream.core.changes import iso_ms

# years 1000..9999: four digits, where strftime and RFC 3339 spell a year the same way
FIRST_MS = int(datetime(1000, 1, 1, tzinfo=UTC).timestamp() * 1000)
LAST_MS = int(datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC).timestamp() * 1000) + 999


@given(st.integers(FIRST_MS, LAST_MS))
def test_iso_ms_is_the_utc_calendar_time(ms: int) -> None:
    expected = datetime.fromtimestamp(ms // 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")
    assert iso_ms(ms) == f"{expected}.{ms % 1000:03d}Z"


def test_iso_ms_around_the_epoch_leap_days_and_none() -> None:
    assert iso_ms(0) == "1970-01-01T00:00:00.000Z"
    assert iso_ms(-1) == "1969-12-31T23:59:59.999Z"
    assert iso_ms(951_782_400_000) == "2000-02-29T00:00:00.000Z"
    assert iso_ms(4_107_542_399_999) == "2100-02-28T23:59:59.999Z"
    assert iso_ms(None) is None
