"""A customer's segment history (stream.store.history): the line kept per change reads back
as the change it was made from, and the older layouts (JSON list items, hash fields) fill in
seqs the list lacks."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import orjson
from hypothesis import given
from hypothesis import strategies as st

from stream.core.changes import CAUSES, SegmentChange
from stream.store.history import history_entry, segment_history

segments = st.sampled_from(["champions", "at_risk", "new_ready_to_repurchase", "lost"])
scores = st.fixed_dictionaries(
    {d: st.one_of(st.none(), st.integers(1, 5)) for d in ("r", "f", "m", "i")}
)


@st.composite
def events(draw: st.DrawFn) -> list[dict[str, Any]]:
    """Change events of one customer, seq 1.. in order, as the scorer publishes them (the
    newer fields present or not, as before and after they were added)."""
    out: list[dict[str, Any]] = []
    for seq in range(1, draw(st.integers(0, 25)) + 1):
        before = out[-1]["scores"] if out else None
        event: dict[str, Any] = {
            "event_id": f"c:{seq}",
            "customer_id": "c",
            "seq": seq,
            "from": out[-1]["to"] if out else None,
            "to": draw(segments),
            "scores": draw(scores),
            "metrics": {"orders": seq},
            "cause": draw(st.sampled_from(["order", "refund", "clock", "threshold_refresh"])),
            "thresholds_version": draw(st.integers(0, 9)),
            "scheme": "rfm-classic",
            "at": f"2026-12-06T10:00:{seq:02d}.000Z",
        }
        if draw(st.booleans()):
            event["trigger_event_id"] = f"evt-{seq}" if event["cause"] == "order" else None
            event["scores_before"] = before
        out.append(event)
    return out


def rfc3339(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


changes = st.builds(
    SegmentChange,
    customer_id=st.just("c"),
    metrics=st.just({}),
    scheme=st.just("rfm-classic"),
    seq=st.integers(1, 10**9),
    at=st.integers(0, 4_102_444_800_000),
    from_segment=st.one_of(st.none(), segments),
    to_segment=st.one_of(st.none(), segments),
    cause=st.sampled_from(sorted(CAUSES)),
    thresholds_version=st.integers(0, 10**6),
    scores=scores,
    scores_before=st.one_of(st.none(), scores),
    trigger_event_id=st.one_of(
        st.none(), st.text(max_size=40), st.text(st.sampled_from(" -:{}x1客😀"), max_size=12)
    ),
)


@given(st.lists(changes, max_size=20), st.integers(1, 30))
def test_each_line_reads_back_as_its_change_newest_first(
    made: list[SegmentChange], keep: int
) -> None:
    made = [replace(ch, seq=n) for n, ch in enumerate(made, start=1)]
    items = [history_entry(ch).encode() for ch in reversed(made)][:keep]  # LPUSH + LTRIM
    assert segment_history(items, {b"sg": b"lost"}, keep) == [
        {
            "seq": ch.seq,
            "at": rfc3339(ch.at),
            "from": ch.from_segment,
            "to": ch.to_segment,
            "cause": ch.cause,
            "trigger_event_id": ch.trigger_event_id,
            "scores_before": ch.scores_before,
            "scores": ch.scores,
            "thresholds_version": ch.thresholds_version,
        }
        for ch in made[::-1][:keep]
    ]


def test_a_change_without_trigger_or_scores_before_records_them_as_none() -> None:
    change = SegmentChange("c", 3, "a", "b", {"r": 1, "f": 2, "m": 3, "i": None}, {}, "clock", 4,
                           "s", 1_765_000_000_000)  # fmt: skip
    [entry] = segment_history([history_entry(change).encode()], {}, 5)
    assert (entry["trigger_event_id"], entry["scores_before"]) == (None, None)
    assert (entry["from"], entry["to"], entry["cause"], entry["thresholds_version"]) == (
        "a",
        "b",
        "clock",
        4,
    )


@given(events(), st.integers(1, 30))
def test_json_items_come_back_newest_first_with_absent_fields_null(
    published: list[dict[str, Any]], keep: int
) -> None:
    items = [orjson.dumps(e) for e in reversed(published)][:keep]  # LPUSH + LTRIM
    got = segment_history(items, {b"sg": b"lost", b"o:1": b"1,2,0,1"}, keep)
    want = [
        (
            e["seq"],
            e["at"],
            e["from"],
            e["to"],
            e["cause"],
            e.get("trigger_event_id"),
            e.get("scores_before"),
            e["scores"],
            e["thresholds_version"],
        )
        for e in published[::-1][:keep]
    ]
    assert [
        (
            h["seq"],
            h["at"],
            h["from"],
            h["to"],
            h["cause"],
            h["trigger_event_id"],
            h["scores_before"],
            h["scores"],
            h["thresholds_version"],
        )
        for h in got
    ] == want
    assert all("metrics" not in h and "customer_id" not in h for h in got)


def test_the_older_hash_fields_fill_in_seqs_the_list_lacks() -> None:
    fields = {
        b"sq": b"4",
        b"h:1": b"- champions o 1764892800000",
        b"h:2": b"champions at_risk c 1764979200000",
        b"h:3": b"at_risk champions t 1765065600000",  # also in the list: the list's wins
    }
    newer = {"seq": 4, "from": "champions", "to": "lost", "cause": "refund", "at": "x"}
    five_fields = {"seq": 3, "from": "at_risk", "to": "champions", "cause": "order", "at": "y"}
    got = segment_history([orjson.dumps(newer), orjson.dumps(five_fields)], fields, 50)
    assert [(h["seq"], h["from"], h["to"], h["cause"], h["at"]) for h in got] == [
        (4, "champions", "lost", "refund", "x"),
        (3, "at_risk", "champions", "order", "y"),
        (2, "champions", "at_risk", "clock", "2025-12-06T00:00:00.000Z"),
        (1, None, "champions", "order", "2025-12-05T00:00:00.000Z"),
    ]
    assert all(h["trigger_event_id"] is None and h["scores"] is None for h in got)
    assert [h["seq"] for h in segment_history([], fields, 2)] == [3, 2]
