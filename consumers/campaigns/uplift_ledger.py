"""What a rule with a hold-out records for measuring uplift, in Redis beside the ledger.

- ``cmp:measure:<rule>``: hash ``holdout``, ``window_s``: what the running rule file
  declares, written at start-up, so the report can say which window it counts.
- ``cmp:assign:<rule>``: hash customer -> ``{"arm", "at", "segment"}`` (JSON): the arm the
  customer was put in (``control`` or the variant, ``treated`` without variants), when
  (the triggering event's time, epoch ms: the same when it is read again after a replay)
  and the segment then. ``HSETNX``: the first assignment wins.
- ``cmp:tally:<rule>``: hash ``o|<customer>`` -> orders and ``r|<customer>`` -> revenue in
  minor units (refunds of counted orders subtract) in the rule's window after assignment,
  and ``m|<customer>`` -> the segment moves then (``from>to;...``, ``-`` for none).
- ``cmp:marks:<rule>:<customer>``: hash ``e:<o|m>:<event id>`` -> this event was counted
  (or was the assigning one), so an event read again (a crash before the offsets were
  committed, a Redis that lost its tail and replays from ``cmp:positions``) never counts
  twice; ``b:<order id>`` -> minor units of a counted order not yet refunded (``x`` once
  refunded in full), so a completion re-sent under a new event id is not a second
  purchase. One hash per customer, so an erasure deletes every mark with it.

Each event is counted for every measured rule in one script call
(``lua/count_uplift.lua``), so the check and the counts land together or not at all,
before the batch raises the input positions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib.resources import files
from typing import Any

import orjson
import redis.asyncio as aioredis

from consumers.campaigns.ledger import CampaignKeys
from consumers.campaigns.rules import CampaignRule

_COUNT = (files("consumers.campaigns") / "lua" / "count_uplift.lua").read_text(encoding="utf-8")


@dataclass(frozen=True, slots=True)
class Assignment:
    arm: str
    at_ms: int
    segment: str | None


def assignment_doc(assignment: Assignment) -> bytes:
    return orjson.dumps(
        {"arm": assignment.arm, "at": assignment.at_ms, "segment": assignment.segment}
    )


def parse_assignment(raw: bytes | str) -> Assignment:
    doc = orjson.loads(raw)
    return Assignment(str(doc["arm"]), int(doc["at"]), doc.get("segment"))


def move_text(from_segment: str | None, to_segment: str | None) -> str:
    return f"{from_segment or '-'}>{to_segment or '-'}"


class UpliftLedger:
    """Assignments of the measured rules and the orders and moves after them."""

    def __init__(
        self,
        redis: aioredis.Redis,
        keys: CampaignKeys,
        rules: Sequence[CampaignRule],
        remember_s: float,
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.rules = [r for r in rules if r.measured]
        longest = max((r.uplift_window_s for r in self.rules), default=0.0)
        # a refund may come at the end of the window; a replay within the dedupe window
        self.ttl_ms = max(1000, int(max(remember_s, longest) * 1000))
        self.script = redis.register_script(_COUNT)
        self.declared = not self.rules

    async def declare(self) -> None:
        """Record each measured rule's hold-out and window as the rule file says now (once
        per run; before the first batch, so a Redis down at start-up is retried with it)."""
        if self.declared:
            return
        async with self.redis.pipeline(transaction=True) as tx:
            for rule in self.rules:
                tx.hset(
                    self.keys.measure(rule.id),
                    mapping={"holdout": str(rule.holdout), "window_s": repr(rule.uplift_window_s)},
                )
            await tx.execute()
        self.declared = True

    async def arm_of(self, rule_id: str, customer_id: str) -> str | None:
        raw = await self.redis.hget(self.keys.assignments(rule_id), customer_id)
        return None if raw is None else parse_assignment(raw).arm

    async def assign(
        self,
        rule_id: str,
        customer_id: str,
        assignment: Assignment,
        event_id: str,
        kind: str,
    ) -> bool:
        """First assignment wins (True if this was it); the assigning event itself is never
        counted as an outcome (``kind``: ``m`` a change, ``o`` an order)."""
        marks = self.keys.marks(rule_id, customer_id)
        async with self.redis.pipeline(transaction=True) as tx:
            tx.hsetnx(self.keys.assignments(rule_id), customer_id, assignment_doc(assignment))
            tx.hsetnx(marks, f"e:{kind}:{event_id}", "1")
            tx.pexpire(marks, self.ttl_ms)
            new, _, _ = await tx.execute()
        return bool(new)

    async def count(
        self, customer_id: str, event_id: str, kind: str, value: str, at_ms: int, order_id: str = ""
    ) -> int:
        """Count one event for every measured rule the customer is assigned in; how many.

        ``kind``: ``c`` completion, ``r`` refund, ``f`` full refund (``value``: minor units,
        ``order_id``: the order bought or refunded), ``m`` segment move (``value``:
        ``move_text``)."""
        if not self.rules:
            return 0
        keys: list[str] = []
        windows: list[int] = []
        for rule in self.rules:
            keys += [
                self.keys.assignments(rule.id),
                self.keys.tally(rule.id),
                self.keys.marks(rule.id, customer_id),
            ]
            windows.append(int(rule.uplift_window_s * 1000))
        args: list[str | int] = [customer_id, kind, value, at_ms, self.ttl_ms, order_id, event_id]
        args += windows
        return int(await self.script(keys=keys, args=args))

    async def forget(self, customer_id: str) -> None:
        """Erasure: the customer's assignment, tallies and marks go (the report loses them
        too), in every rule ever measured here: one whose hold-out was since set to 0, or
        that left the rule file, still holds them."""
        rule_ids = set(await measured_rules(self.redis, self.keys))
        rule_ids.update(r.id for r in self.rules)
        if not rule_ids:
            return
        async with self.redis.pipeline(transaction=True) as tx:
            for rule_id in sorted(rule_ids):
                tx.hdel(self.keys.assignments(rule_id), customer_id)
                tx.hdel(self.keys.tally(rule_id), *(f"{k}|{customer_id}" for k in "orm"))
                tx.delete(self.keys.marks(rule_id, customer_id))
            await tx.execute()


Raw = Mapping[Any, Any]


async def read_rule(redis: Any, keys: CampaignKeys, rule_id: str) -> tuple[Raw, Raw, Raw]:
    """(declared, assignments, tally) of one rule, read in one MULTI so they agree."""
    async with redis.pipeline(transaction=True) as tx:
        tx.hgetall(keys.measure(rule_id))
        tx.hgetall(keys.assignments(rule_id))
        tx.hgetall(keys.tally(rule_id))
        declared, assigned, tally = await tx.execute()
    return declared, assigned, tally


async def measured_rules(redis: Any, keys: CampaignKeys) -> list[str]:
    """Ids of the rules ever run with a hold-out, sorted."""
    start = len(keys.prefix) + len("cmp:measure:")
    found = {
        (k.decode() if isinstance(k, bytes) else k)[start:]
        async for k in redis.scan_iter(match=keys.measure_pattern, count=500)
    }
    return sorted(found)
