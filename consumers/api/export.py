"""``/api/export``: every customer (of a segment) as CSV or JSONL, streamed in constant memory.

Lines are exactly ``rfm export``'s (``stream.exporter``): the same fields, the same JSONL
encoding and the same CSV cells, spreadsheet formulas in untrusted ids neutralised. One
chunk per SCAN batch keeps both the memory and the number of writes bounded.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from consumers.api.queries import customer_batches, scoring_now
from stream.config import Settings
from stream.exporter import csv_header, csv_line, export_row, jsonl_line
from stream.store.redis_store import RedisStore

FORMATS = {"csv": "text/csv; charset=utf-8", "jsonl": "application/x-ndjson"}


async def export_chunks(
    store: RedisStore, settings: Settings, segment: str | None, fmt: str
) -> AsyncIterator[bytes]:
    now = await scoring_now(store, settings)
    model = await store.model()
    if fmt == "csv":
        yield csv_header().encode("utf-8")
    async for batch in customer_batches(store):
        lines = [
            export_row(c, settings, now, model)
            for c in batch
            if c.segment is not None and (segment is None or c.segment == segment)
        ]
        if not lines:
            continue
        if fmt == "csv":
            yield "".join(csv_line(r) for r in lines).encode("utf-8")
        else:
            yield b"".join(jsonl_line(r) for r in lines)
