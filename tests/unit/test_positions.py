"""The worker's ledger of input positions (stream.core.positions): when to read again, from
where. The oracle is the history itself: a store that keeps a prefix of the positions
written holds, per shard, the last one in that prefix."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from stream.core.positions import Ledger, field_of

F = field_of("rfm.orders", 0)


def test_first_sight_behind_the_consumer_reads_again_from_the_lowest_shard() -> None:
    ledger = Ledger(3)
    assert ledger.check(F, [500, 420, 610], first=600) == 420


def test_first_sight_without_positions_or_ahead_goes_on() -> None:
    assert Ledger(1).check(F, [None], first=600) is None  # fresh or upgraded: trust Kafka
    assert Ledger(1).check(F, [600], first=600) is None
    assert Ledger(1).check(F, [700], first=600) is None  # Kafka's commit lags: overlap only


def test_a_shard_that_lost_even_the_first_position_goes_back_to_the_floor() -> None:
    ledger = Ledger(2)
    assert ledger.check(F, [None, None], first=40) is None
    ledger.advanced(F, 90)
    assert ledger.behind(F, {1: None}) == 40


def test_after_a_rewind_the_shard_is_known_to_hold_what_it_holds() -> None:
    ledger = Ledger(1)
    ledger.check(F, [100], first=100)
    ledger.advanced(F, 300)
    assert ledger.check(F, [150], first=300) == 150
    assert ledger.expected(F) == [150]
    assert ledger.check(F, [150], first=150) is None


def test_a_rebalance_forgets_everything() -> None:
    ledger = Ledger(1)
    ledger.check(F, [100], first=100)
    ledger.advanced(F, 300)
    ledger.forget()
    assert ledger.expected(F) is None


@st.composite
def histories(draw: st.DrawFn) -> tuple[list[int], int, int]:
    """Batch ends written in order, how many of those writes the store kept, and how many
    batches were applied before the loss is looked for."""
    sizes = draw(st.lists(st.integers(1, 50), min_size=1, max_size=30))
    ends, at = [], draw(st.integers(0, 1000))
    start = at
    for size in sizes:
        at += size
        ends.append(at)
    kept = draw(st.integers(0, len(ends)))
    return [start, *ends], kept, len(ends)


@given(histories())
def test_the_rewind_target_is_the_last_position_the_store_kept(
    history: tuple[list[int], int, int],
) -> None:
    (start, *ends), kept, _ = history
    ledger = Ledger(1)
    assert ledger.check(F, [None], first=start) is None
    for end in ends:
        ledger.advanced(F, end)
    survived = ends[kept - 1] if kept else None  # the store: a prefix of the writes
    target = ledger.check(F, [survived], first=ends[-1])
    if kept == len(ends):
        assert target is None
    else:
        assert target == (start if survived is None else survived)
