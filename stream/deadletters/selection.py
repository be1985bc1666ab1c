"""Which dead letters an operator means: ids, a reason's text, a time range, the newest N.

Times are RFC 3339 with an offset, epoch milliseconds, or an age such as ``90s``, ``15m``,
``1h``, ``2d``, ``1w`` or ``1h30m`` (that long before now)."""

from __future__ import annotations

import heapq
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from stream.deadletters.letter import Letter

_UNIT_MS = {"s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}
_AGE = re.compile(r"(?:\d+[smhdw])+")
_AGE_PART = re.compile(r"(\d+)([smhdw])")
_ID = re.compile(r"(\d+):(\d+)")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def parse_moment(text: str, now_ms: int) -> int:
    """Epoch ms of ``text``; ValueError naming the accepted shapes otherwise."""
    text = text.strip()
    if text.isdigit():
        return int(text)
    if _AGE.fullmatch(text):
        age = sum(int(n) * _UNIT_MS[unit] for n, unit in _AGE_PART.findall(text))
        return now_ms - age
    try:
        # RFC 3339 allows a lower-case "t" and "z"; fromisoformat wants them upper-case
        parsed = datetime.fromisoformat(text.upper())
    except ValueError:
        raise ValueError(
            f"expected RFC 3339 (2026-12-06T10:00:00+08:00), epoch ms, or an age such as "
            f"30m, 1h, 2d (units s, m, h, d, w), got {text[:40]!r}"
        ) from None
    if parsed.tzinfo is None:
        raise ValueError(f"needs a UTC offset (Z or +08:00), got {text[:40]!r}")
    return (parsed - _EPOCH) // timedelta(milliseconds=1)


def parse_id(text: str) -> tuple[int, int]:
    """``"P:O"``, a dead letter's partition and offset in the dead-letter topic."""
    found = _ID.fullmatch(text.strip())
    if found is None:
        raise ValueError(
            f"expected PARTITION:OFFSET as `rfm dlq` shows it (e.g. 2:17), got {text!r}"
        )
    return int(found.group(1)), int(found.group(2))


@dataclass(frozen=True)
class Selection:
    """Every condition given must hold: ``reason`` is a case-insensitive substring of the
    reason; the time is in ``[since, until)``; the id is one of ``ids`` (when any)."""

    reason: str | None = None
    since: int | None = None
    until: int | None = None
    ids: frozenset[tuple[int, int]] = field(default_factory=frozenset)

    @property
    def narrows(self) -> bool:
        """Whether anything narrows the selection (else it is every dead letter)."""
        return bool(self.ids) or any(x is not None for x in (self.reason, self.since, self.until))

    def matches(self, letter: Letter) -> bool:
        if self.ids and (letter.partition, letter.offset) not in self.ids:
            return False
        if self.reason is not None and self.reason.casefold() not in letter.reason.casefold():
            return False
        if self.since is not None and letter.timestamp < self.since:
            return False
        return self.until is None or letter.timestamp < self.until


def in_time_order(letters: Iterable[Letter], limit: int | None = None) -> list[Letter]:
    """Oldest first (time, then partition and offset); with ``limit``, only the newest
    ``limit`` of them, in memory bounded by ``limit``."""

    def order(letter: Letter) -> tuple[int, int, int]:
        return letter.timestamp, letter.partition, letter.offset

    if limit is None:
        return sorted(letters, key=order)
    return sorted(heapq.nlargest(limit, letters, key=order), key=order)
