"""The Redis adapter: load customers, commit their transitions atomically, read indexes.

Each batch costs two round trips (one pipelined load, one pipelined commit) whatever its
size; the commit script rejects a write whose customer or thresholds moved meanwhile, and
the caller recomputes just those customers.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import orjson
import redis.asyncio as aioredis

from stream.changes import SegmentChange, iso_ms
from stream.customer import Customer
from stream.prediction import Model
from stream.scoring import Thresholds, quantile_ranks
from stream.store.codec import decode_customer, diff, encode_customer, report_share
from stream.store.keys import DIMS, Keys


def _script(name: str) -> str:
    return resources.files("stream.store").joinpath("lua", name).read_text(encoding="utf-8")


def connect(url: str) -> aioredis.Redis:
    return aioredis.Redis.from_url(url, decode_responses=False, health_check_interval=30)


@dataclass
class Loaded:
    customer: Customer
    before: dict[str, str]


@dataclass
class Commit:
    customer: Customer
    before: dict[str, str]
    segment_before: str | None
    thresholds_version: int
    index: dict[str, int | None]
    due: int | None
    changes: list[SegmentChange] = field(default_factory=list)  # segment move, then churn flag
    clock: int | None = None
    erase: bool = False
    forget: bool = False  # an erasure happened: drop the dedupe marks too
    accepted: int = 0  # input events this commit applies, counted atomically with it
    check_thresholds: bool = True
    model_version: int | None = None  # fence the CLV model too (the churn flag depends on it)


@dataclass
class CommitResult:
    ok: bool
    reason: str = ""
    outbox_ids: list[bytes] = field(default_factory=list)


def history_entry(change: SegmentChange) -> str:
    """The slice of a change kept in the customer's recent history: small, since every
    customer who ever moved keeps up to HISTORY of them."""
    return orjson.dumps(
        {
            "seq": change.seq,
            "from": change.from_segment,
            "to": change.to_segment,
            "cause": change.cause,
            "at": iso_ms(change.at),
        }
    ).decode("utf-8")


COMMIT_CHUNK = 500  # customers per script call: bounds how long one call blocks Redis


def _share_deltas(
    share: list[object] | None, sign: int, agg: dict[str, int], grid: dict[str, int]
) -> None:
    if share is None:
        return
    segment, orders, monetary, channels, cell = share
    agg[f"{segment}|orders"] = agg.get(f"{segment}|orders", 0) + sign * int(str(orders))
    agg[f"{segment}|monetary"] = agg.get(f"{segment}|monetary", 0) + sign * int(str(monetary))
    assert isinstance(channels, list)
    for ch in channels:
        agg[f"{segment}|ch:{ch}"] = agg.get(f"{segment}|ch:{ch}", 0) + sign
    if cell:
        grid[str(cell)] = grid.get(str(cell), 0) + sign


def commit_doc(c: Commit) -> dict[str, Any]:
    """One customer's part of a commit script call (see commit.lua for the fields)."""
    cust = c.customer
    after = {} if c.erase else encode_customer(cust)
    sets, dels = diff(c.before, after)
    doc: dict[str, Any] = {
        "id": cust.customer_id,
        "v": str(cust.version),
        "set": sets,
        "del": dels,
        "ix": {d: (False if c.index.get(d) is None else str(c.index[d])) for d in DIMS},
        "due": False if c.due is None else str(c.due),
    }
    seg_after = None if c.erase else cust.segment
    if seg_after != c.segment_before:
        doc["seg"] = [c.segment_before or "", seg_after or ""]
    if c.changes:
        doc["out"] = [ch.encode().decode("utf-8") for ch in c.changes]
        doc["hist"] = [history_entry(ch) for ch in c.changes]
    if c.clock is not None:
        doc["clock"] = str(c.clock)
    if c.erase:
        doc["erase"] = True
    if c.erase or c.forget:
        doc["forget"] = True
    if cust.new_events:
        doc["marks"] = cust.new_events
    if c.accepted:
        doc["acc"] = str(c.accepted)
    share_before, share_after = report_share(c.before), report_share(after)
    if share_before != share_after:
        agg: dict[str, int] = {}
        grid: dict[str, int] = {}
        _share_deltas(share_before, -1, agg, grid)
        _share_deltas(share_after, 1, agg, grid)
        if deltas := {f: str(n) for f, n in agg.items() if n}:
            doc["agg"] = deltas
        if cells := {f: str(n) for f, n in grid.items() if n}:
            doc["grid"] = cells
    return doc


