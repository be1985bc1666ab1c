"""Where an order was placed, as the platforms name it, mapped to a SPEC channel.

The platforms name sources freely (Shopify: "web", "pos", "iphone", an app's id;
WooCommerce: "checkout", "admin", "rest-api"), so the name is split into words and the first
class with a word in common wins; anything unknown is "other".
"""

from __future__ import annotations

import re

_WORDS = re.compile(r"[a-z0-9]+")
# names whose words say nothing: WooCommerce's block checkout ("store-api") is online
_EXACT = {"store-api": "online"}
_CLASSES: tuple[tuple[str, frozenset[str]], ...] = tuple(
    (channel, frozenset(words.split()))
    for channel, words in (
        ("pos", "pos till"),
        ("app", "app iphone ipad ios android mobile"),
        (
            "marketplace",
            "marketplace amazon ebay etsy shopee lazada momo pchome rakuten tmall taobao"
            " walmart zalora yahoo",
        ),
        ("social", "social facebook instagram messenger line tiktok whatsapp live youtube"),
        ("online", "web online checkout storefront webstore"),
    )
)


def channel_of(source: object) -> str | None:
    """The channel of an order's source name; None when the payload names no source."""
    if not isinstance(source, str) or not source.strip():
        return None
    name = source.strip().lower()
    if name in _EXACT:
        return _EXACT[name]
    words = set(_WORDS.findall(name))
    for channel, names in _CLASSES:
        if words & names:
            return channel
    return "other"
