"""``POST /v1/events``: a storefront's own SPEC section 2 events, each checked by the
worker's parsers (``stream.core.events``) before any of the request is written, so what the
worker would send to the dead-letter topic is refused here, with its reason, instead.

Each item names its topic by ``type``: ``order_completed`` and ``order_refunded`` go to the
orders topic, ``interaction`` to interactions, and ``erasure`` (``{"type": "erasure",
"customer_id", "requested_at"?}``) to the erasure topic. An item without ``type`` that
carries ``requested_at`` and no ``event_id`` is the erasure topic's own document and is taken
as an erasure too. Orders and interactions are written as sent; an erasure is written as
``{"customer_id", "requested_at"}``, stamped with the time it arrived when it has none.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from stream.collect.outgoing import Outgoing
from stream.config import StoreSettings
from stream.core.events import (
    Rejected,
    allowed_values,
    json_type,
    one_of,
    parse_erasure,
    parse_interaction,
    parse_order,
)

Kind = Literal["orders", "interactions", "erasure"]
TOPIC_OF: dict[str, Kind] = {
    "order_completed": "orders",
    "order_refunded": "orders",
    "interaction": "interactions",
    "erasure": "erasure",
}


@dataclass(frozen=True)
class Problem:
    """Why the item at ``index`` of the request was refused (the worker's own reason)."""

    index: int
    reason: str


def _type_of(item: dict[str, Any]) -> str:
    kind = item.get("type")
    if kind is None and "requested_at" in item and "event_id" not in item:
        return "erasure"
    if kind is None:
        raise Rejected(f"missing field type {allowed_values(tuple(TOPIC_OF))}")
    return one_of(kind, "type", tuple(TOPIC_OF))


def _event(item: Any, store: StoreSettings, now_ms: int) -> Outgoing:
    if not isinstance(item, dict):
        raise Rejected(f"expected a JSON object, got {json_type(item)}")
    kind = _type_of(item)
    raw = orjson.dumps(item)
    if kind == "erasure":
        erasure = parse_erasure(raw, store, now_ms)
        doc = {"customer_id": erasure.customer_id, "requested_at": item.get("requested_at")}
        if doc["requested_at"] is None:
            doc["requested_at"] = now_ms
        return Outgoing("erasure", erasure.customer_id, doc)
    parse: Callable[[bytes, StoreSettings, int], Any] = (
        parse_interaction if kind == "interaction" else parse_order
    )
    return Outgoing(TOPIC_OF[kind], parse(raw, store, now_ms).customer_id, item)


def submitted_events(
    doc: Any, store: StoreSettings, now_ms: int
) -> tuple[list[Outgoing], list[Problem]]:
    """The events of one request body (an event or a list of them) and the problems of its
    items; the events are to be written only when there is no problem."""
    items = doc if isinstance(doc, list) else [doc]
    events: list[Outgoing] = []
    problems: list[Problem] = []
    for index, item in enumerate(items):
        try:
            events.append(_event(item, store, now_ms))
        except Rejected as exc:
            problems.append(Problem(index, str(exc)))
    return events, problems
