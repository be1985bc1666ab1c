"""``/api/export``: every customer (of a segment) as CSV or JSONL, streamed in constant memory.

Lines are exactly ``rfm export``'s (``stream.exporter``): the same fields, the same JSONL
encoding and the same CSV cells, spreadsheet formulas in untrusted ids neutralised. One
chunk per page of customers keeps both the memory and the number of writes bounded, and
each page is decoded and encoded in a worker thread, off the event loop.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from stream.config import Settings
from stream.exporter import csv_header, encoded_pages
from stream.store.redis_store import RedisStore

FORMATS = {"csv": "text/csv; charset=utf-8", "jsonl": "application/x-ndjson"}


async def export_chunks(
    store: RedisStore, settings: Settings, segment: str | None, fmt: str
) -> AsyncIterator[bytes]:
    if fmt == "csv":
        yield csv_header().encode("utf-8")
    async for _, data in encoded_pages(store, settings, segment, fmt):
        yield data
