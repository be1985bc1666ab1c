"""What one worker knows of the input positions the state holds, and when to re-read.

Redis keeps, per shard, the next offset to read of each input partition, advanced once a
batch's commits have all landed (``stream.store.positions``). A worker remembers what it
last saw or wrote there. Whenever a shard is found holding less, that shard lost writes it
had acknowledged, commits included, and the partition must be read again from the lowest
position any shard holds; deduplication by event id makes the overlap harmless. A
partition first seen (after an assignment) is read again from there when that is behind
where the consumer starts (Kafka's committed offset). No position anywhere (a fresh
deployment, or one that ran before positions were kept) leaves the consumer where it is.
"""

from __future__ import annotations

from collections.abc import Sequence


def field_of(topic: str, partition: int) -> str:
    """A partition's name in the positions hashes (Kafka topic names hold no ``:``)."""
    return f"{topic}:{partition}"


def _lost(held: int | None, stored: int | None) -> bool:
    """A shard holds less than it was known to: it lost acknowledged writes."""
    return held is not None and (stored is None or stored < held)


class Ledger:
    """Per partition and shard, the position this worker knows the shard to hold."""

    def __init__(self, shards: int) -> None:
        self.shards = shards
        self.held: dict[str, list[int | None]] = {}
        # the lowest offset read since the partition was first seen: where to go back to when
        # a shard lost even the first position written (nothing lower is known to be needed)
        self.floor: dict[str, int] = {}

    def forget(self) -> None:
        """After a rebalance: every partition is checked again when it is next read."""
        self.held.clear()
        self.floor.clear()

    def check(self, field: str, stored: Sequence[int | None], first: int) -> int | None:
        """Before applying events of ``field`` from offset ``first``, given what each shard
        holds now: the offset to read again from, or None to go on."""
        held = self.held.get(field)
        if held is None:
            self.held[field] = list(stored)
            present = [p for p in stored if p is not None]
            safe = min(present) if present else None
            self.floor[field] = first if safe is None else min(first, safe)
            return safe if safe is not None and safe < first else None
        lost = {s: stored[s] for s in range(self.shards) if _lost(held[s], stored[s])}
        if not lost:
            return None
        target = self.behind(field, lost)
        return target if target < first else None

    def behind(self, field: str, lost: dict[int, int | None]) -> int:
        """Shards found holding less than known (shard -> what it holds): the offset to read
        ``field`` again from. What they hold is known from now on."""
        held = self.held.setdefault(field, [None] * self.shards)
        floor = self.floor.get(field, 0)
        for s, stored in lost.items():
            held[s] = stored
        target = min(floor if stored is None else stored for stored in lost.values())
        self.floor[field] = min(floor, target)
        return target

    def advanced(self, field: str, new: int) -> None:
        """Every shard that did not refuse now holds ``new`` or more."""
        held = self.held.setdefault(field, [None] * self.shards)
        for s, known in enumerate(held):
            held[s] = new if known is None else max(known, new)

    def expected(self, field: str) -> list[int | None] | None:
        return self.held.get(field)
