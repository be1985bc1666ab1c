"""Guest checkouts: one id per buyer however the address is cased or spaced; none of it kept."""

from __future__ import annotations

import hashlib
import hmac
import re

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from stream.collect.guest import buyer_id, guest_customer_id
from stream.core.events import MAX_ID_LEN

KEY = b"unit-test guest key"
FAST = settings(max_examples=200, deadline=None)

_LOCAL = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789._+-", min_size=1, max_size=24)
_DOMAIN = st.from_regex(r"\A[a-z0-9]{1,12}(\.[a-z0-9]{1,8}){1,2}\Z")
EMAILS = st.builds(lambda local, domain: f"{local}@{domain}", _LOCAL, _DOMAIN)
SPACE = st.text(alphabet=" \t\r\n\u00a0\u3000", max_size=3)


def test_the_id_is_the_keyed_hash_of_the_normalised_address() -> None:
    expected = hmac.new(KEY, b"mei@example.tw", hashlib.sha256).hexdigest()[:32]
    assert guest_customer_id("  Mei@Example.TW\n", KEY) == "guest:" + expected


@FAST
@given(
    email=EMAILS, before=SPACE, after=SPACE, cases=st.lists(st.booleans(), min_size=64, max_size=64)
)
def test_case_and_surrounding_space_do_not_change_the_id(
    email: str, before: str, after: str, cases: list[bool]
) -> None:
    mixed = "".join(c.upper() if up else c for c, up in zip(email, cases, strict=False))
    mixed += email[len(cases) :]
    same = guest_customer_id(email, KEY)
    assert guest_customer_id(before + mixed + after, KEY) == same
    assert guest_customer_id(email.upper(), KEY) == same


@FAST
@given(first=EMAILS, second=EMAILS)
def test_different_addresses_get_different_ids(first: str, second: str) -> None:
    assume(first.casefold() != second.casefold())
    assert guest_customer_id(first, KEY) != guest_customer_id(second, KEY)


@FAST
@given(email=EMAILS)
def test_the_id_says_nothing_of_the_address_and_depends_on_the_key(email: str) -> None:
    guest = guest_customer_id(email, KEY)
    assert re.fullmatch(r"guest:[0-9a-f]{32}", guest)
    assert len(guest) <= MAX_ID_LEN
    assert guest_customer_id(email, b"another deployment") != guest


@pytest.mark.parametrize(("email", "key"), [("", KEY), ("   ", KEY), ("a@b.tw", b"")])
def test_no_address_or_no_key_is_refused_without_naming_the_address(email: str, key: bytes) -> None:
    with pytest.raises(ValueError) as caught:
        guest_customer_id(email, key)
    assert "@" not in str(caught.value)


def test_whose_order() -> None:
    assert buyer_id("7390412345678", "chen@example.tw", KEY) == "7390412345678"
    assert buyer_id(None, "chen@example.tw", KEY) == guest_customer_id("chen@example.tw", KEY)
    assert buyer_id(None, "  ", KEY) is None
    assert buyer_id(None, None, KEY) is None
