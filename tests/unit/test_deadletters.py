"""`rfm dlq`'s pure parts: dead-letter records decoded as the worker writes them, the choice
of dead letters, times, the two output forms and what a replay produces."""

from __future__ import annotations

import base64
import calendar
import string
import unicodedata
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stream.config import StoreSettings
from stream.core.step import DeadLetter, Record
from stream.deadletters import (
    Letter,
    ReplayRefused,
    Selection,
    human,
    in_time_order,
    jsonl,
    parse_id,
    parse_moment,
    read_letter,
    replay_of,
)
from stream.kafka.topics import Topics

FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
NOW = 1_796_551_200_000  # 2026-12-06T10:00:00Z
TOPICS = Topics("shop.")
STORE = StoreSettings()
SECOND, MINUTE, HOUR, DAY = 1000, 60 * 1000, 60 * 60 * 1000, 24 * 60 * 60 * 1000


def letter(
    partition: int = 0,
    offset: int = 0,
    timestamp: int = NOW,
    reason: str = "refund for an unknown order_id",
    payload: bytes = b"{}",
    topic: str | None = "shop.orders",
) -> Letter:
    return Letter(partition, offset, timestamp, b"c-42", topic, 2, 9, reason, payload, "utf-8")


# ---- records as the worker writes them ------------------------------------------------------


@FAST
@given(
    topic=st.text(min_size=1, max_size=30),
    partition=st.integers(0, 999),
    offset=st.integers(0, 2**62),
    key=st.none() | st.binary(max_size=40),
    value=st.binary(max_size=300) | st.text(max_size=200).map(str.encode),
    error=st.text(max_size=120),
)
def test_every_record_the_worker_writes_reads_back(
    topic: str, partition: int, offset: int, key: bytes | None, value: bytes, error: str
) -> None:
    written = DeadLetter(Record(topic, partition, offset, key, value), error).encode()
    got = read_letter(4, 17, NOW, key, written)
    assert (got.partition, got.offset, got.id, got.timestamp, got.key) == (4, 17, "4:17", NOW, key)
    assert (got.topic, got.source_partition, got.source_offset) == (topic, partition, offset)
    assert (got.reason, got.payload) == (error, value)


@pytest.mark.parametrize(
    ("value", "why"),
    [
        (b"not json", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"topic": "x", "error": "e"}', "no topic, error or payload"),
        (b'{"topic": "x", "error": "e", "payload": "%%%", "payload_encoding": "base64"}', "base64"),
        (b'{"topic": "x", "error": "e", "payload": "", "payload_encoding": "rot13"}', "rot13"),
        (None, "not JSON"),
    ],
)
def test_a_foreign_record_is_shown_not_hidden(value: bytes | None, why: str) -> None:
    got = read_letter(1, 2, NOW, None, value)
    assert got.topic is None
    assert got.reason.startswith("not a dead-letter record") and why in got.reason
    assert got.payload == (value or b"")


# ---- times and ids --------------------------------------------------------------------------


@FAST
@given(
    moment=st.tuples(
        st.integers(1970, 2200),
        st.integers(1, 12),
        st.integers(1, 28),
        st.integers(0, 23),
        st.integers(0, 59),
        st.integers(0, 59),
        st.integers(0, 999),
    ),
    offset_minutes=st.integers(-12 * 60, 14 * 60),
    lower=st.booleans(),
)
def test_rfc3339_times_to_the_millisecond(
    moment: tuple[int, ...], offset_minutes: int, lower: bool
) -> None:
    y, mo, d, h, mi, s, ms = moment
    sign = "+" if offset_minutes >= 0 else "-"
    zone = f"{sign}{abs(offset_minutes) // 60:02d}:{abs(offset_minutes) % 60:02d}"
    text = f"{y:04d}-{mo:02d}-{d:02d}T{h:02d}:{mi:02d}:{s:02d}.{ms:03d}{zone}"
    want = calendar.timegm((y, mo, d, h, mi, s, 0, 0, 0)) * 1000 + ms - offset_minutes * MINUTE
    assert parse_moment(text.lower() if lower else text, NOW) == want


def test_z_and_epoch_ms() -> None:
    assert parse_moment("2026-12-06T10:00:00Z", 0) == NOW
    assert parse_moment("2026-12-06t10:00:00z", 0) == NOW
    assert parse_moment(" 1796551200000 ", 0) == NOW


