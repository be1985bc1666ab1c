"""The outbox: changes a commit recorded with its customer, until they are published.

A commit writes its customers' changes into its shard's stream in the same script call;
the processor deletes the entry once the broker has them, and any process publishes what a
dead one left behind (at-least-once). Entry ids name their shard when the layout is sharded.
"""

from __future__ import annotations

from collections.abc import Sequence

from stream.store.connection import StorePart
from stream.store.keys import Keys


def outbox_id(keys: Keys, shard: int, entry_id: bytes) -> bytes:
    """The id callers see for an entry of ``shard``'s stream."""
    return f"{shard}/".encode() + entry_id if keys.sharded else entry_id


def _split(keys: Keys, oid: bytes) -> tuple[int, bytes]:
    if not keys.sharded:
        return 0, oid
    shard, _, entry_id = oid.partition(b"/")
    return int(shard), entry_id


class Outbox(StorePart):
    async def outbox_older_than(
        self, max_id_ms: int, count: int = 10
    ) -> list[tuple[bytes, str, bytes]]:
        """The changes of outbox entries created before ``max_id_ms`` (at most ``count``
        entries per shard): (entry id, customer id, change JSON), an entry id once per
        change it holds."""
        pipe = self.redis.pipeline(transaction=False)
        for s in self.keys.all_shards:
            pipe.xrange(self.keys.outbox(s), "-", f"{max_id_ms}", count=count)
        out = []
        for s, raw in zip(self.keys.all_shards, await pipe.execute(), strict=True):
            for eid, fields in raw:
                oid = outbox_id(self.keys, s, eid)
                for name, body in fields.items():
                    if name[:1] == b"e":  # e<k> with its customer in c<k> ("e", "c": older)
                        out.append((oid, fields[b"c" + name[1:]].decode("utf-8"), body))
        return out

    async def outbox_delete(self, ids: Sequence[bytes]) -> None:
        groups: dict[int, set[bytes]] = {}
        for oid in ids:
            shard, entry_id = _split(self.keys, oid)
            groups.setdefault(shard, set()).add(entry_id)
        for shard, entry_ids in groups.items():
            await self.redis.xdel(self.keys.outbox(shard), *entry_ids)

    async def outbox_length(self) -> int:
        pipe = self.redis.pipeline(transaction=False)
        for s in self.keys.all_shards:
            pipe.xlen(self.keys.outbox(s))
        return sum(int(n) for n in await pipe.execute())
