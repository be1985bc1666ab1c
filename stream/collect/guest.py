"""Guest checkouts: a stable customer id from the e-mail, and nothing of the e-mail kept.

A keyed hash (HMAC-SHA256 under a secret of this deployment) rather than a plain one, so
the ids cannot be reversed by hashing a list of known addresses. The address is trimmed
and case-folded first: the same buyer typing "Mei@Example.com " stays one customer.
"""

from __future__ import annotations

import hashlib
import hmac

PREFIX = "guest:"


def normal_email(email: str) -> str:
    """The address as one buyer is known by, however it was typed."""
    return email.strip().casefold()


def guest_customer_id(email: str, key: bytes) -> str:
    """``guest:`` and 128 bits of the keyed hash; raises ValueError (naming no address)."""
    if not key:
        raise ValueError("the guest key is empty")
    normal = normal_email(email)
    if not normal:
        raise ValueError("the e-mail is empty")
    digest = hmac.new(key, normal.encode("utf-8"), hashlib.sha256).hexdigest()
    return PREFIX + digest[:32]


def buyer_id(customer_id: str | None, email: object, key: bytes) -> str | None:
    """Whose order: the platform's customer id, else the guest id of the e-mail, else None
    (an anonymous sale, e.g. a walk-in at a till: nobody to score)."""
    if customer_id is not None:
        return customer_id
    if isinstance(email, str) and email.strip():
        return guest_customer_id(email, key)
    return None