@FAST
@given(parts=st.lists(st.tuples(st.integers(0, 10_000), st.sampled_from("smhdw")), min_size=1))
def test_ages_count_back_from_now(parts: list[tuple[int, str]]) -> None:
    per = {"s": SECOND, "m": MINUTE, "h": HOUR, "d": DAY, "w": 7 * DAY}
    text = "".join(f"{n}{unit}" for n, unit in parts)
    assert parse_moment(text, NOW) == NOW - sum(n * per[unit] for n, unit in parts)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("2026-12-06T10:00:00", "needs a UTC offset"),
        ("yesterday", "RFC 3339"),
        ("1h 30m", "RFC 3339"),
        ("-1h", "RFC 3339"),
        ("1y", "units s, m, h, d, w"),
        ("", "RFC 3339"),
    ],
)
def test_times_it_refuses_name_what_it_takes(text: str, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        parse_moment(text, NOW)


def test_ids_are_partition_and_offset() -> None:
    assert parse_id("2:17") == (2, 17)
    assert parse_id(" 0:0 ") == (0, 0)
    for bad in ("2", "2:", ":3", "a:1", "1:2:3", "-1:2"):
        with pytest.raises(ValueError, match="PARTITION:OFFSET"):
            parse_id(bad)


# ---- choosing -------------------------------------------------------------------------------

REASONS = ["missing field type", "Unknown channel 'shopify'", "refund for an unknown order_id"]
letters_st = st.lists(
    st.builds(
        letter,
        partition=st.integers(0, 3),
        offset=st.integers(0, 50),
        timestamp=st.integers(0, 10).map(lambda h: NOW - h * HOUR),  # ties and boundaries
        reason=st.sampled_from(REASONS),
    ),
    max_size=40,
    unique_by=lambda x: (x.partition, x.offset),
)


@FAST
@given(
    letters=letters_st,
    reason=st.none() | st.sampled_from(["CHANNEL", "missing", "order_id", "nothing like it", ""]),
    since=st.none() | st.integers(-1, 11).map(lambda h: NOW - h * HOUR),
    until=st.none() | st.integers(-1, 11).map(lambda h: NOW - h * HOUR),
    ids=st.frozensets(st.tuples(st.integers(0, 3), st.integers(0, 50)), max_size=5),
)
def test_every_condition_given_must_hold(
    letters: list[Letter],
    reason: str | None,
    since: int | None,
    until: int | None,
    ids: frozenset[tuple[int, int]],
) -> None:
    selection = Selection(reason=reason, since=since, until=until, ids=ids)
    want = []
    for x in letters:
        ok = not ids or (x.partition, x.offset) in ids
        ok = ok and (reason is None or reason.lower() in x.reason.lower())
        ok = ok and (since is None or x.timestamp >= since)
        ok = ok and (until is None or x.timestamp < until)
        if ok:
            want.append(x)
    assert [x for x in letters if selection.matches(x)] == want
    assert selection.narrows == (bool(ids) or (reason, since, until) != (None, None, None))


@FAST
@given(letters=letters_st, limit=st.none() | st.integers(1, 50))
def test_oldest_first_and_the_limit_keeps_the_newest(
    letters: list[Letter], limit: int | None
) -> None:
    ordered = sorted(letters, key=lambda x: (x.timestamp, x.partition, x.offset))
    want = ordered if limit is None else ordered[max(0, len(ordered) - limit) :]
    assert in_time_order(iter(letters), limit) == want


# ---- showing --------------------------------------------------------------------------------


@FAST
@given(
    reason=st.text(max_size=80),
    payload=st.binary(max_size=200) | st.text(max_size=200).map(str.encode),
    key=st.none() | st.text(max_size=20).map(str.encode),
    topic=st.none() | st.text(min_size=1, max_size=20),
)
def test_human_form_is_three_lines_without_control_characters(
    reason: str, payload: bytes, key: bytes | None, topic: str | None
) -> None:
    shown = human(Letter(1, 5, NOW, key, topic, 0, 3, reason, payload, "utf-8"))
    lines = shown.split("\n")
    assert len(lines) == 3
    assert not [ch for line in lines for ch in line if unicodedata.category(ch) == "Cc"]
    assert not any(0x202A <= ord(ch) <= 0x202E or 0x2066 <= ord(ch) <= 0x2069 for ch in shown)
    assert lines[0].startswith("dead letter 1:5  at 2026-12-06T10:00:00.000Z")
    assert lines[1].startswith("  reason:  ")


def test_human_form_says_where_it_came_from() -> None:
    payload = b'{"order_id": "1003", "note": "\x1b[31mred\x1b[0m"}'
    shown = human(letter(partition=1, offset=4, payload=payload))
    assert shown == (
        "dead letter 1:4  at 2026-12-06T10:00:00.000Z  from shop.orders partition 2 offset 9"
        "  key c-42\n"
        "  reason:  refund for an unknown order_id\n"
        '  payload: {"order_id": "1003", "note": "\\x1b[31mred\\x1b[0m"}'
    )
    binary = human(letter(payload=b"\xff\x00"))
    assert binary.endswith("  payload (base64): /wA=")
    long = human(letter(payload=b"x" * 2500))
    assert long.endswith("x ... (500 more characters: --format jsonl shows all)")


@FAST
@given(payload=st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_jsonl_carries_the_record_its_place_and_the_whole_payload(payload: bytes) -> None:
    line = jsonl(letter(partition=3, offset=8, payload=payload))
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    doc: dict[str, Any] = orjson.loads(line)
    if doc["payload_encoding"] == "base64":
        assert base64.b64decode(doc["payload"]) == payload
    else:
        assert doc["payload"].encode("utf-8") == payload
    assert {k: doc[k] for k in doc if k not in ("payload", "payload_encoding")} == {
        "id": "3:8",
        "dlq_partition": 3,
        "dlq_offset": 8,
        "time": "2026-12-06T10:00:00.000Z",
        "key": "c-42",
        "topic": "shop.orders",
        "partition": 2,
        "offset": 9,
        "error": "refund for an unknown order_id",
    }


# ---- replaying ------------------------------------------------------------------------------

REFUND = {
    "event_id": "evt-4",
    "type": "order_refunded",
    "order_id": "1002",
    "customer_id": "顧客-42",
    "amount": "450.00",
    "currency": "TWD",
    "occurred_at": "2026-12-06T09:00:00Z",
    "full": True,
}
INTERACTION = {
    "event_id": "evt-5",
    "type": "interaction",
    "customer_id": "c-7",
    "kind": "review",
    "occurred_at": NOW - HOUR,
}


def test_a_good_payload_goes_back_to_its_topic_keyed_by_customer() -> None:
    raw = orjson.dumps(REFUND)
    got = replay_of(letter(payload=raw), None, TOPICS, STORE, NOW)
    assert (got.topic, got.key, got.value) == ("shop.orders", "顧客-42".encode(), raw)
    fixed = orjson.dumps(INTERACTION)
    dead = letter(topic="shop.interactions", payload=b'{"kind": "zzz"}')
    got = replay_of(dead, b"\n  " + fixed + b"\n", TOPICS, STORE, NOW)
    assert (got.topic, got.key, got.value) == ("shop.interactions", b"c-7", fixed)
    erasure = letter(topic="shop.erasure", payload=b'{"customer_id": "c-9"}')
    assert replay_of(erasure, None, TOPICS, STORE, NOW).key == b"c-9"


@pytest.mark.parametrize(
    ("dead", "payload", "says"),
    [
        (letter(payload=b'{"type": "order_completed"}'), None, "its payload again: missing field"),
        (letter(), orjson.dumps({**REFUND, "currency": "USD"}), "given payload again: currency"),
        (letter(), orjson.dumps({**REFUND, "occurred_at": NOW + DAY}), "occurred_at"),
        (letter(topic="shop.interactions"), orjson.dumps(REFUND), "given payload again: "),
        (letter(topic="other.orders"), orjson.dumps(REFUND), "not an input topic"),
        (letter(topic="shop.dlq"), orjson.dumps(REFUND), "shop.orders, shop.interactions"),
        (read_letter(0, 0, NOW, None, b"junk"), orjson.dumps(REFUND), "not a dead-letter record"),
    ],
)
def test_what_the_worker_would_reject_again_is_refused_with_why(
    dead: Letter, payload: bytes | None, says: str
) -> None:
    with pytest.raises(ReplayRefused, match=says.replace(".", r"\.")):
        replay_of(dead, payload, TOPICS, STORE, NOW)


def test_replay_of_no_payload_uses_the_original_bytes() -> None:
    raw = orjson.dumps({**REFUND, "amount": 450}) + b"  "
    assert replay_of(letter(payload=raw), None, TOPICS, STORE, NOW).value == raw.strip()
    assert set(string.whitespace) & set(raw.strip().decode()[-1:]) == set()
