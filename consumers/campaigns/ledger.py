"""What the campaign consumer remembers, in Redis under the deployment's key prefix.

- ``cmp:first:<customer>``: the event id of the customer's first completed order (SET NX).
- ``cmp:sent:<idempotency key>``: ``delivered`` or ``dead_lettered``, kept for the dedupe
  window; written before offsets are committed, so a restart skips what was already done.
- ``cmp:cool:<rule>:<customer>``: present while the (customer, rule) cooldown runs.
- ``cmp:variant:<rule>``: hash customer -> variant last delivered to them.
- ``cmp:stats:<rule>``: counters (``delivered``, ``delivered:<variant>``, ``dead_lettered``,
  ``cooldown``, ``already_done``).
- ``cmp:recent``: the latest deliveries and dead letters (JSON, newest first, capped) for the
  operator dashboard.
- ``cmp:moves:<rule>``: hash ``<variant>|<from>|<to>`` -> segment changes of customers after
  they got that variant, so a report can tell which arm moved customers up.
- ``cmp:measure:<rule>``, ``cmp:assign:<rule>``, ``cmp:tally:<rule>``,
  ``cmp:marks:<rule>:<customer>``: rules with a hold-out, for the uplift report
  (``uplift_ledger``).
- ``cmp:positions``: hash ``<topic>:<partition>`` -> the next input offset to read, raised
  once a batch's ledger writes have landed. A Redis that lost the tail of its writes lost
  this with them, so the consumer reads that tail again (``stream.worker.replay``): what
  it forgot is redone, under the same ``Idempotency-Key``.

Customer ids are untrusted; they only ever end a key or name a hash field (binary-safe).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import orjson
import redis.asyncio as aioredis

from consumers.campaigns.actions import Action
from stream.store.keys import Keys
from stream.store.positions import Positions
from stream.store.scripts import Scripts

DELIVERED = "delivered"
DEAD_LETTERED = "dead_lettered"
RECENT = 50  # deliveries the dashboard can show


def recent_entry(action: Action, outcome: str) -> bytes:
    return orjson.dumps(
        {
            "rule": action.rule_id,
            "customer_id": action.customer_id,
            "variant": action.variant,
            "outcome": outcome,
            "at": int(time.time() * 1000),
        }
    )


@dataclass(frozen=True)
class CampaignKeys:
    prefix: str = "rfm:"

    def first_order(self, customer_id: str) -> str:
        return f"{self.prefix}cmp:first:{customer_id}"

    def done(self, idempotency_key: str) -> str:
        return f"{self.prefix}cmp:sent:{idempotency_key}"

    def cooldown(self, rule_id: str, customer_id: str) -> str:
        return f"{self.prefix}cmp:cool:{rule_id}:{customer_id}"  # rule ids never hold ':'

    def variants(self, rule_id: str) -> str:
        return f"{self.prefix}cmp:variant:{rule_id}"

    def stats(self, rule_id: str) -> str:
        return f"{self.prefix}cmp:stats:{rule_id}"

    def moves(self, rule_id: str) -> str:
        return f"{self.prefix}cmp:moves:{rule_id}"

    @property
    def recent(self) -> str:
        return f"{self.prefix}cmp:recent"

    # measured rules (``uplift_ledger``)
    def measure(self, rule_id: str) -> str:
        return f"{self.prefix}cmp:measure:{rule_id}"

    def assignments(self, rule_id: str) -> str:
        return f"{self.prefix}cmp:assign:{rule_id}"

    def tally(self, rule_id: str) -> str:
        return f"{self.prefix}cmp:tally:{rule_id}"

    def marks(self, rule_id: str, customer_id: str) -> str:
        return f"{self.prefix}cmp:marks:{rule_id}:{customer_id}"  # rule ids never hold ':'

    @property
    def measure_pattern(self) -> str:
        escaped = "".join("\\" + c if c in "*?[]\\" else c for c in self.prefix)
        return f"{escaped}cmp:measure:*"


def _text(raw: bytes | str | None) -> str | None:
    return raw.decode() if isinstance(raw, bytes) else raw


def move_field(variant: str, from_segment: str | None, to_segment: str | None) -> str:
    return f"{variant}|{from_segment or '-'}|{to_segment or '-'}"


class LedgerPositions(Positions):
    """The consumer's input positions, beside its ledger (one server, so one hash)."""

    def __init__(self, redis: aioredis.Redis, keys: CampaignKeys) -> None:
        self.redis = redis
        self.keys = Keys(prefix=f"{keys.prefix}cmp:")
        self.scripts = Scripts(redis)


