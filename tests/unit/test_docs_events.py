"""The events reference (docs/events.md) and its JSON Schemas (docs/schemas/) against the code.

Every sample in the docs is accepted by the worker's parser, by the collector's check of a
``POST /v1/events`` body, and by its schema; schema and parser refuse the same broken events;
the change events and dead letters the core writes are valid against theirs. The schemas are
written by hand from the contract, so each side checks the other.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from stream.collect.submission import submitted_events
from stream.config import INTERACTION_KINDS, Settings, StoreSettings
from stream.core.customer import Customer
from stream.core.events import Event, Rejected, parse_erasure, parse_interaction, parse_order
from stream.core.rescore import ScoringContext
from stream.core.scoring import Thresholds
from stream.core.step import DeadLetter, Record, fold, rescored
from stream.kafka.topics import Topics
from stream.schemes import load_scheme
from stream.shell.processor import wall_ms
from stream.store.commits import Loaded

ROOT = Path(__file__).resolve().parents[2]
SCHEMAS = ROOT / "docs" / "schemas"
STORE = StoreSettings()
TOPICS = Topics()
INPUT_KINDS = ("order_completed", "order_refunded", "interaction", "erasure")
PARSERS: dict[str, Callable[[bytes, StoreSettings, int], Event]] = {
    TOPICS.orders: parse_order,
    TOPICS.interactions: parse_interaction,
    TOPICS.erasure: parse_erasure,
}
TOPIC_OF = {
    "order_completed": TOPICS.orders,
    "order_refunded": TOPICS.orders,
    "interaction": TOPICS.interactions,
    "erasure": TOPICS.erasure,
}
FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


class _Drop:
    """A field left out of a variant; its repr is stable, so test ids are the same in every
    process (pytest-xdist compares the collections of its workers)."""

    def __repr__(self) -> str:
        return "<dropped>"


DROP = _Drop()


def decimal_json(text: str | bytes) -> Any:
    """JSON as a schema should see it: numbers as exact decimals, not binary floats."""
    return json.loads(text, parse_float=Decimal)


@cache
def validator(name: str) -> Draft202012Validator:
    schema = decimal_json((SCHEMAS / f"{name}.schema.json").read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)


def schema_accepts(name: str, text: str | bytes) -> bool:
    return validator(name).is_valid(decimal_json(text))


def code_accepts(kind: str, text: str | bytes) -> bool:
    """The worker's parser on the kind's topic and the collector's check of the same item."""
    raw = text.encode() if isinstance(text, str) else text
    try:
        PARSERS[TOPIC_OF[kind]](raw, STORE, wall_ms())
    except Rejected:
        return False
    _, problems = submitted_events(orjson.loads(raw), STORE, wall_ms())
    return not problems


def kind_of(event: dict[str, Any]) -> str:
    return str(event["type"])


# ---- the samples in the docs ---------------------------------------------------------------

TAG = re.compile(r"<!-- check: (\w+) -->\n```json\n(.*?)```", re.S)
BLOCK = re.compile(r"(<!-- check: \w+ -->\n)?```json\n(.*?)```", re.S)
# events: valid input events; refused: input events both the code and the schemas refuse;
# segment_change, dlq_record: what the scorer writes; none: any other JSON
CHECKS = ("events", "refused", "segment_change", "dlq_record", "none")


def doc_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def samples(check: str) -> list[tuple[str, str]]:
    """(where, JSON text) of every ```json block in the docs tagged ``check``."""
    out = []
    for path in doc_files():
        text = path.read_text(encoding="utf-8")
        for n, match in enumerate(TAG.finditer(text)):
            if match.group(1) == check:
                out.append((f"{path.relative_to(ROOT)}#{n}", match.group(2)))
    return out


def _items(text: str) -> list[dict[str, Any]]:
    doc = orjson.loads(text)
    return doc if isinstance(doc, list) else [doc]


def _looks_like_an_event(text: str) -> bool:
    try:
        items = _items(text)
    except orjson.JSONDecodeError:
        return False  # a shortened answer ("...") is not a sample to check
    return any(
        isinstance(item, dict) and ("event_id" in item or item.get("type") in INPUT_KINDS)
        for item in items
    )


