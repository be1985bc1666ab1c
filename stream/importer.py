"""`rfm import`: publish historical events from JSONL or CSV to the input topics.

Every line is first checked with the worker's own parser (``stream.core.events``, with the
store settings), so what the worker would dead-letter is reported here, by line number,
before anything is produced. Lines that pass are published byte-for-byte (JSONL) or as the
SPEC event their CSV row maps to through column options; a storefront's own order export is
mapped by its preset (stream.exports). Keys are the customer id the parser read, so a
customer's history stays in order.
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from stream.config import StoreSettings
from stream.core.events import InteractionEvent, OrderEvent, Rejected
from stream.exports import Outcome, Published, Row
from stream.kafka import KafkaPublisher

ORDER_COLUMNS = (
    "event_id",
    "type",
    "order_id",
    "customer_id",
    "amount",
    "currency",
    "occurred_at",
    "channel",
    "full",
)
INTERACTION_COLUMNS = ("event_id", "type", "customer_id", "kind", "channel", "occurred_at")
SHOWN_REJECTS = 100  # reasons kept for the report; the rest are only counted

# (line number, event bytes, bytes of the file it stands for); empty bytes: a blank line
Line = tuple[int, bytes, int]
Parse = Callable[[bytes, StoreSettings, int], OrderEvent | InteractionEvent]


@dataclass(frozen=True)
class CsvMapping:
    """Which CSV column holds each event field, plus constants for absent columns."""

    columns: Mapping[str, str] = field(default_factory=dict)
    defaults: Mapping[str, str] = field(default_factory=dict)


@dataclass
class Check:
    """What the parser said of a file's lines: each event's key (``None`` where the line was
    rejected), in file order, and the rejects: the first ``SHOWN_REJECTS`` with their
    reasons, all of them counted. Keys only, not the lines: a large file is read again to
    publish, and a customer's key is one object however many lines it has."""

    keys: list[bytes | None] = field(default_factory=list)
    rejected: list[tuple[int, str]] = field(default_factory=list)
    rejects: int = 0

    @property
    def events(self) -> int:
        return len(self.keys) - self.rejects


def check_lines(
    lines: Iterable[Line],
    parse: Parse,
    store: StoreSettings,
    now_ms: int,
    progress: Callable[[int], None] = lambda n: None,
    chunk: int = 5000,
) -> Check:
    """Parse every line once, as the worker would at ``now_ms`` (its wall clock)."""
    out = Check()
    interned: dict[str, bytes] = {}
    consumed = 0
    for n, (line, value, size) in enumerate(lines, 1):
        consumed += size
        if n % chunk == 0:
            progress(consumed)
            consumed = 0
        if not value:
            continue
        try:
            cid = parse(value, store, now_ms).customer_id
        except Rejected as exc:
            out.keys.append(None)
            out.rejects += 1
            if len(out.rejected) < SHOWN_REJECTS:
                out.rejected.append((line, str(exc)))
            continue
        key = interned.get(cid)
        if key is None:
            key = interned[cid] = cid.encode("utf-8")
        out.keys.append(key)
    progress(consumed)
    return out


def checked_records(
    lines: Iterable[Line], check: Check
) -> Iterator[tuple[bytes | None, bytes, int]]:
    """The same lines read again as (key, value, size), a rejected one as a blank (its
    bytes still count for the progress bar)."""
    keys = iter(check.keys)
    for _, value, size in lines:
        key = next(keys) if value else None
        yield key, value if key is not None else b"", size


def jsonl_lines(path: Path) -> Iterator[Line]:
    """Each line of a JSONL file, stripped; blank ones stay (they count for progress)."""
    with path.open("rb") as fh:
        for n, line in enumerate(fh, 1):
            yield n, line.strip(), len(line)


