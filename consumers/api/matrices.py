"""Count matrices: the R x F grid and the segment transition flow over a time range. Pure."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from stream.core.changes import iso_ms

HOUR_MS = 3_600_000
# The scorer keeps each hourly transitions hash for 400 days (commit.lua TRANSITIONS_TTL_MS).
MAX_RANGE_HOURS = 400 * 24
DEFAULT_RANGE_MS = 24 * HOUR_MS


_PLUS_LOST = re.compile(r"(:\d{2}(?:\.\d+)?) (\d{2}:?\d{2})$")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class RangeError(ValueError):
    """A bad ``from``/``to``; the message says which and why."""


def grid_doc(cells: Mapping[str, int], buckets: int) -> dict[str, Any]:
    """Rows R = B..1 (best first), columns F = 1..B; cells off that scale (stored before a
    change of ``buckets``) are counted in ``off_scale`` rather than dropped silently."""
    dense = [[0] * buckets for _ in range(buckets)]
    off_scale = 0
    for cell, n in cells.items():
        r_text, _, f_text = cell.partition(":")
        try:
            r, f = int(r_text), int(f_text)
        except ValueError:
            off_scale += n
            continue
        if 1 <= r <= buckets and 1 <= f <= buckets:
            dense[buckets - r][f - 1] += n
        else:
            off_scale += n
    rows = [{"r": buckets - k, "customers": dense[k]} for k in range(buckets)]
    return {
        "buckets": buckets,
        "f": list(range(1, buckets + 1)),
        "rows": rows,
        "total": sum(sum(r) for r in dense) + off_scale,
        "off_scale": off_scale,
    }


def _instant(name: str, text: str) -> int:
    # An unencoded "+08:00" in a query string arrives as " 08:00": take it as meant.
    text = _PLUS_LOST.sub(r"\1+\2", text.strip())
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        raise RangeError(f"{name}: expected an ISO 8601 time like 2026-11-20T10:00:00Z") from None
    if at.tzinfo is None:
        raise RangeError(f"{name}: needs a UTC offset (e.g. Z or +08:00), got {text[:40]!r}")
    return (at - _EPOCH) // timedelta(milliseconds=1)


def hour_range(start: str | None, end: str | None, now_ms: int) -> range:
    """Epoch hours whose bucket overlaps ``[from, to)``; default the last 24 hours."""
    end_ms = _instant("to", end) if end else now_ms
    start_ms = _instant("from", start) if start else end_ms - DEFAULT_RANGE_MS
    if start_ms >= end_ms:
        raise RangeError("from: must be earlier than to")
    first, last = start_ms // HOUR_MS, (end_ms - 1) // HOUR_MS
    if last - first + 1 > MAX_RANGE_HOURS:
        raise RangeError(f"range: at most {MAX_RANGE_HOURS // 24} days (transitions are kept 400)")
    return range(first, last + 1)


def transitions_doc(hours: range, buckets: Iterable[Mapping[str, int]]) -> dict[str, Any]:
    """Moves summed over the hourly buckets. ``from`` null = a first assignment, ``to`` null
    = an erasure. The range is reported snapped to whole hours, as it was counted."""
    moves: Counter[str] = Counter()
    for bucket in buckets:
        moves.update(bucket)
    counted = sorted(
        ((n, *field.partition(">")[::2]) for field, n in moves.items() if n),
        key=lambda m: (-m[0], m[1], m[2]),
    )
    return {
        "from": iso_ms(hours.start * HOUR_MS),
        "to": iso_ms(hours.stop * HOUR_MS),
        "total": sum(n for n, _, _ in counted),
        "moves": [{"from": a or None, "to": b or None, "count": n} for n, a, b in counted],
    }
