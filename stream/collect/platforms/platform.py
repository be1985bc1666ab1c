"""What the service needs to know of a storefront platform: its headers and its mapping."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from stream.collect.outgoing import MappingContext, Outgoing


@dataclass(frozen=True)
class Platform:
    name: str  # "shopify" | "shopline" | "woocommerce"
    signature_header: str  # base64 HMAC-SHA256 of the raw body
    delivery_header: str  # the same on every redelivery of one webhook
    topic_header: str
    shop_header: str
    # (topic, parsed JSON, ctx) -> events, [] when the payload asks for none, None for a
    # topic we do not use; raises PayloadError
    map: Callable[[str, Any, MappingContext], list[Outgoing] | None]