def test_every_event_sample_in_the_docs_is_tagged() -> None:
    """A ```json block holding an event says what to check it as (events.md, "JSON Schemas");
    other JSON (API answers) may go untagged."""
    for path in doc_files():
        for tag, body in BLOCK.findall(path.read_text(encoding="utf-8")):
            assert tag or not _looks_like_an_event(body), f"{path}: an untagged event\n{body}"
        assert {tag for tag, _ in TAG.findall(path.read_text(encoding="utf-8"))} <= set(CHECKS)


def test_the_reference_shows_every_kind() -> None:
    reference = (ROOT / "docs" / "events.md").read_text(encoding="utf-8")
    shown = [item for _, text in samples("events") for item in _items(text)]
    assert {kind_of(item) for item in shown} == set(INPUT_KINDS)
    assert {item.get("kind") for item in shown} >= set(INTERACTION_KINDS)
    for name in (*INPUT_KINDS, "segment_change", "dlq_record"):
        assert f"schemas/{name}.schema.json" in reference
    assert samples("segment_change") and samples("dlq_record") and samples("refused")


@pytest.mark.parametrize(("where", "text"), samples("events"))
def test_sample_events_pass_the_parser_the_collector_and_their_schema(
    where: str, text: str
) -> None:
    for item in _items(text):
        kind = kind_of(item)
        raw = orjson.dumps(item)
        assert code_accepts(kind, raw), (where, item)
        assert schema_accepts(kind, raw), (where, list(validator(kind).iter_errors(item)))
    _, problems = submitted_events(orjson.loads(text), STORE, wall_ms())
    assert problems == [], where


@pytest.mark.parametrize(("where", "text"), samples("refused"))
def test_sample_bad_events_are_refused_by_the_code_and_every_schema(where: str, text: str) -> None:
    for item in _items(text):
        raw = orjson.dumps(item)
        kind = item.get("type") if item.get("type") in INPUT_KINDS else None
        assert kind is None or not code_accepts(str(kind), raw), (where, item)
        assert submitted_events(item, STORE, wall_ms())[1], (where, item)
        assert not any(schema_accepts(k, raw) for k in INPUT_KINDS), (where, item)


@pytest.mark.parametrize(("where", "text"), samples("segment_change"))
def test_sample_changes_are_valid(where: str, text: str) -> None:
    assert schema_accepts("segment_change", text), where


@pytest.mark.parametrize(("where", "text"), samples("dlq_record"))
def test_sample_dead_letters_are_valid_and_their_payload_is_refused(where: str, text: str) -> None:
    assert schema_accepts("dlq_record", text), where
    record = orjson.loads(text)
    assert record["payload_encoding"] == "utf-8"
    with pytest.raises(Rejected):
        PARSERS[record["topic"]](record["payload"].encode(), STORE, wall_ms())


# ---- schema and parser refuse the same events ----------------------------------------------

BASE: dict[str, dict[str, Any]] = {
    "order_completed": {
        "event_id": "evt-1",
        "type": "order_completed",
        "order_id": "1001",
        "customer_id": "c-1",
        "amount": "59.90",
        "currency": "TWD",
        "occurred_at": "2026-11-20T10:15:00+08:00",
        "channel": "online",
    },
    "order_refunded": {
        "event_id": "evt-2",
        "type": "order_refunded",
        "order_id": "1001",
        "customer_id": "c-1",
        "amount": "10.00",
        "currency": "TWD",
        "occurred_at": "2026-11-21T10:15:00+08:00",
        "full": True,
    },
    "interaction": {
        "event_id": "evt-3",
        "type": "interaction",
        "customer_id": "c-1",
        "kind": "comment",
        "channel": "facebook",
        "occurred_at": "2026-11-20T10:15:00Z",
    },
    "erasure": {"type": "erasure", "customer_id": "c-1", "requested_at": "2026-11-22T00:00:00Z"},
}
NEEDED = ("event_id", "type", "order_id", "customer_id", "amount", "currency", "occurred_at")
REQUIRED = {
    "order_completed": NEEDED,
    "order_refunded": NEEDED,
    "interaction": ("event_id", "type", "customer_id", "kind", "occurred_at"),
    "erasure": ("customer_id",),
}

