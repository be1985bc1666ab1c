"""Webhook authenticity: Shopify, SHOPLINE and WooCommerce all sign the raw body the same way."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac


def verify_base64_hmac(body: bytes, header_value: str | None, secret: bytes) -> bool:
    """Whether ``header_value`` is the base64 HMAC-SHA256 of ``body`` under ``secret``.

    Checked on the raw bytes before anything is parsed; a missing or garbled header and an
    empty secret are refusals, and the comparison takes the same time wherever it differs.
    """
    if not header_value or not secret:
        return False
    try:
        given = base64.b64decode(header_value.strip(), validate=True)
    except (binascii.Error, ValueError):  # ValueError: text that is not ASCII
        return False
    expected = hmac.new(secret, body, hashlib.sha256).digest()
    return hmac.compare_digest(given, expected)
