"""No URL credentials, query strings or tokens in a log line: URLs built from drawn parts
(the oracle knows which parts are secret) are cut to scheme://host[:port]/path, in any
message, through the real logging machinery."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream.redaction import HELD_LOGGERS, guard_logs, public_url, redact_urls

word = st.text("abcdefghijklmnopqrstuvwxyz0123456789-_", min_size=1, max_size=12)
secret = st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", min_size=8, max_size=16).map(
    lambda s: "S3" + s  # upper case: never part of a (lower-case) host or path word
)
hosts = st.one_of(
    st.lists(word, min_size=1, max_size=3).map(".".join), st.just("127.0.0.1"), st.just("[::1]")
)


@st.composite
def urls(draw: st.DrawFn) -> tuple[str, str, list[str]]:
    """(a URL, what may be logged of it, the secrets in it)."""
    scheme = draw(st.sampled_from(["http", "https", "redis", "rediss"]))
    host = draw(hosts)
    port = draw(st.none() | st.integers(1, 65535))
    path = "".join(f"/{p}" for p in draw(st.lists(word, max_size=3)))
    secrets: list[str] = []
    user = ""
    if draw(st.booleans()):
        name, password = draw(secret), draw(secret)
        secrets += [name, password]
        user = f"{name}:{password}@" if draw(st.booleans()) else f":{password}@"
        if user.startswith(":"):
            secrets.remove(name)
    query = ""
    if draw(st.booleans()):
        token = draw(secret)
        secrets.append(token)
        query = f"?api_key={token}&x=1"
    fragment = ""
    if draw(st.booleans()):
        tag = draw(secret)
        secrets.append(tag)
        fragment = f"#{tag}"
    at = f":{port}" if port is not None else ""
    return (
        f"{scheme}://{user}{host}{at}{path}{query}{fragment}",
        f"{scheme}://{host}{at}{path}",
        secrets,
    )


@settings(max_examples=300, deadline=None)
@given(urls())
def test_public_url_keeps_scheme_host_port_and_path_only(drawn: tuple[str, str, list[str]]) -> None:
    url, public, secrets = drawn
    assert public_url(url) == public
    assert not any(s in public_url(url) for s in secrets)


@settings(max_examples=300, deadline=None)
@given(urls(), st.sampled_from(['POST {} "HTTP/1.1 200 OK"', "url={}, retrying", "({})", "{}"]))
def test_any_url_in_a_message_is_cut_down(drawn: tuple[str, str, list[str]], template: str) -> None:
    url, public, _ = drawn
    assert redact_urls(template.format(url)) == template.format(public)


def test_a_malformed_address_keeps_no_part_of_it() -> None:
    assert public_url("http://u:S3CRET@[::1/x?k=S3CRET") == "http://(unreadable address)"
    assert public_url("http://u:S3CRET@host:99999/x") == "http://(unreadable address)"


@pytest.fixture
def guarded() -> Iterator[None]:
    factory = logging.getLogRecordFactory()
    levels = {name: logging.getLogger(name).level for name in HELD_LOGGERS}
    guard_logs()
    yield
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)
    logging.setLogRecordFactory(factory)


def test_guarded_logging_prints_no_credential_query_or_request_line(
    guarded: None, caplog: pytest.LogCaptureFixture
) -> None:
    url = "http://user:S3PASS@127.0.0.1:8080/hook?api_key=S3TOKEN"
    with caplog.at_level(logging.DEBUG):
        logging.getLogger("httpx").info('HTTP Request: POST %s "HTTP/1.1 200 OK"', url)
        logging.getLogger("httpcore.http11").debug("send_request_headers.started %s", url)
        logging.getLogger("uvicorn.access").info('127.0.0.1 - "GET /x?token=S3TOKEN" 200')
        logging.getLogger("rfm.campaigns").warning("delivery to %s failed", url)
        logging.getLogger("rfm.campaigns").warning("percent %d%% done", 5)
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "S3PASS" not in text and "S3TOKEN" not in text and "user" not in text
    assert [r.name for r in caplog.records] == ["rfm.campaigns", "rfm.campaigns"]
    assert caplog.records[0].getMessage() == "delivery to http://127.0.0.1:8080/hook failed"
    assert caplog.records[1].getMessage() == "percent 5% done"