def thresholds_from_doc(version: int, raw: bytes | None) -> Thresholds:
    if not raw:
        return Thresholds(version=version)
    doc = orjson.loads(raw)
    return Thresholds(
        version=version,
        edges={k: tuple(v) for k, v in doc.get("edges", {}).items()},
        population=doc.get("population", {}),
        computed_at=doc.get("computed_at", 0),
    )


def thresholds_doc(t: Thresholds) -> bytes:
    return orjson.dumps(
        {
            "edges": {k: list(v) for k, v in t.edges.items()},
            "population": dict(t.population),
            "computed_at": t.computed_at,
        }
    )


@dataclass
class RedisStore:
    # Typed Any: redis-py types replies as bytes | str for either decode mode; ours is bytes only.
    redis: Any
    keys: Keys = field(default_factory=Keys)
    dedupe_ttl_ms: int = 30 * 86_400_000

    def __post_init__(self) -> None:
        self._commit = self.redis.register_script(_script("commit.lua"))
        self._load = self.redis.register_script(_script("load.lua"))
        self._publish = self.redis.register_script(_script("publish_thresholds.lua"))
        self._publish_model = self.redis.register_script(_script("publish_model.lua"))
        self._release = self.redis.register_script(_script("release_lease.lua"))
        self._renew = self.redis.register_script(_script("renew_lease.lua"))

    # ---- customers -------------------------------------------------------------------

    async def load(self, wanted: dict[str, Sequence[str]]) -> dict[str, Loaded]:
        """Customers by id, each with the subset of the given event ids already applied."""
        order = list(wanted)
        pipe = self.redis.pipeline(transaction=False)
        for start in range(0, len(order), COMMIT_CHUNK):
            chunk = order[start : start + COMMIT_CHUNK]
            keys: list[str] = []
            for cid in chunk:
                keys += (self.keys.customer(cid), self.keys.applied(cid))
            asked = orjson.dumps([list(wanted[cid]) for cid in chunk])
            await self._load(keys=keys, args=[asked], client=pipe)
        replies = [one for reply in await pipe.execute() for one in reply]
        now = time.time_ns() // 1_000_000
        out: dict[str, Loaded] = {}
        for cid, (flat, marks) in zip(order, replies, strict=True):
            stored = {flat[i]: flat[i + 1] for i in range(0, len(flat), 2)}
            customer = decode_customer(cid, stored)
            for event_id, expires in zip(wanted[cid], marks, strict=False):
                if expires is not None and int(expires) > now:
                    customer.seen_events.add(event_id)
            # as stored, so the commit writes exactly what differs (derived fields included)
            before = {k.decode("utf-8"): v.decode("utf-8") for k, v in stored.items() if k != b"v"}
            out[cid] = Loaded(customer, before)
        return out

    async def commit(self, commits: Sequence[Commit]) -> list[CommitResult]:
        """Commit customers scored against one context, in script calls of ``COMMIT_CHUNK``
        customers sent in one round trip. A customer whose stored version moved comes back
        ``ok=False, reason="version"``; if the thresholds or the model moved, every customer
        of the affected chunks comes back ``reason="thresholds"``."""
        if not commits:
            return []
        k = self.keys
        now = time.time_ns() // 1_000_000
        fixed = [
            k.thresholds,
            k.counts,
            k.outbox,
            *k.indexes,
            k.due,
            k.clock,
            k.stats,
            k.segment_report,
            k.grid,
            k.transitions(now // 3_600_000),
        ]
        head = commits[0]
        if any(
            (c.thresholds_version, c.check_thresholds, c.model_version)
            != (head.thresholds_version, head.check_thresholds, head.model_version)
            for c in commits
        ):
            raise ValueError("one commit call takes customers scored against one context")
        versions = [
            str(head.thresholds_version) if head.check_thresholds else "-1",
            "-1" if head.model_version is None else str(head.model_version),
            str(now),
            str(now + self.dedupe_ttl_ms),
        ]
        pipe = self.redis.pipeline(transaction=False)
        chunks = [commits[i : i + COMMIT_CHUNK] for i in range(0, len(commits), COMMIT_CHUNK)]
        for chunk in chunks:
            keys = list(fixed)
            docs = []
            for c in chunk:
                cid = c.customer.customer_id
                keys += (k.customer(cid), k.applied(cid), k.history(cid))
                docs.append(commit_doc(c))
            await self._commit(keys=keys, args=[*versions, orjson.dumps(docs)], client=pipe)
        results: list[CommitResult] = []
        for chunk, reply in zip(chunks, await pipe.execute(), strict=True):
            if int(reply[0]) != 1:
                results.extend(CommitResult(False, reason="thresholds") for _ in chunk)
                continue
            for one in reply[1]:
                if int(one[0]) == 1:
                    results.append(CommitResult(True, outbox_ids=list(one[1:])))
                else:
                    results.append(CommitResult(False, reason="version"))
        return results

    async def customer(self, customer_id: str) -> Customer | None:
        fields = await self.redis.hgetall(self.keys.customer(customer_id))
        return decode_customer(customer_id, fields) if fields else None

    async def scan_customer_ids(self, count: int = 1000) -> Any:
        async for key in self.redis.scan_iter(match=self.keys.customer_pattern, count=count):
            yield self.keys.customer_id_of(key)

    # ---- thresholds and indexes ------------------------------------------------------

    async def thresholds(self) -> tuple[Thresholds, Thresholds]:
        """(current, base): base is the last version every customer is settled against."""
        v, doc, base = await self.redis.hmget(self.keys.thresholds, ["v", "doc", "base"])
        version = int(v or 0)
        current = thresholds_from_doc(version, doc)
        if base:
            parsed = orjson.loads(base)
            settled = thresholds_from_doc(parsed["version"], orjson.dumps(parsed))
        else:
            settled = Thresholds(version=0)
        return current, settled

    async def model(self) -> Model | None:
        version, raw = await self.redis.hmget(self.keys.thresholds, ["mv", "model"])
        return Model.from_doc(int(version), raw) if version and raw else None

    async def model_history(self, count: int = 50) -> list[Model]:
        """Published models, newest first (the parameters of each fit, for audit)."""
        out = []
        for entry in await self.redis.lrange(self.keys.model_history, 0, count - 1):
            version, _, raw = entry.partition(b" ")
            out.append(Model.from_doc(int(version), raw))
        return out

    async def model_version(self) -> int:
        return int(await self.redis.hget(self.keys.thresholds, "mv") or 0)

    async def publish_model(self, token: str, read_version: int, model: Model) -> int:
        """Returns the new version, or -1 (lease lost) / -2 (a newer model exists)."""
        return int(
            await self._publish_model(
                keys=[self.keys.thresholds, self.keys.lease, self.keys.model_history],
                args=[token, read_version, model.doc()],
            )
        )

    async def lifetimes(self, page: int = 1000) -> Any:
        """Every customer as a ``Customer`` holding only what a CLV fit reads (segment,
        first/last order, lifetime purchases): one HMGET per customer, pipelined by page."""
        batch: list[str] = []
        async for cid in self.scan_customer_ids(count=page):
            batch.append(cid)
            if len(batch) >= page:
                for c in await self._lifetime_page(batch):
                    yield c
                batch = []
        for c in await self._lifetime_page(batch):
            yield c

    async def _lifetime_page(self, ids: list[str]) -> list[Customer]:
        if not ids:
            return []
        fields = [b"fo", b"lo", b"lt", b"sg"]
        pipe = self.redis.pipeline(transaction=False)
        for cid in ids:
            pipe.hmget(self.keys.customer(cid), fields)
        out = []
        for cid, values in zip(ids, await pipe.execute(), strict=True):
            if values[0] is not None and values[2] is None:
                # stored before lifetime statistics existed: derive them from the orders
                c = decode_customer(cid, await self.redis.hgetall(self.keys.customer(cid)))
            else:
                c = decode_customer(
                    cid, {k: v for k, v in zip(fields, values, strict=True) if v is not None}
                )
            out.append(c)
        return out

    async def fingerprint(self) -> str | None:
        raw = await self.redis.get(self.keys.scoring_fingerprint)
        return raw.decode() if raw else None

    async def set_fingerprint(self, token: str, digest: str) -> bool:
        """Record the configuration every customer is now classified with (lease holder only)."""
        async with self.redis.pipeline(transaction=True) as pipe:
            await pipe.watch(self.keys.lease)
            if await pipe.get(self.keys.lease) != token.encode():
                return False
            pipe.multi()
            pipe.set(self.keys.scoring_fingerprint, digest)
            await pipe.execute()
            return True

    async def refreshed_at(self) -> int:
        return int(await self.redis.get(self.keys.refreshed_at) or 0)

    async def fitted_at(self, default: int) -> int:
        """When the CLV model was last fitted; records ``default`` if never (the fit clock
        then starts now rather than fitting the moment a worker first starts)."""
        await self.redis.set(self.keys.fitted_at, default, nx=True)
        return int(await self.redis.get(self.keys.fitted_at) or default)

    async def mark_fitted(self, at_ms: int) -> None:
        await self.redis.set(self.keys.fitted_at, at_ms)

    async def mark_refreshed(self, at_ms: int) -> None:
        await self.redis.set(self.keys.refreshed_at, at_ms)

    async def thresholds_version(self) -> int:
        return int(await self.redis.hget(self.keys.thresholds, "v") or 0)

    async def quantile_edges(
        self, buckets: int
    ) -> tuple[dict[str, tuple[int, ...]], dict[str, int]]:
        """Current population edges: B-1 rank look-ups per dimension, O(B log N)."""
        pipe = self.redis.pipeline(transaction=False)
        for d in DIMS:
            pipe.zcard(self.keys.index(d))
        sizes = [int(n) for n in await pipe.execute()]
        pipe = self.redis.pipeline(transaction=False)
        for d, n in zip(DIMS, sizes, strict=True):
            for rank in quantile_ranks(n, buckets) if n else []:
                pipe.zrange(self.keys.index(d), rank, rank, withscores=True)
        replies = iter(await pipe.execute())
        edges: dict[str, tuple[int, ...]] = {}
        for d, n in zip(DIMS, sizes, strict=True):
            if n:
                edges[d] = tuple(int(next(replies)[0][1]) for _ in range(buckets - 1))
        return edges, dict(zip(DIMS, sizes, strict=True))

    async def members_in(
        self, dim: str, ranges: Iterable[tuple[float, float]], page: int = 5000
    ) -> set[str]:
        """Customers whose index value lies in any ``(lo, hi]``: cost follows the answer."""
        found: set[str] = set()
        for lo, hi in ranges:
            offset = 0
            hi_s = "+inf" if hi == float("inf") else str(int(hi))
            lo_s = "-inf" if lo == float("-inf") else f"({int(lo)}"
            while True:
                batch = await self.redis.zrangebyscore(
                    self.keys.index(dim), lo_s, hi_s, start=offset, num=page
                )
                found.update(b.decode("utf-8") for b in batch)
                if len(batch) < page:
                    break
                offset += page
        return found

    async def due_before(self, now: int, limit: int = 10_000) -> list[str]:
        raw = await self.redis.zrangebyscore(self.keys.due, "-inf", now, start=0, num=limit)
        return [b.decode("utf-8") for b in raw]

    async def event_clock(self) -> int:
        return int(await self.redis.get(self.keys.clock) or 0)

    # ---- refresh lease and versioned publication -------------------------------------

    async def acquire_lease(self, ttl_ms: int) -> str | None:
        token = secrets.token_hex(8)
        ok = await self.redis.set(self.keys.lease, token, nx=True, px=ttl_ms)
        return token if ok else None

    async def renew_lease(self, token: str, ttl_ms: int) -> bool:
        return bool(await self._renew(keys=[self.keys.lease], args=[token, ttl_ms]))

    async def release_lease(self, token: str) -> None:
        await self._release(keys=[self.keys.lease], args=[token])

    async def publish_thresholds(self, token: str, read_version: int, t: Thresholds) -> int:
        """Returns the new version, or -1 (lease lost) / -2 (a newer version exists)."""
        return int(
            await self._publish(
                keys=[self.keys.thresholds, self.keys.lease],
                args=[token, read_version, "doc", thresholds_doc(t)],
            )
        )

    async def settle_thresholds(self, token: str, t: Thresholds) -> int:
        doc = orjson.loads(thresholds_doc(t))
        doc["version"] = t.version
        return int(
            await self._publish(
                keys=[self.keys.thresholds, self.keys.lease],
                args=[token, t.version, "base", orjson.dumps(doc)],
            )
        )

    # ---- counts, stats, outbox --------------------------------------------------------

    async def counts(self) -> dict[str, int]:
        raw = await self.redis.hgetall(self.keys.counts)
        return {k.decode(): int(v) for k, v in raw.items() if int(v)}

    async def add_stats(self, **deltas: int) -> None:
        pipe = self.redis.pipeline(transaction=False)
        for name, n in deltas.items():
            if n:
                pipe.hincrby(self.keys.stats, name, n)
        await pipe.execute()

    async def stats(self) -> dict[str, int]:
        raw = await self.redis.hgetall(self.keys.stats)
        return {k.decode(): int(v) for k, v in raw.items()}

    async def outbox_older_than(
        self, max_id_ms: int, count: int = 1000
    ) -> list[tuple[bytes, str, bytes]]:
        """Outbox entries created before ``max_id_ms``: (entry id, customer id, change JSON)."""
        raw = await self.redis.xrange(self.keys.outbox, "-", f"{max_id_ms}", count=count)
        return [(eid, f[b"c"].decode("utf-8"), f[b"e"]) for eid, f in raw]

    async def outbox_delete(self, ids: Sequence[bytes]) -> None:
        if ids:
            await self.redis.xdel(self.keys.outbox, *ids)

    async def outbox_length(self) -> int:
        return int(await self.redis.xlen(self.keys.outbox))