BAD_ID = ["", 42, True, ["c-1"], {"id": "c-1"}]
BAD_TIME = [
    "2026-11-20T10:15:00",  # no offset
    "2026-11-20",
    "yesterday",
    "",
    "2026-02-30T10:00:00Z",  # no such day
    "2026-11-20T24:00:00Z",
    "2026-11-20T10:15:60Z",
    "2026-11-20T10:15:00+24:00",
    "1969-12-31T23:59:59Z",
    True,
    Decimal("1795140900000.5"),
    Decimal("1795140900000.0"),  # JSON Schema's data model calls it an integer; see events.md
    -1,
    None,
]
BAD_AMOUNT = [
    "-1.00",
    "1.005",
    "abc",
    "1e3",
    "",
    ".5",
    "5.",
    "1,000.00",
    "\u0663",  # an Arabic-Indic digit
    "10000000.01",
    "12345678",
    True,
    Decimal("1.005"),
    Decimal("-0.01"),
    Decimal("10000000.01"),
    Decimal("1E-5"),
    -3,
    [],
    {"value": "1.00"},
]
BAD_ORDER_CHANNEL = ["shopify", "", "ONLINE", 3, True]
VARIANTS: dict[str, dict[str, list[Any]]] = {
    "order_completed": {
        "type": ["zzz", "interaction", "order_refunded ", 1],
        "event_id": [*BAD_ID, "e" * 257],
        "customer_id": [*BAD_ID, "c" * 129],
        "order_id": ["", True, "o" * 257, Decimal("1.5"), Decimal("7.0")],
        "amount": BAD_AMOUNT,
        "currency": ["USD", "twd", "", 901, None],
        "occurred_at": BAD_TIME,
        "channel": BAD_ORDER_CHANNEL,
        "full": [True, "no", None, 0],
    },
    "order_refunded": {
        "type": ["zzz", "refund", 2],
        "event_id": [*BAD_ID, "e" * 257],
        "customer_id": [*BAD_ID, "c" * 129],
        "order_id": ["", False, "o" * 257],
        "amount": [*BAD_AMOUNT, "0", "0.00", "000.0", 0, Decimal("0.0")],
        "currency": ["USD", None],
        "occurred_at": BAD_TIME,
        "channel": BAD_ORDER_CHANNEL,
        "full": ["yes", None, 1],
    },
    "interaction": {
        "type": ["zzz", "order_completed", 1],
        "event_id": [*BAD_ID, "e" * 257],
        "customer_id": [*BAD_ID, "c" * 129],
        "kind": ["zzz", "Comment", "purchase", "", 1, None],
        "channel": ["x" * 65, 5, True, ["facebook"]],
        "occurred_at": BAD_TIME,
    },
    "erasure": {
        "type": ["zzz", "order_completed"],
        "customer_id": [*BAD_ID, "c" * 129, None],
        "requested_at": BAD_TIME,
    },
}


def encode(doc: dict[str, Any]) -> str:
    """JSON text with decimals written as the numbers they are (json.dumps cannot)."""

    def token(value: Any) -> str:
        return str(value) if isinstance(value, Decimal) else json.dumps(value)

    return "{" + ", ".join(f"{json.dumps(k)}: {token(v)}" for k, v in doc.items()) + "}"


def variant(kind: str, field: str, value: Any) -> str:
    doc = dict(BASE[kind])
    if value is DROP:
        doc.pop(field, None)
    else:
        doc[field] = value
    return encode(doc)


def broken(kind: str) -> list[tuple[str, str]]:
    out = [(f"without {f}", variant(kind, f, DROP)) for f in REQUIRED[kind]]
    out += [(f"{f} null", variant(kind, f, None)) for f in REQUIRED[kind]]
    out += [(f"{f}={v!r}", variant(kind, f, v)) for f, vs in VARIANTS[kind].items() for v in vs]
    return out


@pytest.mark.parametrize("kind", INPUT_KINDS)
def test_the_base_events_are_valid(kind: str) -> None:
    text = encode(BASE[kind])
    assert code_accepts(kind, text)
    assert schema_accepts(kind, text)


@pytest.mark.parametrize(
    ("kind", "what", "text"), [(k, w, t) for k in INPUT_KINDS for w, t in broken(k)]
)
def test_schema_and_parser_both_refuse(kind: str, what: str, text: str) -> None:
    assert not code_accepts(kind, text), what
    assert not schema_accepts(kind, text), what


def test_the_format_checker_knows_rfc3339() -> None:
    """Without it ``date-time`` would be an annotation and 30 February would pass."""
    assert "date-time" in Draft202012Validator.FORMAT_CHECKER.checkers


