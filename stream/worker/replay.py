"""A consumer's input positions in Redis: checked before each batch, advanced after it.

A batch is applied only when no shard has lost positions it acknowledged (else the events
after the loss would be applied before the lost ones are again: a refund before its lost
order). Once the batch's commits have all landed, every shard records, per input partition
of the batch, the next offset to read. A partition found behind, either way, is handed back
as the offset to read it again from; the worker then drops what it holds of that partition
and seeks there (``stream.worker.app.Batches``). The campaign consumer keeps its own
positions the same way, next to its ledger (``consumers.campaigns.runner``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from stream.core.positions import Ledger, field_of
from stream.store.positions import Positions

Rewinds = dict[tuple[str, int], int]  # (topic, partition) -> offset to read again from


class Record(Protocol):
    """Where a record was read: the worker's records and aiokafka's both say."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...


def ranges(records: Sequence[Record]) -> dict[tuple[str, int], tuple[int, int]]:
    """Per partition of ``records``: its lowest offset and its highest plus one."""
    bounds: dict[tuple[str, int], list[int]] = {}
    for r in records:
        tp = (r.topic, r.partition)
        offset = r.offset
        known = bounds.get(tp)
        if known is None:
            bounds[tp] = [offset, offset]
        elif offset > known[1]:
            known[1] = offset
        elif offset < known[0]:
            known[0] = offset
    return {tp: (low, high + 1) for tp, (low, high) in bounds.items()}


class Replay:
    def __init__(self, store: Positions) -> None:
        self.store = store
        self.ledger = Ledger(store.keys.shards)
        self.runs: list[bytes] = []  # each shard's server as the last check found it
        # set by ``before`` when a shard's server is not the one the previous check found
        # (it restarted or failed over, and may have lost what this process cached from it),
        # and at the first check: the periodic round may have cached from a server since gone
        self.restarted = False

    def forget(self) -> None:
        """After a rebalance: the next batch checks each of its partitions afresh."""
        self.ledger.forget()

    async def before(self, records: Sequence[Record]) -> Rewinds:
        """The partitions of ``records`` to read again, and from where, before applying."""
        spans = ranges(records)
        fields = {tp: field_of(*tp) for tp in spans}
        previous = self.runs
        stored, self.runs = await self.store.positions(list(fields.values()))
        self.restarted = previous != self.runs
        out: Rewinds = {}
        for tp, (first, _end) in spans.items():
            target = self.ledger.check(fields[tp], stored[fields[tp]], first)
            if target is not None:
                out[tp] = target
        return out

    async def after(self, records: Sequence[Record]) -> Rewinds:
        """Once ``records`` (checked by ``before``) are applied: advance every shard; the
        partitions some shard refused (it lost writes, or restarted, since), to read again."""
        spans = ranges(records)
        fields = {tp: field_of(*tp) for tp in spans}
        expected = {}
        for field in fields.values():
            known = self.ledger.expected(field)
            if known is not None:
                expected[field] = known
        new = {fields[tp]: end for tp, (_first, end) in spans.items()}
        behind = await self.store.advance_positions(self.runs, expected, new)
        out: Rewinds = {}
        for tp, field in fields.items():
            if field in behind:
                out[tp] = self.ledger.behind(field, behind[field])
            else:
                self.ledger.advanced(field, new[field])
        return out
