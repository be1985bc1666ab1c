"""Warnings a flood cannot multiply: per kind, the first at once, then one a period with the
number held back. The oracle is a replay of the rule over the list of calls."""

from __future__ import annotations

import itertools
import logging

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream.collect.notices import Notices


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_flood_writes_one_line_a_minute_with_the_count(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    notices = Notices(logging.getLogger("test.notices"), every=60, clock=clock)
    with caplog.at_level(logging.WARNING, "test.notices"):
        for second in range(150):  # ten refusals a second for 150 s
            clock.now = float(second)
            for _ in range(10):
                notices.warning("unsigned:shopify", "refused")
        notices.warning("limited:shop:a", "over the rate")  # another kind: written at once
    assert [r.getMessage() for r in caplog.records] == [
        "refused",
        "refused (599 more like it since the last such line)",
        "refused (599 more like it since the last such line)",
        "over the rate",
    ]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 5_000), st.sampled_from(["a", "b"])), min_size=1, max_size=100
    )
)
def test_each_line_counts_the_calls_since_the_one_before(calls: list[tuple[int, str]]) -> None:
    """Per kind: lines at least a period apart; each counts exactly the calls held since the
    previous line; calls after the last line came within a period of it; the first call is
    always written."""
    clock = Clock()
    lines: list[tuple[int, str]] = []  # (index of the call that wrote it, message)

    class Recorder(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append((len(times) - 1, record.getMessage()))

    log = logging.getLogger("test.notices.property")
    log.propagate = False
    handler = Recorder()
    log.addHandler(handler)
    times: list[float] = []
    try:
        notices = Notices(log, every=60, clock=clock)
        now = 0
        for gap, kind in calls:
            now += gap
            clock.now = now / 100  # gaps up to 50 s
            times.append(clock.now)
            notices.warning(kind, kind)
    finally:
        log.removeHandler(handler)
    for kind in ("a", "b"):
        mine = [i for i, (_, k) in enumerate(calls) if k == kind]
        written = [(i, m) for i, m in lines if calls[i][1] == kind]
        if not mine:
            assert not written
            continue
        assert written[0] == (mine[0], kind)
        for (before, _), (at, message) in itertools.pairwise(written):
            assert times[at] - times[before] >= 60
            held = sum(1 for i in mine if before < i < at)
            assert message == (
                f"{kind} ({held} more like it since the last such line)" if held else kind
            )
        last = written[-1][0]
        assert all(times[i] - times[last] < 60 for i in mine if i > last)
