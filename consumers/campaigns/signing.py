"""Webhook signatures: ``X-RFM-Signature: sha256=<hex HMAC-SHA256 of the exact body bytes>``.

Signing the bytes actually sent (not a re-serialisation) is what lets a receiver verify with
nothing but the raw request body and the shared secret.
"""

from __future__ import annotations

import hashlib
import hmac

HEADER = "X-RFM-Signature"
_SCHEME = "sha256="


def sign(secret: bytes, body: bytes) -> str:
    return _SCHEME + hmac.new(secret, body, hashlib.sha256).hexdigest()


def verify(secret: bytes, body: bytes, header: str) -> bool:
    """Constant-time check of a received signature header (what a receiver does)."""
    return hmac.compare_digest(sign(secret, body), header.strip())
