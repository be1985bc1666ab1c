"""Shopify webhooks (https://shopify.dev/docs/apps/build/webhooks): see ``shopify_style``.

Subscribe to orders/paid, orders/create, orders/updated, orders/cancelled; customers/redact
is one of Shopify's mandatory privacy topics. refunds/create is not used: its payload does
not say whose order was refunded, while orders/updated carries the refund with the buyer.
"""

from __future__ import annotations

from stream.collect.platforms.shopify_style import platform

PLATFORM = platform("shopify", "Shopify")
