"""Who may talk to the API, and what every response promises the browser.

- Bearer token (``RFM_API_TOKEN``): compared in constant time; everything but the public
  paths (health probe, the dashboard's static shell, which holds no data) needs it.
- Host check on a loopback bind: a page on another site cannot DNS-rebind its own name
  onto 127.0.0.1 and read the API through the operator's browser. The bound address is
  always one of the names allowed.
- Headers: no sniffing, no framing, scripts and styles from this origin only, and customer
  data never cached.

A plain ASGI middleware, so streamed responses (SSE, exports) pass through unbuffered.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable

from starlette.datastructures import Headers, MutableHeaders
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from stream.http_server import is_loopback

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
SECURITY_HEADERS = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "content-security-policy": (
        "default-src 'self'; img-src 'self' data:; base-uri 'none'; "
        "form-action 'self'; frame-ancestors 'none'"
    ),
}


def bearer_matches(header: str | None, token: str) -> bool:
    """``Authorization: Bearer <token>``, the token compared in constant time."""
    if not header:
        return False
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(given.strip().encode("utf-8"), token.encode("utf-8"))


def host_name(host_header: str) -> str:
    """The name part of a Host header: ``[::1]:8080`` -> ``::1``, ``a:80`` -> ``a``."""
    host = host_header.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def allowed_hosts(bind_host: str) -> frozenset[str] | None:
    """Host names a request may carry: on a loopback bind, the loopback names and the bound
    address itself (``127.0.0.2`` is its own Host); beyond loopback, any (None)."""
    if not is_loopback(bind_host):
        return None
    return LOOPBACK_HOSTS | {bind_host.strip().strip("[]").lower()}


class Guard:
    def __init__(
        self,
        app: ASGIApp,
        *,
        token: str | None,
        public: Callable[[str], bool],
        allowed_hosts: frozenset[str] | None = None,
    ) -> None:
        self.app = app
        self.token = token
        self.public = public
        self.allowed_hosts = allowed_hosts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        headers = Headers(scope=scope)
        refusal: JSONResponse | None = None
        if self.allowed_hosts is not None and host_name(headers.get("host", "")) not in (
            self.allowed_hosts
        ):
            refusal = JSONResponse({"error": "unexpected Host header"}, status_code=421)
        elif (
            self.token
            and not self.public(path)
            and not bearer_matches(headers.get("authorization"), self.token)
        ):
            refusal = JSONResponse(
                {"error": "missing or wrong bearer token"},
                status_code=401,
                headers={"www-authenticate": 'Bearer realm="rfm"'},
            )
        private = path.startswith("/api/") or path == "/metrics"

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                out = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    out.setdefault(name, value)
                if private:
                    out["cache-control"] = "no-store"
            await send(message)

        if refusal is not None:
            await refusal(scope, receive, send_with_headers)
        else:
            await self.app(scope, receive, send_with_headers)
