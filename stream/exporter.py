"""`rfm export` and ``/api/export``: every customer as one line shaped like the change event
(SPEC section 8).

Reading a page is I/O; decoding its hashes, predicting and encoding its lines is CPU work of
tens of milliseconds a page, so that part runs in a worker thread: the API's event loop stays
free to answer its other requests (the health probe, the dashboard) while exports run.
"""

from __future__ import annotations

import asyncio
import csv
import io
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import orjson

from stream.clv.prediction import Model, prediction_docs
from stream.config import Settings
from stream.core.customer import Customer, metrics
from stream.core.rescore import metrics_dict
from stream.shell.processor import wall_ms
from stream.store.codec import decode_customer
from stream.store.redis_store import RedisStore

PAGE = 200  # customers per read and chunk: the loop's share of a page (its read) stays short
# One thread for every export of the process: more would not run faster (the work holds the
# GIL) and would take the GIL from the event loop more often.
_ENCODER = ThreadPoolExecutor(1, thread_name_prefix="rfm-export")

CSV_FIELDS = (
    "customer_id",
    "segment",
    "seq",
    "r",
    "f",
    "m",
    "i",
    "orders",
    "monetary",
    "last_order_at",
    "interactions",
    "p_alive",
    "expected_purchases_90d",
    "clv",
    "churn_risk",
)
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def export_page(
    customers: Sequence[Customer],
    settings: Settings,
    now: int,
    model: Model | None,
    segment: str | None = None,
) -> list[dict[str, object]]:
    """A page of customers (those with a segment, of ``segment`` if given), each shaped like
    the change event (SPEC section 8) plus its CLV prediction (``null`` until a model has
    been fitted); the page's predictions come from one vectorised evaluation."""
    decimals = settings.store.currency_decimals
    kept = [c for c in customers if c.segment is not None and segment in (None, c.segment)]
    predictions = prediction_docs(kept, model, settings.prediction, now, decimals)
    return [
        {
            "customer_id": c.customer_id,
            "segment": c.segment,
            "seq": c.seq,
            "scores": c.scores.as_dict(),
            "metrics": metrics_dict(metrics(c, settings.window_ms, now), decimals),
            "prediction": prediction,
        }
        for c, prediction in zip(kept, predictions, strict=True)
    ]


def encoded_page(
    ids: Sequence[str],
    hashes: Sequence[dict[Any, Any]],
    settings: Settings,
    now: int,
    model: Model | None,
    segment: str | None,
    fmt: str,
) -> tuple[int, bytes]:
    """A page of stored customer hashes as (lines, bytes) in ``fmt`` (jsonl or csv): the CPU
    part of an export, free of I/O so it can run off the event loop."""
    customers = [decode_customer(cid, f) for cid, f in zip(ids, hashes, strict=True) if f]
    rows = export_page(customers, settings, now, model, segment)
    if fmt == "csv":
        return len(rows), "".join(csv_line(r) for r in rows).encode("utf-8")
    return len(rows), b"".join(jsonl_line(r) for r in rows)


async def encoded_pages(
    store: RedisStore, settings: Settings, segment: str | None, fmt: str
) -> AsyncIterator[tuple[int, bytes]]:
    """Every customer's line in ``fmt``, a page at a time as (lines, bytes): one pipelined
    read per page on the loop, the rest in a worker thread; memory stays flat. The model is
    read once, so every line carries the same version."""
    now = wall_ms() if settings.scoring.clock == "wall" else await store.event_clock()
    model = await store.model()
    async for ids, hashes in _stored_pages(store):
        lines, data = await asyncio.get_running_loop().run_in_executor(
            _ENCODER, encoded_page, ids, hashes, settings, now, model, segment, fmt
        )
        if lines:
            yield lines, data


async def _stored_pages(store: RedisStore) -> AsyncIterator[tuple[list[str], list[Any]]]:
    """Every stored customer's raw hash, a page at a time (SCAN + one pipelined HGETALL per
    page); SCAN returns every customer present throughout at least once."""
    ids: list[str] = []
    async for cid in store.scan_customer_ids():
        ids.append(cid)
        if len(ids) >= PAGE:
            yield ids, await _hashes(store, ids)
            ids = []
    if ids:
        yield ids, await _hashes(store, ids)


async def _hashes(store: RedisStore, ids: Sequence[str]) -> list[Any]:
    pipe = store.redis.pipeline(transaction=False)
    for cid in ids:
        pipe.hgetall(store.keys.customer(cid))
    return list(await pipe.execute())


def jsonl_line(row: dict[str, object]) -> bytes:
    return orjson.dumps(row) + b"\n"


def _cell(value: object) -> str:
    """A value as JSONL writes it (``true``/``false``, money as its decimal string), and
    spreadsheet formulas neutralised: customer ids are untrusted text."""
    if isinstance(value, bool):
        return "true" if value else "false"
    text = "" if value is None else str(value)
    if text.startswith(_FORMULA_START):
        return "'" + text
    return text


def csv_header() -> str:
    buf = io.StringIO()
    csv.writer(buf).writerow(CSV_FIELDS)
    return buf.getvalue()


def csv_line(row: dict[str, object]) -> str:
    scores = row["scores"]
    mets = row["metrics"]
    pred = row.get("prediction")
    assert isinstance(scores, dict) and isinstance(mets, dict)
    flat = [
        row["customer_id"],
        row["segment"],
        row["seq"],
        scores["r"],
        scores["f"],
        scores["m"],
        scores["i"],
        mets["orders"],
        mets["monetary"],
        mets["last_order_at"],
        mets["interactions"],
        *(
            (None, None, None, None)
            if not isinstance(pred, dict)
            else (pred["p_alive"], pred["expected_purchases_90d"], pred["clv"], pred["churn_risk"])
        ),
    ]
    buf = io.StringIO()
    csv.writer(buf).writerow([_cell(v) for v in flat])
    return buf.getvalue()
