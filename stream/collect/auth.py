"""Who may post: a bearer token (``/v1/events``, ``/metrics``) or a tracking write key sent
as the HTTP basic-auth user name, the way Segment's libraries send theirs. Every comparison
takes the same time wherever the given secret differs, and a write key is compared against
every configured key, so the answer's timing says neither how close a guess was nor which
key it resembled. (Webhooks are signed instead: ``stream.collect.signature``.)"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Sequence


def credentials(header: str | None, scheme: str) -> str | None:
    """What follows ``<scheme> `` in an ``Authorization`` header (scheme case-blind)."""
    if not header:
        return None
    given_scheme, _, value = header.strip().partition(" ")
    if given_scheme.lower() != scheme.lower():
        return None
    return value.strip()


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


def bearer_ok(header: str | None, token: str | None) -> bool:
    """``Authorization: Bearer <token>``; no token configured refuses everyone."""
    given = credentials(header, "Bearer")
    return token is not None and given is not None and _same(given, token)


def write_key_index(header: str | None, write_keys: Sequence[str]) -> int | None:
    """Which of ``write_keys`` ``Authorization: Basic base64(<write key>:)`` names (its
    position), or None: the source a tracking call is counted against."""
    encoded = credentials(header, "Basic")
    if encoded is None or not write_keys:
        return None
    try:
        user = base64.b64decode(encoded, validate=True).decode("utf-8").partition(":")[0]
    except (binascii.Error, ValueError):  # ValueError: not ASCII, or not UTF-8
        return None
    matches = [_same(user, key) for key in write_keys]
    return matches.index(True) if any(matches) else None
