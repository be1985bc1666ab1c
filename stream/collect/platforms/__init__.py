"""Storefront platforms whose own webhooks ``rfm collect`` accepts, by the name in the URL."""

from __future__ import annotations

from stream.collect.platforms import shopify, shopline, woocommerce
from stream.collect.platforms.platform import Platform

PLATFORMS: dict[str, Platform] = {
    platform.name: platform
    for platform in (shopify.PLATFORM, shopline.PLATFORM, woocommerce.PLATFORM)
}

__all__ = ["PLATFORMS", "Platform"]
