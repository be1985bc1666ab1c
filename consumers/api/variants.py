"""Which campaign arm moved customers up: a pure summary of what `rfm campaigns` recorded.

"Up" means the customer's next segment comes earlier in the scheme's rule order than the one
it left; the presets list segments from best (champions) to worst (lost), so earlier is better.
A scheme written in another order makes this figure meaningless, and the doc says how it's read.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def variants_doc(
    rules: Mapping[str, tuple[Mapping[str, int], Mapping[str, int]]], order: Sequence[str]
) -> dict[str, Any]:
    """``rules``: rule id -> (counters ``cmp:stats:<rule>``, moves ``cmp:moves:<rule>``)."""
    rank = {segment: n for n, segment in enumerate(order)}
    out: dict[str, Any] = {}
    for rule_id, (stats, moves) in sorted(rules.items()):
        arms: dict[str, dict[str, int]] = {}
        for name, n in stats.items():
            kind, _, arm = name.partition(":")
            if arm and kind in ("delivered", "dead_lettered"):
                arms.setdefault(arm, {"delivered": 0, "dead_lettered": 0, "up": 0, "down": 0})
                arms[arm][kind] += n
        for field, n in moves.items():
            arm, source, target = field.split("|", 2)
            row = arms.setdefault(arm, {"delivered": 0, "dead_lettered": 0, "up": 0, "down": 0})
            if source in rank and target in rank and rank[target] != rank[source]:
                row["up" if rank[target] < rank[source] else "down"] += n
        out[rule_id] = {"delivered": stats.get("delivered", 0), "variants": arms}
    return {"order": "segments earlier in the scheme count as up", "rules": out}
