"""Webhook signatures (SPEC section 11): base64 HMAC-SHA256 of the raw body, checked first.

The expected header is computed here with hmac + base64 directly, on a real fixture body.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream.collect.signature import verify_base64_hmac

BODY = (
    Path(__file__).resolve().parent.parent / "fixtures/webhooks/shopify/orders_paid_registered.json"
).read_bytes()
SECRET = b"shpss_5f2a9c0d7e11b3a48c6f"


def header(body: bytes, secret: bytes) -> str:
    return base64.b64encode(hmac.new(secret, body, hashlib.sha256).digest()).decode("ascii")


def test_the_platform_signature_verifies() -> None:
    assert verify_base64_hmac(BODY, header(BODY, SECRET), SECRET)


def test_surrounding_whitespace_in_the_header_is_tolerated() -> None:
    assert verify_base64_hmac(BODY, f" {header(BODY, SECRET)}\t", SECRET)


def test_a_tampered_body_fails() -> None:
    good = header(BODY, SECRET)
    tampered = BODY.replace(b'"1240.00"', b'"9240.00"', 1)
    assert tampered != BODY
    assert not verify_base64_hmac(tampered, good, SECRET)
    assert not verify_base64_hmac(BODY + b" ", good, SECRET)


def test_another_secret_fails() -> None:
    assert not verify_base64_hmac(BODY, header(BODY, SECRET), b"shpss_someone_else")
    assert not verify_base64_hmac(BODY, header(BODY, b""), b"")  # no secret: never verified


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "   ",
        "not base64 at all!",
        "%%%%",
        "ü" * 44,
        hmac.new(SECRET, BODY, hashlib.sha256).hexdigest(),  # hex, not base64
        header(BODY, SECRET)[:-4],  # truncated
        header(BODY, SECRET)[:-1] + "*",  # garbled last character
        header(BODY, SECRET)[:20] + "!" + header(BODY, SECRET)[20:],  # noise inside
        base64.b64encode(hmac.new(SECRET, BODY, hashlib.sha1).digest()).decode(),  # SHA-1
    ],
)
def test_a_missing_or_garbled_header_fails(value: str | None) -> None:
    assert not verify_base64_hmac(BODY, value, SECRET)


@settings(max_examples=150, deadline=None)
@given(
    body=st.binary(max_size=512),
    secret=st.binary(min_size=1, max_size=64),
    flip=st.integers(0, 4095),
)
def test_any_body_verifies_and_any_changed_byte_fails(
    body: bytes, secret: bytes, flip: int
) -> None:
    signed = header(body, secret)
    assert verify_base64_hmac(body, signed, secret)
    if body:
        index, bit = divmod(flip % (len(body) * 8), 8)
        changed = bytearray(body)
        changed[index] ^= 1 << bit
        assert not verify_base64_hmac(bytes(changed), signed, secret)
