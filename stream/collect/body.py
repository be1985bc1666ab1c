"""A request body read within bounds, then decoded as JSON, whoever sends it.

The size is checked against ``Content-Length`` before anything is read and again while
reading (a sender may lie or stream without a length), so no more than the limit is ever
held; a body that stalls is cut off. Every failure is a ``Refusal`` carrying its 4xx status
and a one-line reason that quotes nothing of the body.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from starlette.requests import ClientDisconnect, Request

JSON_TYPES = frozenset({"application/json"})


class Refusal(Exception):
    """The request cannot be served as sent; ``status`` is its 4xx."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def require_json(request: Request) -> None:
    """415 unless the body says it is JSON (``application/json`` or a ``+json`` type)."""
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media not in JSON_TYPES and not media.endswith("+json"):
        raise Refusal(415, f"expected Content-Type application/json, got {media[:60]!r}")


async def read_body(request: Request, limit: int, timeout: float) -> bytes:
    """The raw body, at most ``limit`` bytes (413 past it), within ``timeout`` seconds (408)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.strip().isdigit():
            raise Refusal(400, "Content-Length is not a number")
        if int(declared) > limit:
            raise Refusal(413, f"the body is larger than {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(timeout):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise Refusal(413, f"the body is larger than {limit} bytes")
                chunks.append(chunk)
    except TimeoutError:
        raise Refusal(408, f"the body did not arrive within {timeout:g}s") from None
    except ClientDisconnect:
        raise Refusal(400, "the client went away while sending the body") from None
    return b"".join(chunks)


def decode_json(body: bytes) -> Any:
    """The JSON document (orjson: UTF-8 only, at most 1024 levels deep, finite numbers)."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        # orjson's message says what and where (line, column); it never quotes the input
        reason = str(exc).splitlines()[0][:160]
        raise Refusal(400, f"the body is not valid JSON: {reason}") from None
