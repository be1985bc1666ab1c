"""The settings of the HTTP services: what `rfm api` and `rfm collect` share about how they are
served (``ServerSettings``, keys of both ``[api]`` and ``[collect]``), and ``[api]`` itself.

Certificate files are checked when a server starts, not here: other processes read the same
file and may run where the certificate is not mounted.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from stream.config.checks import ConfigError, as_int, as_table, parse_duration

MIN_API_TOKEN = 16  # characters of RFM_API_TOKEN: a guess-proof secret, not a password


@dataclass(frozen=True)
class ServerSettings:
    """How one HTTP service is served (``stream.http_server``)."""

    # a request's head must arrive within this of the connection (or the request) starting
    header_timeout_s: float = 10.0
    # and its body within this of its head
    body_timeout_s: float = 10.0
    # connections and requests at once; past it uvicorn answers 503
    max_connections: int = 1000
    tls_certfile: str | None = None
    tls_keyfile: str | None = None
    # serve beyond loopback without credentials (behind a proxy that authenticates)
    allow_unauthenticated: bool = False


SERVER_KEYS = (
    "header_timeout",
    "body_timeout",
    "max_connections",
    "tls_certfile",
    "tls_keyfile",
    "allow_unauthenticated",
)


@dataclass(frozen=True)
class ApiSettings:
    """``rfm api``: its token, how it is served, and how hard it may lean on Redis."""

    token: str | None = field(default=None, repr=False)  # RFM_API_TOKEN
    server: ServerSettings = field(default_factory=ServerSettings)
    redis_connections: int = 50  # the pool's bound: requests past it wait for a connection
    redis_wait_s: float = 5.0  # how long they wait before the request is answered 503
    heavy_requests: int = 2  # long transition ranges and exports at once; more get 429


API_KEYS = (*SERVER_KEYS, "redis_connections", "redis_wait", "heavy_requests")


def _timeout(name: str, value: Any) -> float:
    seconds = parse_duration(name, value)
    if not 0.5 <= seconds <= 600:
        raise ConfigError(f"{name}: from 500ms to 10m, got {seconds:g}s")
    return seconds


def _path(name: str, value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{name}: expected a file path, got {value!r}")
    return value


def server_settings(section: str, t: Mapping[str, Any]) -> ServerSettings:
    """The ``SERVER_KEYS`` of an already-checked ``[section]`` table."""
    d = ServerSettings()
    allow = t.get("allow_unauthenticated", d.allow_unauthenticated)
    if not isinstance(allow, bool):
        raise ConfigError(f"{section}.allow_unauthenticated: expected true or false, got {allow!r}")
    cert = _path(f"{section}.tls_certfile", t.get("tls_certfile"))
    key = _path(f"{section}.tls_keyfile", t.get("tls_keyfile"))
    if (cert is None) != (key is None):
        missing = "tls_keyfile" if key is None else "tls_certfile"
        raise ConfigError(
            f"{section}.{missing}: required with {section}.tls_certfile / tls_keyfile "
            "(the certificate and its private key go together)"
        )
    return ServerSettings(
        header_timeout_s=_timeout(f"{section}.header_timeout", t.get("header_timeout", "10s")),
        body_timeout_s=_timeout(f"{section}.body_timeout", t.get("body_timeout", "10s")),
        max_connections=as_int(
            f"{section}.max_connections", t.get("max_connections", d.max_connections), 10, 100_000
        ),
        tls_certfile=cert,
        tls_keyfile=key,
        allow_unauthenticated=allow,
    )


def api_settings(raw: Any, env: Mapping[str, str]) -> ApiSettings:
    t = as_table("api", raw, API_KEYS)
    d = ApiSettings()
    token = env.get("RFM_API_TOKEN") or None
    if token is not None and (len(token) < MIN_API_TOKEN or token != token.strip()):
        raise ConfigError(
            f"RFM_API_TOKEN: at least {MIN_API_TOKEN} characters without surrounding spaces, "
            f"got {len(token)} (make one with: openssl rand -hex 16)"
        )
    return ApiSettings(
        token=token,
        server=server_settings("api", t),
        redis_connections=as_int(
            "api.redis_connections", t.get("redis_connections", d.redis_connections), 2, 10_000
        ),
        redis_wait_s=_timeout("api.redis_wait", t.get("redis_wait", "5s")),
        heavy_requests=as_int(
            "api.heavy_requests", t.get("heavy_requests", d.heavy_requests), 1, 1000
        ),
    )
