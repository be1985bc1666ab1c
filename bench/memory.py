"""Redis bytes per customer, from ``MEMORY USAGE`` of the namespace's own keys.

``INFO used_memory`` deltas would count whatever else the shared Redis does meanwhile, so
the bench asks about its own keys instead. Every key under the namespace's prefix is
classed by its first segment (``c`` state hash, ``h`` segment history, ``d`` dedupe marks,
``ix`` indexes, ``due``, ...); up to ``SAMPLE`` keys of each class are measured exactly and
scaled to the class's key count. New kinds of per-customer key are counted without this
module knowing them. Dedupe marks are reported apart: they expire after ``dedupe_window``
and grow with events, not customers. They live in the state hashes (``e:<event id>``
fields; the ``d`` zsets are the older layout), so their share of each sampled hash is
measured as the hash's usage minus that of a copy without them.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from stream.config import Settings
from stream.store.redis_store import connect

SAMPLE = 2000
DEDUPE = "d"
STATE = "c"


@dataclass(frozen=True)
class Memory:
    customers: int
    bytes_per_customer: float  # every class but the dedupe marks
    dedupe_bytes_per_customer: float
    parts: dict[str, float] = field(default_factory=dict)  # class -> bytes per customer


async def _usage(redis: Any, keys: list[bytes]) -> int:
    pipe = redis.pipeline(transaction=False)
    for key in keys:
        pipe.memory_usage(key, samples=0)  # 0: walk every element, exact
    return sum(int(n or 0) for n in await pipe.execute())


async def _marks_usage(redis: Any, keys: list[bytes], scratch: str) -> int:
    """Bytes the ``e:`` fields take in these hashes (same encoding, same Redis)."""
    total = 0
    for key in keys:
        fields = await redis.hgetall(key)
        rest = {k: v for k, v in fields.items() if not k.startswith(b"e:")}
        if len(rest) == len(fields):
            continue
        pipe = redis.pipeline(transaction=True)
        pipe.memory_usage(key, samples=0)
        pipe.delete(scratch)
        pipe.hset(scratch, mapping=rest)
        pipe.memory_usage(scratch, samples=0)
        pipe.delete(scratch)
        full, _, _, without, _ = await pipe.execute()
        total += int(full) - int(without)
    return total


async def measure(settings: Settings, sample: int = SAMPLE, seed: int = 7) -> Memory:
    prefix = settings.key_prefix.encode()
    redis = connect(settings.redis_url)
    try:
        classes: dict[str, list[bytes]] = {}
        async for key in redis.scan_iter(match=settings.key_prefix + "*", count=5000):
            name = key[len(prefix) :].split(b":", 1)[0].decode("utf-8", "replace")
            classes.setdefault(name, []).append(key)
        customers = len(classes.get(STATE, ()))
        if not customers:
            return Memory(0, 0.0, 0.0)
        rng = random.Random(seed)
        total: dict[str, float] = {}
        marks = 0.0
        for name, keys in classes.items():
            picked = keys if len(keys) <= sample else rng.sample(keys, sample)
            total[name] = await _usage(redis, picked) * len(keys) / len(picked)
            if name == STATE:
                scratch = f"{settings.key_prefix}bench-scratch"
                marks = await _marks_usage(redis, picked, scratch) * len(keys) / len(picked)
                total[name] -= marks
        parts = {name: b / customers for name, b in sorted(total.items(), key=lambda kv: -kv[1])}
        dedupe = parts.pop(DEDUPE, 0.0) + marks / customers
        return Memory(customers, sum(parts.values()), dedupe, parts)
    finally:
        await redis.aclose()
