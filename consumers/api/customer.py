"""The customer lookup document: where one customer stands and how they got there. Pure."""

from __future__ import annotations

from typing import Any

from consumers.api.queries import CustomerRecord
from consumers.api.report import names
from stream.core.changes import iso_ms
from stream.core.customer import metrics
from stream.core.rescore import metrics_dict
from stream.core.scheme import Scheme

# The scorer rejects longer or empty ids, so such a lookup can never match (SPEC section 2).
MAX_ID_CHARS = 128
RECENT = 10  # entries of ``recent_changes``, as many as the hash kept before the history list


def plausible_id(customer_id: str) -> bool:
    return 0 < len(customer_id) <= MAX_ID_CHARS


def customer_doc(
    record: CustomerRecord, scheme: Scheme, window_ms: int, now: int, decimals: int
) -> dict[str, Any]:
    """Shaped like the change event (SPEC section 6) plus its segment history, newest
    first: ``history`` every change kept, ``recent_changes`` the first ten of them (the
    field clients read before the history grew)."""
    c = record.customer
    m = metrics(c, window_ms, now)
    return {
        "customer_id": c.customer_id,
        "segment": c.segment,
        "segment_name": names(scheme, c.segment) if c.segment else None,
        "seq": c.seq,
        "scores": c.scores.as_dict(),
        "metrics": metrics_dict(m, decimals),
        "first_order_at": iso_ms(c.first_order_at),
        "last_interaction_at": iso_ms(c.last_interaction_at),
        "channels": sorted(c.channels),
        "recent_changes": record.history[:RECENT],
        "history": record.history,
    }
