"""What may reach a log line: no URL credentials, query strings, tokens or payloads.

Two guards, installed once per process by ``guard_logs`` (the `rfm` command group does it for
every command, the worker again after Faust replaces the logging set-up):

- Third-party loggers are held to levels at which they print nothing of a request: httpx
  logs every request's full URL at INFO (``POST http://user:pass@host/hook?api_key=...``),
  httpcore and hpack print headers at DEBUG, urllib3 URLs at DEBUG, uvicorn's access log
  paths and query strings, aiokafka and kafka raw records at DEBUG.
- Every record is cut down before any handler sees it: a URL anywhere in a message keeps
  its scheme, host, port and path, nothing else (``public_url``). A record factory does it,
  so it holds whatever handlers a library installs later.

Our own code that names a URL (a webhook's address in a dead letter, say) writes
``public_url`` of it in the first place.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

# the most each logger may print; below these levels they print requests, headers or records
HELD_LOGGERS: Mapping[str, int] = {
    "httpx": logging.WARNING,
    "httpcore": logging.WARNING,
    "hpack": logging.WARNING,
    "urllib3": logging.WARNING,
    "uvicorn.access": logging.WARNING,
    "aiokafka": logging.INFO,
    "kafka": logging.INFO,
}
_URL = re.compile(r"\b[A-Za-z][A-Za-z0-9+.\-]{0,15}://[^\s\"'<>`]+")


def public_url(url: str) -> str:
    """``scheme://host[:port]/path`` of ``url``: no user, password, query or fragment."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:  # a malformed host or port: keep only what is surely not a secret
        scheme = url.partition("://")[0]
        return f"{scheme}://(unreadable address)"
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{port}" if port is not None else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def redact_urls(text: str) -> str:
    """``text`` with every URL in it replaced by its ``public_url``."""
    if "://" not in text:
        return text
    return _URL.sub(_public_match, text)


def _public_match(match: re.Match[str]) -> str:
    """Punctuation that ends a sentence or a bracket stays outside the URL."""
    url = match.group(0)
    kept = url.rstrip(".,;:!?)")
    return public_url(kept) + url[len(kept) :]


def _redacted(record: logging.LogRecord) -> logging.LogRecord:
    try:
        message = record.getMessage()
    except Exception:  # a broken format string: the handler reports it as it would have
        return record
    cleaned = redact_urls(message)
    if cleaned != message:
        record.msg, record.args = cleaned, None
    return record


_installed = False


def guard_logs() -> None:
    """Hold ``HELD_LOGGERS`` to their levels and cut URLs out of every record from now on.
    Idempotent: a second call changes nothing."""
    global _installed
    for name, level in HELD_LOGGERS.items():
        logging.getLogger(name).setLevel(level)
    if _installed:
        return
    make = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        return _redacted(make(*args, **kwargs))

    logging.setLogRecordFactory(factory)
    _installed = True
