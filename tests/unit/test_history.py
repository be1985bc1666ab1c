"""Recent segment changes as fields of the customer's hash (stream.store.codec)."""

from __future__ import annotations

import tomllib
from pathlib import Path

import orjson
from hypothesis import given
from hypothesis import strategies as st

from stream.core.changes import CAUSES, SegmentChange, iso_ms
from stream.store.codec import HISTORY, history_fields, recent_changes

SCHEMES = Path(__file__).resolve().parents[2] / "stream" / "schemes"
LISTPACK_VALUE_MAX = 64  # Redis's hash-max-listpack-value default
T0 = 1_732_390_586_374


def change(seq: int, from_segment: str | None, to_segment: str | None, cause: str) -> SegmentChange:
    return SegmentChange(
        customer_id="c",
        seq=seq,
        from_segment=from_segment,
        to_segment=to_segment,
        scores={},
        metrics={},
        cause=cause,
        thresholds_version=1,
        scheme="s",
        at=T0 + seq,
    )


segments = st.sampled_from(["champions", "at_risk", "new_ready_to_repurchase", "lost"])
causes = st.sampled_from(sorted(CAUSES))


@given(st.lists(st.lists(st.tuples(segments, causes), min_size=1, max_size=3), max_size=30))
def test_the_hash_keeps_exactly_the_newest_changes(commits: list[list[tuple[str, str]]]) -> None:
    stored: dict[bytes, bytes] = {b"sg": b"x"}  # another field, which must survive
    made: list[SegmentChange] = []
    for batch in commits:
        changes = []
        for to_segment, cause in batch:
            prior = made[-1].to_segment if made else None
            changes.append(change(len(made) + 1, prior, to_segment, cause))
            made.append(changes[-1])
        sets, dels = history_fields(changes)
        for name in dels:
            stored.pop(name.encode(), None)
        for name, value in zip(sets[::2], sets[1::2], strict=True):
            stored[name.encode()] = value.encode()
    kept = made[::-1][:HISTORY]
    assert sorted(k for k in stored if k.startswith(b"h:")) == sorted(
        f"h:{ch.seq}".encode() for ch in kept
    )
    assert stored[b"sg"] == b"x"
    assert recent_changes(stored) == [
        {
            "seq": ch.seq,
            "from": ch.from_segment,
            "to": ch.to_segment,
            "cause": ch.cause,
            "at": iso_ms(ch.at),
        }
        for ch in kept
    ]


def test_entries_of_the_built_in_schemes_fit_a_compact_hash_value() -> None:
    ids = [
        rule["id"]
        for path in SCHEMES.glob("*.toml")
        for rule in tomllib.loads(path.read_text(encoding="utf-8"))["rules"]
    ]
    longest = sorted(ids, key=len)[-2:]
    for cause in CAUSES:
        sets, _ = history_fields([change(10**6, longest[0], longest[1], cause)])
        assert len(sets[1].encode()) <= LISTPACK_VALUE_MAX, sets[1]


def test_entries_from_the_former_list_fill_in_what_the_hash_lacks() -> None:
    sets, _ = history_fields([change(3, "a", "b", "order")])
    fields = {sets[0].encode(): sets[1].encode(), b"sq": b"3"}
    legacy = [
        orjson.dumps({"seq": s, "from": None, "to": "a", "cause": "clock", "at": "t"})
        for s in (3, 2, 1)
    ]
    assert [(h["seq"], h["cause"]) for h in recent_changes(fields, legacy)] == [
        (3, "order"),
        (2, "clock"),
        (1, "clock"),
    ]
