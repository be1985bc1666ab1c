"""`rfm import`: publish historical events from JSONL or CSV to the input topics.

JSONL lines are published byte-for-byte (the worker validates and dead-letters, so there
is one place that decides what is bad input); CSV rows are mapped to SPEC events through
column options, or, for a storefront's own order export, by its preset (stream.exports).
Keys are the customer id, so a customer's history stays in order.
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import orjson

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


@dataclass(frozen=True)
class CsvMapping:
    """Which CSV column holds each event field, plus constants for absent columns."""

    columns: Mapping[str, str] = field(default_factory=dict)
    defaults: Mapping[str, str] = field(default_factory=dict)


def _key_of(line: bytes) -> bytes | None:
    try:
        doc = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    cid = doc.get("customer_id") if isinstance(doc, dict) else None
    return cid.encode("utf-8") if isinstance(cid, str) else None


def jsonl_records(path: Path) -> Iterator[tuple[bytes | None, bytes, int]]:
    """(key, value, bytes consumed) per non-empty line."""
    with path.open("rb") as fh:
        for line in fh:
            size = len(line)
            line = line.strip()
            if line:
                yield _key_of(line), line, size
            # blank lines still advance the progress bar
            elif size:
                yield None, b"", size


def csv_records(
    path: Path, kind: str, mapping: CsvMapping
) -> Iterator[tuple[bytes | None, bytes, int]]:
    fields = ORDER_COLUMNS if kind == "orders" else INTERACTION_COLUMNS
    with path.open("r", encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        for row in reader:
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
            cid = doc.get("customer_id")
            key = cid.encode("utf-8") if isinstance(cid, str) else None
            value = orjson.dumps(doc)
            yield key, value, len(value)


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
