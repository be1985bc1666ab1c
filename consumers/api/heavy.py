"""Room for the heavy requests: transitions over long ranges and exports.

Each of them reads thousands of keys and shapes them on the one event loop; a crowd of them
slows every other answer (the health probe, the dashboard) to seconds. A few run at once;
one more is refused at once with 429 and ``Retry-After`` rather than queued.
"""

from __future__ import annotations

from typing import Any

from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.types import Receive, Scope, Send

RETRY_AFTER = "2"  # seconds


class HeavySlots:
    def __init__(self, limit: int) -> None:
        self.free = limit

    def refusal(self) -> Response | None:
        """None, holding a slot the caller must ``release``; else the 429 to answer."""
        if self.free <= 0:
            return JSONResponse(
                {"error": "too many heavy requests (long ranges, exports) at once; retry"},
                status_code=429,
                headers={"retry-after": RETRY_AFTER},
            )
        self.free -= 1
        return None

    def release(self) -> None:
        self.free += 1


class ReleasingStream(StreamingResponse):
    """A streamed response that gives its slot back however the stream ends."""

    def __init__(self, slots: HeavySlots, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.slots = slots

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.slots.release()