# Valid values per field beside the base event's (DROP: the field may be left out); the
# broken ones are VARIANTS. A drawn event changes a few fields to either.
GOOD_TIME = [
    "2026-11-20T10:15:00+08:00",
    "2026-11-20T02:15:00.250Z",
    "2024-02-29T23:59:59.999999-05:30",
    "2001-01-01T00:00:00-00:00",
    0,
    1795140900000,
]
GOOD_AMOUNT = [
    "59.90",
    "007.5",
    "10000000",
    "10000000.00",
    12,
    Decimal("59.9"),
    Decimal("1E+2"),
]
GOOD_CUSTOMER = ["c" * 128, "客戶 {42}:🙂", " "]
GOOD_ORDER: dict[str, list[Any]] = {
    "amount": GOOD_AMOUNT,
    "occurred_at": GOOD_TIME,
    "channel": ["pos", "marketplace", None, DROP],
    "order_id": [100234, -5, "o" * 256],
    "customer_id": GOOD_CUSTOMER,
    "event_id": ["e" * 256, "shopify:tw-main:5123:paid"],
}
GOOD: dict[str, dict[str, list[Any]]] = {
    "order_completed": {
        **GOOD_ORDER,
        "amount": [*GOOD_AMOUNT, "0", "0.00", 0, Decimal("-0.0")],
        "full": [False, DROP],
    },
    "order_refunded": {**GOOD_ORDER, "full": [False, DROP]},
    "interaction": {
        "kind": list(INTERACTION_KINDS),
        "channel": ["", "x" * 64, None, "LINE 官方帳號", DROP],
        "occurred_at": GOOD_TIME,
        "customer_id": GOOD_CUSTOMER,
        "event_id": ["e" * 256],
    },
    "erasure": {"requested_at": [*GOOD_TIME, DROP], "customer_id": GOOD_CUSTOMER},
}


@pytest.mark.parametrize(
    ("kind", "what", "text"),
    [
        (k, f"{f}={v!r}", variant(k, f, v))
        for k in INPUT_KINDS
        for f, vs in GOOD[k].items()
        for v in vs
    ],
)
def test_schema_and_parser_both_accept(kind: str, what: str, text: str) -> None:
    assert code_accepts(kind, text), what
    assert schema_accepts(kind, text), what


@st.composite
def drawn_events(draw: st.DrawFn) -> tuple[str, str]:
    """A valid event with up to three fields changed, each to a valid or a broken value,
    so that some come out valid and most do not."""
    kind = draw(st.sampled_from(INPUT_KINDS))
    doc = dict(BASE[kind])
    fields = sorted({*GOOD[kind], *VARIANTS[kind]})
    for field in draw(st.sets(st.sampled_from(fields), max_size=3)):
        good = GOOD[kind].get(field, [])
        bad = [*VARIANTS[kind].get(field, []), *([DROP] if field in REQUIRED[kind] else [])]
        value = draw(st.sampled_from(good if good and (not bad or draw(st.booleans())) else bad))
        if value is DROP:
            doc.pop(field, None)
        else:
            doc[field] = value
    return kind, encode(doc)


@FAST
@given(drawn_events())
def test_schema_and_parser_agree_on_drawn_events(event: tuple[str, str]) -> None:
    kind, text = event
    assert schema_accepts(kind, text) == code_accepts(kind, text), text


# amounts of 0 to 4 decimal places from -1 to 20,000,000: few enough digits that a JSON
# number's shortest float text is the one written
# amounts from -1 to 100,000,000 with 0 to 4 decimal places, dense around 0 and max_amount:
# few enough digits that a JSON number's shortest float text is the one written
amounts = st.builds(
    lambda sign, whole, frac: Decimal(f"{sign}{whole}{'.' if frac else ''}{frac}"),
    st.sampled_from(["", "", "", "-"]),
    st.one_of(
        st.integers(0, 3),
        st.integers(9_999_990, 10_000_010),
        st.integers(0, 100_000_000),
    ),
    st.text("0123456789", max_size=4) | st.sampled_from(["", "0", "00", "01", "000"]),
)


@FAST
@given(st.sampled_from(("order_completed", "order_refunded")), amounts, st.booleans())
def test_schema_and_parser_agree_on_amounts(kind: str, amount: Decimal, as_text: bool) -> None:
    if as_text and amount == 0 and amount.is_signed():
        return  # "-0.00": the parser reads 0, the schema wants no sign (events.md says so)
    text = variant(kind, "amount", str(amount) if as_text else amount)
    assert schema_accepts(kind, text) == code_accepts(kind, text), text


# ---- what the scorer writes -----------------------------------------------------------------

