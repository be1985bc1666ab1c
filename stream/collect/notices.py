"""Warnings a flood cannot multiply.

``rfm collect`` faces the internet: a refusal logged once per request would let anyone fill
the disk with 401s, or a runaway shop with 429s. Per kind of refusal the first is logged at
once, later ones at most once per ``every`` seconds, saying how many were held back.
Kinds come from fixed sets (routes, configured sources), never from a request.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable


class Notices:
    def __init__(
        self,
        log: logging.Logger,
        *,
        every: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.log = log
        self.every = every
        self.clock = clock
        self._next: dict[str, float] = {}  # kind -> when the next line may be written
        self._held: dict[str, int] = {}  # kind -> lines not written since the last one

    def warning(self, kind: str, message: str) -> None:
        now = self.clock()
        if now < self._next.get(kind, float("-inf")):
            self._held[kind] = self._held.get(kind, 0) + 1
            return
        held = self._held.pop(kind, 0)
        self._next[kind] = now + self.every
        if held:
            self.log.warning("%s (%d more like it since the last such line)", message, held)
        else:
            self.log.warning("%s", message)
