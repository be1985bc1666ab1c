"""How `rfm api` and `rfm collect` are served: uvicorn on httptools, with the limits both share.

uvicorn times out only idle keep-alive connections; a client that opens a connection and then
sends its request head a byte at a time, or nothing at all, holds it (and a file descriptor)
for as long as it likes. ``BoundedHttp`` gives each request head ``header_timeout`` from the
connection opening (or from the request's first byte on a reused connection) and each body
``body_timeout`` from the end of its head, then closes the connection, answering 408 when no
response has begun. A head larger than ``MAX_HEAD_BYTES`` is answered 431. A request that
arrives while ``max_connections`` connections or requests are open is answered 503 with
``Retry-After`` (uvicorn's own limit answers without it, so it stays off).

Exposure: bound beyond loopback, a service refuses to start without credentials unless told
``allow_unauthenticated`` (it sits behind a proxy that authenticates).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from pathlib import Path
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from stream.config import ConfigError, ServerSettings

log = logging.getLogger("rfm.http")

MAX_HEAD_BYTES = 64 * 1024  # request line and headers; browsers and platforms send < 16 KiB
BODY_GRACE_S = 1.0  # an app that reads its body itself (the collector: 408) answers first
KEEP_ALIVE_S = 5  # idle time between requests on one connection (uvicorn's own timer)
CROWDED_RETRY_S = "2"  # seconds: open connections come and go within that


async def crowded(scope: Any, receive: Any, send: Any) -> None:
    """The answer to a request past ``max_connections``: 503, come back shortly."""
    body = b'{"error":"too many connections at once; retry"}'
    await send(
        {
            "type": "http.response.start",
            "status": 503,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"retry-after", CROWDED_RETRY_S.encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps a service on this machine: 127.0.0.0/8, ::1, localhost."""
    name = host.strip().strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False  # a name resolves to whatever it resolves to: treat it as exposed


def exposure_problem(
    host: str, section: str, server: ServerSettings, credentials: str | None
) -> str | None:
    """Why a service may not start bound to ``host``, or None. ``credentials`` names the
    missing setting that would protect it (None: it has credentials)."""
    if credentials is None or is_loopback(host) or server.allow_unauthenticated:
        return None
    return (
        f"{credentials}: required to serve on {host}, beyond loopback (anyone who can reach "
        f"it could use it); set it, bind 127.0.0.1, or set {section}.allow_unauthenticated = "
        "true only behind a proxy that authenticates every request"
    )


def check_tls_files(section: str, server: ServerSettings) -> None:
    for key, path in (("tls_certfile", server.tls_certfile), ("tls_keyfile", server.tls_keyfile)):
        if path is not None and not Path(path).is_file():
            raise ConfigError(f"{section}.{key}: no such file: {path}")


class BoundedHttp(HttpToolsProtocol):
    """uvicorn's httptools protocol with deadlines on receiving each request (see module)."""

    header_timeout: float = ServerSettings().header_timeout_s
    body_timeout: float = ServerSettings().body_timeout_s
    max_connections: int = ServerSettings().max_connections

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limit_concurrency = None  # ours, with Retry-After (see on_headers_complete)
        self._deadline: asyncio.TimerHandle | None = None
        self._head_bytes = 0
        self._in_head = False

    def _arm(self, seconds: float) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, self._overdue)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._in_head, self._head_bytes = True, 0
        self._arm(self.header_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._in_head:
            self._head_bytes += len(data)
        super().data_received(data)  # may complete the head, or begin a pipelined one
        if self._in_head and self._head_bytes > MAX_HEAD_BYTES and not self.transport.is_closing():
            self._refuse(b"431 Request Header Fields Too Large")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if not self._in_head:  # a further request on a kept-alive connection
            self._in_head, self._head_bytes = True, 0
            self._arm(self.header_timeout)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._arm(self.body_timeout + BODY_GRACE_S)
        limit = self.max_connections
        if len(self.connections) < limit and len(self.tasks) < limit:
            super().on_headers_complete()
            return
        # uvicorn starts the request's app here, read from self.app: this one gets ``crowded``
        app, self.app = self.app, crowded
        try:
            super().on_headers_complete()
        finally:
            self.app = app

    def on_message_complete(self) -> None:
        self._disarm()
        super().on_message_complete()

    def _overdue(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        log.debug("closing a connection whose request did not arrive in time")
        self._refuse(b"408 Request Timeout")

    def _refuse(self, status: bytes) -> None:
        """Answer ``status`` if no response has begun, and close; the app, if it runs, sees
        the client gone."""
        cycle = self.cycle
        if cycle is None or cycle.response_complete or not cycle.response_started:
            if cycle is not None and not cycle.response_complete:
                cycle.disconnected = True
                cycle.message_event.set()
            self.transport.write(
                b"HTTP/1.1 " + status + b"\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            )
        self._disarm()
        self.transport.close()


def bounded_protocol(server: ServerSettings) -> type[BoundedHttp]:
    """``BoundedHttp`` with this service's deadlines and bound."""
    return type(
        "BoundedHttp",
        (BoundedHttp,),
        {
            "header_timeout": server.header_timeout_s,
            "body_timeout": server.body_timeout_s,
            "max_connections": server.max_connections,
        },
    )


def serve(app: Any, host: str, port: int, server: ServerSettings) -> None:
    """Serve ``app`` until SIGINT/SIGTERM with ``server``'s limits, over TLS when it names a
    certificate. Access logs stay off: paths and bodies carry customer data."""
    uvicorn.run(
        app,
        host=host,
        port=port,
        http=bounded_protocol(server),
        timeout_keep_alive=KEEP_ALIVE_S,
        ssl_certfile=server.tls_certfile,
        ssl_keyfile=server.tls_keyfile,
        log_level="info",
        access_log=False,
        server_header=False,
        proxy_headers=False,
        timeout_graceful_shutdown=3,  # open streams (SSE) would otherwise hold shutdown
    )