SETTINGS = Settings()
SCHEMES = {name: load_scheme(name, 5) for name in ("rfm-classic", "rfim", "simple")}
NOW = 1795219200000  # 2026-11-21T00:00:00Z


def _order(i: int, cid: str, order_id: str, amount: int, refund: bool, full: bool) -> bytes:
    doc: dict[str, Any] = {
        "event_id": f"e{i}",
        "type": "order_refunded" if refund else "order_completed",
        "order_id": order_id,
        "customer_id": cid,
        "amount": str(amount),
        "currency": "TWD",
        "occurred_at": NOW - 86_400_000 * (40 - i),
    }
    if full:
        doc["full"] = True
    return orjson.dumps(doc)


@st.composite
def histories(draw: st.DrawFn) -> list[Record]:
    """One customer's input records: orders, refunds of them (or of an unknown order),
    interactions, sometimes an erasure."""
    cid = draw(st.sampled_from(["c-1", "客戶:{7}", "x" * 128]))
    records = []
    orders: list[str] = []
    kinds = ["order"] * 4 + ["refund"] * 2 + ["interaction"] * 3 + ["erasure"]
    for i in range(draw(st.integers(1, 12))):
        what = draw(st.sampled_from(kinds))
        if what == "interaction":
            value = orjson.dumps(
                {
                    "event_id": f"i{i}",
                    "type": "interaction",
                    "customer_id": cid,
                    "kind": draw(st.sampled_from(INTERACTION_KINDS)),
                    "occurred_at": NOW - 3_600_000 * (40 - i),
                }
            )
            topic = TOPICS.interactions
        elif what == "erasure":
            value, topic = orjson.dumps({"customer_id": cid}), TOPICS.erasure
        else:
            refund = what == "refund"
            if refund:
                order_id = draw(st.sampled_from([*orders, "unknown"]))
            else:
                order_id = f"o{i}"
                orders.append(order_id)
            amount = draw(st.integers(1, 50_000))
            value = _order(i, cid, order_id, amount, refund, refund and draw(st.booleans()))
            topic = TOPICS.orders
        records.append(Record(topic, 0, i, cid.encode(), value))
    return records


def edges(lo: int, hi: int) -> st.SearchStrategy[tuple[int, ...]]:
    return st.lists(st.integers(lo, hi), max_size=4, unique=True).map(lambda e: tuple(sorted(e)))


@settings(max_examples=100, deadline=None)
@given(
    histories(),
    edges(NOW - 45 * 86_400_000, NOW),
    edges(0, 6),
    edges(0, 6),
    st.sampled_from(sorted(SCHEMES)),
)
def test_the_change_events_the_core_writes_are_valid(
    records: list[Record],
    r_edges: tuple[int, ...],
    f_edges: tuple[int, ...],
    i_edges: tuple[int, ...],
    scheme: str,
) -> None:
    """Changes from orders, refunds, interactions and erasures, one batch per record, then
    a threshold refresh to drawn edges; and the dead letters on the way."""
    ctx = ScoringContext(SETTINGS, Thresholds(version=7), SCHEMES[scheme], NOW, NOW)
    loaded = Loaded(Customer(records[0].key.decode() if records[0].key else ""), {})
    bodies: list[bytes] = []
    for record in records:
        event = PARSERS[record.topic](record.value, STORE, NOW)
        out = fold(loaded, [(record, event)], ctx)
        assert all(schema_accepts("dlq_record", dead.encode()) for dead in out.dead)
        if out.commit is not None:
            bodies += out.commit.bodies
            loaded = Loaded(out.commit.customer, {})
    moved = Thresholds(
        version=8, edges={"r": r_edges, "f": f_edges, "m": (0, 1, 2, 3), "i": i_edges}
    )
    refresh = rescored(
        ScoringContext(SETTINGS, moved, SCHEMES[scheme], NOW, NOW), "threshold_refresh", loaded
    )
    if refresh.commit is not None:
        bodies += refresh.commit.bodies
    for body in bodies:
        errors = list(validator("segment_change").iter_errors(decimal_json(body)))
        assert errors == [], body


@pytest.mark.parametrize("value", [b'{"type": "order_completed"}', b"\xff\xfe not text", b""])
def test_the_dead_letters_the_core_writes_are_valid(value: bytes) -> None:
    record = Record(TOPICS.orders, 2, 31, b"c-1", value)
    assert schema_accepts("dlq_record", DeadLetter(record, "missing field event_id").encode())
