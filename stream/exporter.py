"""`rfm export`: every customer as one line shaped like the change event (SPEC section 8)."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator, Sequence

import orjson

from stream.clv.prediction import Model, prediction_docs
from stream.config import Settings
from stream.core.customer import Customer, metrics
from stream.core.rescore import metrics_dict
from stream.shell.processor import wall_ms
from stream.store.redis_store import RedisStore

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


async def export_pages(
    store: RedisStore, settings: Settings, segment: str | None = None
) -> AsyncIterator[list[dict[str, object]]]:
    """Every customer's line, a page at a time (one pipelined read each, constant memory);
    the model is read once, so every line carries the same version."""
    now = wall_ms() if settings.scoring.clock == "wall" else await store.event_clock()
    model = await store.model()
    async for customers in store.customer_pages():
        rows = export_page(customers, settings, now, model, segment)
        if rows:
            yield rows


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