class Ledger:
    def __init__(self, redis: aioredis.Redis, keys: CampaignKeys, remember_s: float) -> None:
        self.redis = redis
        self.keys = keys
        self.remember_ms = max(1000, int(remember_s * 1000))

    async def claim_first_order(self, customer_id: str, event_id: str) -> bool:
        """True for the customer's first completed order, and again for re-deliveries of it.

        The marker holds the claiming event id, so a crash between claiming and delivering
        does not turn the redelivered first order into "not first" and lose the action.
        """
        key = self.keys.first_order(customer_id)
        if await self.redis.set(key, event_id, nx=True):
            return True
        return _text(await self.redis.get(key)) == event_id

    async def outcome(self, idempotency_key: str) -> str | None:
        """``delivered`` / ``dead_lettered`` if this action was already finished."""
        return _text(await self.redis.get(self.keys.done(idempotency_key)))

    async def cooling(self, rule_id: str, customer_id: str) -> bool:
        return bool(await self.redis.exists(self.keys.cooldown(rule_id, customer_id)))

    async def variant_of(self, rule_id: str, customer_id: str) -> str | None:
        return _text(await self.redis.hget(self.keys.variants(rule_id), customer_id))

    async def record_delivery(self, action: Action, cooldown_s: float) -> None:
        """Delivery mark, cooldown, variant and counters in one MULTI: all or nothing."""
        async with self.redis.pipeline(transaction=True) as tx:
            tx.set(self.keys.done(action.key), DELIVERED, px=self.remember_ms)
            if cooldown_s > 0:
                tx.set(
                    self.keys.cooldown(action.rule_id, action.customer_id),
                    action.key,
                    px=max(1, int(cooldown_s * 1000)),
                )
            stats = self.keys.stats(action.rule_id)
            tx.hincrby(stats, "delivered", 1)
            if action.variant is not None:
                tx.hset(self.keys.variants(action.rule_id), action.customer_id, action.variant)
                tx.hincrby(stats, f"delivered:{action.variant}", 1)
            tx.lpush(self.keys.recent, recent_entry(action, DELIVERED))
            tx.ltrim(self.keys.recent, 0, RECENT - 1)
            await tx.execute()

    async def record_dead_letter(self, action: Action) -> None:
        async with self.redis.pipeline(transaction=True) as tx:
            tx.set(self.keys.done(action.key), DEAD_LETTERED, px=self.remember_ms)
            tx.hincrby(self.keys.stats(action.rule_id), "dead_lettered", 1)
            if action.variant is not None:
                tx.hincrby(self.keys.stats(action.rule_id), f"dead_lettered:{action.variant}", 1)
            tx.lpush(self.keys.recent, recent_entry(action, DEAD_LETTERED))
            tx.ltrim(self.keys.recent, 0, RECENT - 1)
            await tx.execute()

    async def count(self, rule_id: str, name: str) -> None:
        await self.redis.hincrby(self.keys.stats(rule_id), name, 1)

    async def record_moves(
        self,
        rule_ids: Sequence[str],
        customer_id: str,
        from_segment: str | None,
        to_segment: str | None,
    ) -> None:
        """Count a segment change against each variant the customer was given earlier."""
        if not rule_ids:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for rule_id in rule_ids:
                pipe.hget(self.keys.variants(rule_id), customer_id)
            given = await pipe.execute()
        async with self.redis.pipeline(transaction=False) as pipe:
            for rule_id, variant in zip(rule_ids, given, strict=True):
                if variant is not None:
                    field = move_field(variant.decode(), from_segment, to_segment)
                    pipe.hincrby(self.keys.moves(rule_id), field, 1)
            await pipe.execute()

    async def forget(self, customer_id: str, rule_ids: Sequence[str]) -> None:
        """Erasure (SPEC section 9): drop every per-customer trace this consumer keeps."""
        async with self.redis.pipeline(transaction=True) as tx:
            tx.delete(self.keys.first_order(customer_id))
            tx.delete(self.keys.recent)  # a display feed: dropping it beats keeping the id
            for rule_id in rule_ids:
                tx.delete(self.keys.cooldown(rule_id, customer_id))
                tx.hdel(self.keys.variants(rule_id), customer_id)
            await tx.execute()
