"""Input positions kept with the state: how far each input partition has been applied.

Kafka's committed offsets say what a consumer group has acknowledged; these say what the
state holds. They differ after Redis loses the tail of its writes (``appendfsync
everysec``, a failover to a replica that lagged): Kafka's offsets are then ahead of the
state, and the positions here, lost with that tail, are not. One hash per shard, advanced
after a batch's commits have all landed (advance_positions.lua has the argument why that
keeps them truthful); a partition's safe position is the lowest over the shards.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from stream.store.connection import StorePart

# per partition field: one stored offset per shard, None where the shard holds none
Stored = dict[str, list[int | None]]
# per partition field a shard refused to advance: shard -> what it holds (None: nothing)
Behind = dict[str, dict[int, int | None]]


class Positions(StorePart):
    async def positions(self, fields: Sequence[str]) -> tuple[Stored, list[bytes]]:
        """What every shard holds for ``fields``, and each shard's server run id (to hand
        back to ``advance_positions``). One call per shard, pipelined on a single server."""
        if not fields:
            return {}, []
        calls = [([self.keys.positions(s)], list(fields)) for s in self.keys.all_shards]
        replies = await self.scripts.run(self.scripts.positions, calls)
        stored: Stored = {
            field: [int(r[n + 1]) if r[n + 1] else None for r in replies]
            for n, field in enumerate(fields)
        }
        return stored, [r[0] for r in replies]

    async def advance_positions(
        self,
        runs: Sequence[bytes],
        expected: Mapping[str, Sequence[int | None]],
        new: Mapping[str, int],
    ) -> Behind:
        """Raise each field of ``new`` in every shard, unless that shard holds less than
        ``expected`` (per shard; None = nothing known) or its server is no longer the one
        ``runs`` names. Returns, for the fields some shard refused, what each refusing
        shard holds (None: nothing)."""
        calls = []
        for s in self.keys.all_shards:
            args: list[bytes | str | int] = [runs[s] if runs else ""]
            for field, offset in new.items():
                known = expected.get(field)
                held = None if known is None else known[s]
                args += [field, "" if held is None else held, offset]
            calls.append(([self.keys.positions(s)], args))
        replies = await self.scripts.run(self.scripts.advance_positions, calls)
        behind: Behind = {}
        for s, reply in zip(self.keys.all_shards, replies, strict=True):
            for i in range(1, len(reply), 2):
                raw = reply[i + 1]
                behind.setdefault(reply[i].decode(), {})[s] = int(raw) if raw else None
        return behind