def csv_lines(path: Path, kind: str, mapping: CsvMapping) -> Iterator[Line]:
    """Each CSV row as the SPEC event its columns map to, numbered by the row's first line."""
    fields = ORDER_COLUMNS if kind == "orders" else INTERACTION_COLUMNS
    with path.open("r", encoding="utf-8", newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader, [])
        line = reader.line_num
        for cells in reader:
            start, line = line + 1, reader.line_num
            if not cells:
                continue  # a blank line
            row = dict(zip(header, cells, strict=False))
            doc: dict[str, object] = {}
            for name in fields:
                column = mapping.columns.get(name, name)
                value = row.get(column)
                if value in (None, ""):
                    value = mapping.defaults.get(name)
                if value not in (None, ""):
                    doc[name] = value
            if "full" in doc:
                doc["full"] = str(doc["full"]).lower() in ("1", "true", "yes")
            if str(doc.get("occurred_at", "")).isdigit():
                doc["occurred_at"] = int(str(doc["occurred_at"]))
            doc.setdefault("type", "order_completed" if kind == "orders" else "interaction")
            if "event_id" not in doc:
                basis = (
                    f"{doc.get('type')}:{doc.get('order_id')}"
                    if kind == "orders"
                    else orjson.dumps(doc, option=orjson.OPT_SORT_KEYS).decode()
                )
                doc["event_id"] = (
                    "imp-" + hashlib.blake2b(basis.encode(), digest_size=12).hexdigest()
                )
            event = orjson.dumps(doc)
            yield start, event, len(event)


def _named(header: list[str], renamed: Mapping[str, str]) -> list[str]:
    as_named = {column: name for name, column in renamed.items()}
    return [as_named.get(column.strip(), column.strip()) for column in header]


def export_header(path: Path, renamed: Mapping[str, str] | None = None) -> list[str]:
    """An export's column names, each file column ``renamed`` maps to under its preset name
    (``{"Total": "訂單合計"}``: the file's 訂單合計 is the preset's Total). A leading BOM goes."""
    with path.open("r", encoding="utf-8-sig", newline="") as fh:
        return _named(next(csv.reader(fh), []), renamed or {})


def export_rows(path: Path, renamed: Mapping[str, str] | None = None) -> Iterator[Row]:
    """(line number, cells by column) per row after the header; blank lines are skipped, and a
    row that spans lines (a quoted note) is numbered by its first."""
    with path.open("r", encoding="utf-8-sig", newline="") as fh:
        reader = csv.reader(fh)
        header = _named(next(reader, []), renamed or {})
        line = reader.line_num
        for cells in reader:
            start, line = line + 1, reader.line_num
            if any(cells):
                yield start, dict(zip(header, cells, strict=False))


def outcome_records(found: Iterable[Outcome]) -> Iterator[tuple[bytes | None, bytes, int]]:
    """The events of the published outcomes as (key, value, 1): progress counts events."""
    for outcome in found:
        if isinstance(outcome, Published):
            for event in outcome.events:
                yield event.customer_id.encode("utf-8"), orjson.dumps(event.doc), 1


async def publish_records(
    publisher: KafkaPublisher,
    topic: str,
    records: Iterator[tuple[bytes | None, bytes, int]],
    progress: Callable[[int], None] = lambda n: None,
    chunk: int = 5000,
) -> int:
    """Send everything, acknowledged (the producer's acks=all); returns how many were published.

    Records are appended to one aiokafka batch per partition (``create_batch`` /
    ``send_batch``) instead of one ``send`` and one future each, which was most of the
    import's time. Order per key holds: a key always maps to the same partition, its batches
    are submitted in file order, and aiokafka sends one batch per partition at a time (a
    retried batch goes before the next). ``send_batch`` waits while a partition already has
    a batch queued, so memory stays bounded; a batch the broker rejects raises here.
    Progress is the bytes read, reported every ``chunk`` records and at the end.
    """
    sender = publisher.sender(remember=1_000_000)
    sent = 0
    consumed = 0
    for key, value, size in records:
        consumed += size
        if not value:
            continue
        await sender.add(topic, key, value)
        sent += 1
        if sent % chunk == 0:
            progress(consumed)
            consumed = 0
            sender.raise_rejected()
    await sender.flush()
    progress(consumed)
    return sent
