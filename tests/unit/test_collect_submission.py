"""``POST /v1/events`` bodies: each item's type picks its parser, and a refused item's reason
names the field and the values it allows, as the worker's dead letters do."""

from __future__ import annotations

from typing import Any

import pytest

from stream.collect.submission import submitted_events
from stream.config import StoreSettings

NOW = 1_795_000_000_000  # 2026-11-19, the wall clock handed to the parsers
TYPES = "order_completed, order_refunded, interaction, erasure"
ORDER = {
    "event_id": "e-1",
    "type": "order_completed",
    "order_id": "o-1",
    "customer_id": "c-1",
    "amount": "10.00",
    "currency": "TWD",
    "occurred_at": NOW - 60_000,
}


@pytest.mark.parametrize(
    ("item", "expected"),
    [
        ({k: v for k, v in ORDER.items() if k != "type"}, f"missing field type (allowed: {TYPES})"),
        ({**ORDER, "type": "order_shipped"}, f"unknown type 'order_shipped' (allowed: {TYPES})"),
        ({**ORDER, "type": 7}, f"type must be a string, got number (allowed: {TYPES})"),
        ([ORDER], "expected a JSON object, got array"),
        (
            {k: v for k, v in ORDER.items() if k not in ("event_id", "occurred_at")},
            "missing fields event_id, occurred_at",
        ),
        (
            {**ORDER, "channel": "shopify"},
            "unknown channel 'shopify' (allowed: online, pos, app, social, marketplace, other)",
        ),
    ],
)
def test_a_refused_item_says_what_is_allowed(item: Any, expected: str) -> None:
    events, problems = submitted_events([ORDER, item], StoreSettings(), NOW)
    assert [(p.index, p.reason) for p in problems] == [(1, expected)]
    assert len(events) == 1
