"""SHOPLINE Open API webhooks (developer.shopline.com): the Shopify shape, see ``shopify_style``.

The same topics as Shopify (orders/paid, orders/create, orders/updated, orders/cancelled,
and the mandatory customers/redact, which also says when it was asked: ``update_time``);
ids are strings.
"""

from __future__ import annotations

from stream.collect.platforms.shopify_style import platform

PLATFORM = platform("shopline", "Shopline")
