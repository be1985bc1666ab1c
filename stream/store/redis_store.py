"""The Redis adapter: load customers, commit their transitions atomically, read indexes.

Each batch costs two round trips (one pipelined load, one pipelined commit) whatever its
size; the commit script rejects a write whose customer or thresholds moved meanwhile, and
the caller recomputes just those customers.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import NoScriptError

from stream.clv.prediction import Model
from stream.config import Settings
from stream.core.customer import Customer
from stream.core.scoring import Thresholds, quantile_ranks
from stream.store.buckets import Census, encode
from stream.store.codec import decode_customer
from stream.store.commits import (
    Commit,
    CommitResult,
    Loaded,
    Standing,
    commit_doc,
    commit_record,
    loaded_from_reply,
    standing_from_reply,
)
from stream.store.keys import DIMS, Keys, LayoutMismatch
from stream.store.wire import pack_with_hiredis


def _script(name: str) -> str:
    return resources.files("stream.store").joinpath("lua", name).read_text(encoding="utf-8")


def connect(url: str, *, cluster: bool = False, **options: Any) -> Any:
    """A client for one server, or for a Redis Cluster (any node's URL; slots are discovered)."""
    if cluster:
        return RedisCluster.from_url(url, decode_responses=False, **options)
    return pack_with_hiredis(
        aioredis.Redis.from_url(
            url, decode_responses=False, **{"health_check_interval": 30, **options}
        )
    )


def open_store(settings: Settings, **options: Any) -> RedisStore:
    """The store a process of this deployment uses: its URL, prefix, shards and dedupe window."""
    return RedisStore(
        connect(settings.redis_url, cluster=settings.redis_cluster, **options),
        Keys(settings.key_prefix, settings.redis_shards),
    )


COMMIT_CHUNK = 500  # customers per script call: bounds how long one call blocks Redis


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
class _RankSearch:
    """Bisection for the value at ``rank`` (0-based) of one dimension across shards."""

    dim: str
    rank: int
    lo: int  # fewer than rank + 1 values are <= lo
    hi: int  # at least rank + 1 values are <= hi

    @property
    def mid(self) -> int:
        return (self.lo + self.hi) // 2


def _int_hash(raw: dict[bytes, bytes]) -> dict[str, int]:
    return {k.decode("utf-8"): int(v) for k, v in raw.items()}


def _add_into(total: dict[str, int], part: dict[str, int]) -> None:
    for k, v in part.items():
        total[k] = total.get(k, 0) + v


@dataclass
class RedisStore:
    """Every read and write of the scorer's state. Sharded layouts (``Keys.shards > 1``) run
    each script once per shard touched and merge per-shard aggregates on read, so callers
    see one store whatever the layout."""

    # Typed Any: redis-py types replies as bytes | str for either decode mode; ours is bytes only.
    redis: Any
    keys: Keys = field(default_factory=Keys)

    def __post_init__(self) -> None:
        self._commit = self.redis.register_script(_script("commit.lua"))
        self._load = self.redis.register_script(_script("load.lua"))
        self._standing = self.redis.register_script(_script("standing.lua"))
        self._sweep_due = self.redis.register_script(_script("sweep_due.lua"))
        self._index_members = self.redis.register_script(_script("index_members.lua"))
        self._publish = self.redis.register_script(_script("publish_thresholds.lua"))
        self._publish_model = self.redis.register_script(_script("publish_model.lua"))
        self._release = self.redis.register_script(_script("release_lease.lua"))
        self._renew = self.redis.register_script(_script("renew_lease.lua"))
        self._raise_fence = self.redis.register_script(_script("raise_fence.lua"))
        self._set_under_lease = self.redis.register_script(_script("set_under_lease.lua"))
        self._cluster = isinstance(self.redis, RedisCluster)

    async def aclose(self) -> None:
        await self.redis.aclose()

    async def _run_scripts(self, script: Any, calls: Sequence[tuple[list[str], list[Any]]]) -> list:
        """Run ``script`` once per ``(keys, args)``. One pipelined round trip on a single
        server; concurrent calls on a cluster, whose pipelines cannot reload a script a
        restarted node has forgotten (each call routes to its own slot's node)."""
        if not calls:
            return []
        if self._cluster:
            return list(
                await asyncio.gather(*(script(keys=keys, args=args) for keys, args in calls))
            )
        for attempt in (1, 2):
            # EVALSHA straight into the pipeline: redis-py's Script objects make a pipeline
            # ask SCRIPT EXISTS first, one more round trip per call in the hot path.
            pipe = self.redis.pipeline(transaction=False)
            for keys, args in calls:
                pipe.evalsha(script.sha, len(keys), *keys, *args)
            try:
                return list(await pipe.execute())
            except NoScriptError:  # a restarted Redis forgot it: no call of this batch ran
                if attempt == 2:
                    raise
                await self.redis.script_load(script.script)
        raise AssertionError("unreachable")

    def _by_shard(self, ids: Iterable[str]) -> dict[int, list[str]]:
        groups: dict[int, list[str]] = {}
        for cid in ids:
            groups.setdefault(self.keys.shard_of(cid), []).append(cid)
        return groups

    async def check_layout(self, *, record: bool = True) -> None:
        """Refuse to run with another shard count than the data was written with (every
        customer would be looked for in the wrong shard). Writers record the count the first
        time; data from before the record existed tells its layout by its key names."""
        k = self.keys
        stored = await self.redis.get(k.layout)
        if stored is None:
            if await self.redis.exists(f"{k.prefix}thresholds{{g}}"):
                found: int | None = -1  # sharded data, count unknown
            elif await self.redis.exists(f"{k.prefix}thresholds") or await self.redis.exists(
                f"{k.prefix}counts"
            ):
                found = 1
            else:
                found = None
            if found == -1 and not k.sharded:
                raise LayoutMismatch(
                    f"RFM_REDIS_SHARDS: the data under prefix {k.prefix!r} is sharded, "
                    "this process is configured with 1 shard"
                )
            if found is None or found == -1:
                found = k.shards
            if record:
                await self.redis.set(k.layout, found, nx=True)
                stored = await self.redis.get(k.layout)
            else:
                stored = found
        if int(stored) != k.shards:
            raise LayoutMismatch(
                f"RFM_REDIS_SHARDS: the data under prefix {k.prefix!r} was written "
                f"with {int(stored)} shard(s), this process is configured with {k.shards}"
            )

    # ---- customers -------------------------------------------------------------------

    async def load(self, wanted: Mapping[str, Sequence[str]]) -> dict[str, Loaded]:
        """Customers by id, each with the subset of the given event ids already applied."""
        chunks: list[list[str]] = []
        calls: list[tuple[list[str], list[Any]]] = []
        for ids in self._by_shard(wanted).values():
            for start in range(0, len(ids), COMMIT_CHUNK):
                chunk = ids[start : start + COMMIT_CHUNK]
                keys: list[str] = []
                args: list[Any] = []
                for cid in chunk:
                    keys += (self.keys.customer(cid), self.keys.applied(cid))
                    asked = wanted[cid]
                    args.append(len(asked))
                    args += asked
                chunks.append(chunk)
                calls.append((keys, args))
        replies = await self._run_scripts(self._load, calls)
        now = time.time_ns() // 1_000_000
        out: dict[str, Loaded] = {}
        for chunk, reply in zip(chunks, replies, strict=True):
            for cid, (flat, marks) in zip(chunk, reply, strict=True):
                out[cid] = loaded_from_reply(cid, flat, marks, wanted[cid], now)
        return {cid: out[cid] for cid in wanted}

    async def standings(self, ids: Sequence[str]) -> dict[str, Standing | None]:
        """Customers by id as a re-score against new thresholds sees them (``None``: this
        one needs its full state, see ``standing_from_reply``)."""
        chunks: list[list[str]] = []
        calls: list[tuple[list[str], list[Any]]] = []
        k = self.keys
        for shard, members in self._by_shard(ids).items():
            for start in range(0, len(members), COMMIT_CHUNK):
                chunk = members[start : start + COMMIT_CHUNK]
                chunks.append(chunk)
                keys = [k.due(shard)]
                for cid in chunk:
                    keys += (k.customer(cid), k.due_of(cid))
                calls.append((keys, list(chunk)))
        out: dict[str, Standing | None] = {}
        for chunk, (fields, due) in zip(
            chunks, await self._run_scripts(self._standing, calls), strict=True
        ):
            for n, cid in enumerate(chunk):
                out[cid] = standing_from_reply(cid, fields[n], due[n])
        return {cid: out[cid] for cid in ids}

    async def commit(self, commits: Sequence[Commit]) -> list[CommitResult]:
        """Commit customers scored against one context, in script calls of ``COMMIT_CHUNK``
        customers of one shard. A customer whose stored version moved comes back
        ``ok=False, reason="version"``; if the thresholds or the model moved, every customer
        of the affected calls comes back ``reason="thresholds"``."""
        if not commits:
            return []
        k = self.keys
        now = time.time_ns() // 1_000_000
        hour = now // 3_600_000
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
        ]
        rising = "1" if k.sharded else "0"
        groups: dict[int, list[int]] = {}
        for i, c in enumerate(commits):
            groups.setdefault(k.shard_of(c.customer.customer_id), []).append(i)
        chunks: list[tuple[int, list[int]]] = []
        calls: list[tuple[list[str], list[Any]]] = []
        for shard, members in groups.items():
            fixed = [
                k.fence(shard),
                k.counts(shard),
                k.outbox(shard),
                *k.indexes(shard),
                k.due(shard),
                k.clock(shard),
                k.stats(shard),
                k.segment_report(shard),
                k.grid(shard),
                k.transitions(hour, shard),
                k.due_heads(shard),
                *k.index_directories(shard),
                *(k.index_sizes(d, shard) for d in DIMS),
            ]
            for start in range(0, len(members), COMMIT_CHUNK):
                chunk = members[start : start + COMMIT_CHUNK]
                keys = list(fixed)
                args = [*versions, rising]
                for i in chunk:
                    cid = commits[i].customer.customer_id
                    keys += (k.customer(cid), k.applied(cid), k.history(cid), k.due_of(cid))
                    args += commit_record(commit_doc(commits[i]))
                chunks.append((shard, chunk))
                calls.append((keys, args))
        results: list[CommitResult] = [CommitResult(False, reason="thresholds")] * len(commits)
        for (shard, chunk), reply in zip(
            chunks, await self._run_scripts(self._commit, calls), strict=True
        ):
            if int(reply[0]) != 1:
                continue
            entry = self._outbox_id(shard, reply[2]) if reply[2] else None
            for i, one in zip(chunk, reply[1], strict=True):
                if int(one) == 1:
                    results[i] = CommitResult(True, outbox_id=entry)
                else:
                    results[i] = CommitResult(False, reason="version")
        return results

    async def customer(self, customer_id: str) -> Customer | None:
        fields = await self.redis.hgetall(self.keys.customer(customer_id))
        return decode_customer(customer_id, fields) if fields else None

    async def scan_customer_ids(self, count: int = 1000) -> Any:
        """Every customer id (on a cluster, every primary is scanned)."""
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
        version = int(
            await self._publish_model(
                keys=[self.keys.thresholds, self.keys.lease, self.keys.model_history],
                args=[token, read_version, model.doc()],
            )
        )
        if version > 0:
            await self.raise_fences()
        return version

    async def raise_fences(self) -> None:
        """Sharded: bring every shard's fence up to the published versions, so no commit
        scored against an older version lands after this returns. Callers re-score after
        it; a publisher that died before it is made good by the next refresh or fit (and
        any commit made with the newer version raises its own shard's fence)."""
        if not self.keys.sharded:
            return
        v, mv = await self.redis.hmget(self.keys.thresholds, ["v", "mv"])
        args = [int(v or 0), int(mv or 0)]
        await self._run_scripts(
            self._raise_fence, [([self.keys.fence(s)], args) for s in self.keys.all_shards]
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
        return bool(
            await self._set_under_lease(
                keys=[self.keys.lease, self.keys.scoring_fingerprint], args=[token, digest]
            )
        )

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

    async def census(self) -> dict[str, list[Census]]:
        """Each shard's index of each dimension as bucket bounds and sizes (one HGETALL
        apiece: ~10,000 buckets at 1,000,000 customers; asking each bucket its ZCARD in a
        script took 40 ms a dimension)."""
        k = self.keys
        pipe = self.redis.pipeline(transaction=False)
        for d in DIMS:
            for s in k.all_shards:
                pipe.hgetall(k.index_sizes(d, s))
        replies = iter(await pipe.execute())
        return {
            d: [Census.of((b, int(n)) for b, n in next(replies).items()) for _ in k.all_shards]
            for d in DIMS
        }

    async def older_index_members(self, limit: int = 100_000) -> list[str]:
        """Up to ``limit`` customers still in the single-zset indexes of the older layout
        (a commit moves its customer out into the buckets)."""
        pipe = self.redis.pipeline(transaction=False)
        for s in self.keys.all_shards:
            for d in DIMS:
                pipe.zrange(self.keys.index(d, s), 0, limit - 1)
        found = {m.decode("utf-8"): None for reply in await pipe.execute() for m in reply}
        return list(found)[:limit]

    async def drop_older_index_entries(self, ids: Sequence[str]) -> None:
        """Remove ids from the older single-zset indexes (entries no customer backs)."""
        pipe = self.redis.pipeline(transaction=False)
        for shard, members in self._by_shard(ids).items():
            for d in DIMS:
                pipe.zrem(self.keys.index(d, shard), *members)
        await pipe.execute()

    async def quantile_edges(
        self, buckets: int
    ) -> tuple[dict[str, tuple[int, ...]], dict[str, int]]:
        """Current population edges, exact. Unsharded: the bucket census locates each of the
        B-1 ranks, one ZRANGE apiece. Sharded: the value of each rank is found by bisection
        on the value, counting ``<= x`` in every shard (whole buckets from the census, one
        ZCOUNT for the bucket that straddles x; index values are integers)."""
        censuses = await self.census()
        sizes = {d: sum(c.population for c in censuses[d]) for d in DIMS}
        if not self.keys.sharded:
            wanted: list[tuple[str, bytes, int]] = []
            for d in DIMS:
                census = censuses[d][0]
                for rank in quantile_ranks(sizes[d], buckets) if sizes[d] else []:
                    b, offset = census.locate(rank)
                    wanted.append((d, b, offset))
            pipe = self.redis.pipeline(transaction=False)
            for d, b, offset in wanted:
                pipe.zrange(self.keys.index_bucket(d, b), offset, offset, withscores=True)
            replies = iter(await pipe.execute())
            edges = {
                d: tuple(int(next(replies)[0][1]) for _ in range(buckets - 1))
                for d in DIMS
                if sizes[d]
            }
            return edges, sizes
        return await self._sharded_edges(buckets, sizes, censuses), sizes

    async def _sharded_edges(
        self, buckets: int, sizes: dict[str, int], censuses: dict[str, list[Census]]
    ) -> dict[str, tuple[int, ...]]:
        k = self.keys
        present = [d for d in DIMS if sizes[d]]
        pipe = self.redis.pipeline(transaction=False)
        for d in present:
            for s, census in zip(k.all_shards, censuses[d], strict=True):
                if census.bounds:
                    pipe.zrange(k.index_bucket(d, census.bounds[0], s), 0, 0, withscores=True)
                    pipe.zrange(k.index_bucket(d, census.bounds[-1], s), -1, -1, withscores=True)
        ends = iter(await pipe.execute())
        bounds: dict[str, tuple[int, int]] = {}
        for d in present:
            lows, highs = [], []
            for census in censuses[d]:
                if census.bounds:
                    lo, hi = next(ends), next(ends)
                    if lo and hi:  # a bucket may empty between the reads
                        lows.append(int(lo[0][1]))
                        highs.append(int(hi[0][1]))
            if lows:
                bounds[d] = (min(lows), max(highs))
        present = [d for d in present if d in bounds]
        # one search per wanted rank: count(<= lo) < rank + 1 <= count(<= hi)
        searches = [
            _RankSearch(d, rank, bounds[d][0] - 1, bounds[d][1])
            for d in present
            for rank in quantile_ranks(sizes[d], buckets)
        ]
        while open_ := [q for q in searches if q.hi - q.lo > 1]:
            pipe = self.redis.pipeline(transaction=False)
            whole: list[tuple[int, int]] = []  # (counted from whole buckets, ZCOUNTs sent)
            for q in open_:
                total = sent = 0
                for s, census in zip(k.all_shards, censuses[q.dim], strict=True):
                    counted, straddling = census.count_at_most(q.mid)
                    total += counted
                    sent += len(straddling)
                    for b in straddling:
                        pipe.zcount(k.index_bucket(q.dim, b, s), "-inf", q.mid)
                whole.append((total, sent))
            counts = iter(await pipe.execute())
            for q, (total, sent) in zip(open_, whole, strict=True):
                total += sum(int(next(counts)) for _ in range(sent))
                if total > q.rank:
                    q.hi = q.mid
                else:
                    q.lo = q.mid
        return {d: tuple(q.hi for q in searches if q.dim == d) for d in present}

    async def members_in(self, dim: str, ranges: Iterable[tuple[float, float]]) -> set[str]:
        """Customers whose index value lies in any ``(lo, hi]``: cost follows the answer
        (the buckets overlapping each range), each shard read in one step."""
        args: list[Any] = []
        for lo, hi in ranges:
            low = lo != float("-inf")
            high = hi != float("inf")
            args += (
                f"({int(lo)}" if low else "-inf",
                str(int(hi)) if high else "+inf",
                encode(int(lo) + 1) if low else b"",
                encode(int(hi) + 1) if high else b"",
            )
        if not args:
            return set()
        k = self.keys
        calls = [([k.index_directory(dim, s)], [k.index(dim, s), *args]) for s in k.all_shards]
        return {
            m.decode("utf-8")
            for reply in await self._run_scripts(self._index_members, calls)
            for m in reply
        }

    async def due_before(self, now: int, limit: int = 10_000) -> list[str]:
        """Up to ``limit`` customers the clock has reached, in no particular order: those
        still in the older single zsets, then those of the buckets whose heads have passed,
        visited by one script per shard that has any (it also corrects their heads)."""
        k = self.keys
        pipe = self.redis.pipeline(transaction=False)
        for s in k.all_shards:
            pipe.zrangebyscore(k.due(s), "-inf", now, start=0, num=limit)
            pipe.zrangebyscore(k.due_heads(s), "-inf", now, start=0, num=limit)
        replies = await pipe.execute()
        due = {m.decode("utf-8"): None for older in replies[0::2] for m in older}
        calls = [
            ([k.due_heads(s), *(b.decode("utf-8") for b in buckets)], [now, limit])
            for s, buckets in zip(k.all_shards, replies[1::2], strict=True)
            if buckets
        ]
        if len(due) < limit:
            for reply in await self._run_scripts(self._sweep_due, calls):
                due.update((m.decode("utf-8"), None) for m in reply)
        return list(due)[:limit]

    async def event_clock(self) -> int:
        pipe = self.redis.pipeline(transaction=False)
        for s in self.keys.all_shards:
            pipe.get(self.keys.clock(s))
        return max(int(raw or 0) for raw in await pipe.execute())

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
        version = int(
            await self._publish(
                keys=[self.keys.thresholds, self.keys.lease],
                args=[token, read_version, "doc", thresholds_doc(t)],
            )
        )
        if version > 0:
            await self.raise_fences()
        return version

    async def settle_thresholds(self, token: str, t: Thresholds) -> int:
        doc = orjson.loads(thresholds_doc(t))
        doc["version"] = t.version
        return int(
            await self._publish(
                keys=[self.keys.thresholds, self.keys.lease],
                args=[token, t.version, "base", orjson.dumps(doc)],
            )
        )

    # ---- aggregates: per shard on disk, summed here ----------------------------------

    async def sums(self, *hashes: Callable[[int], str]) -> list[dict[str, int]]:
        """Each named hash summed over the shards. Within a shard the hashes are read in
        one transaction, so they agree with each other (counts with money, say)."""

        async def shard(s: int) -> list[dict[bytes, bytes]]:
            pipe = self.redis.pipeline(transaction=True)
            for name in hashes:
                pipe.hgetall(name(s))
            return list(await pipe.execute())

        totals: list[dict[str, int]] = [{} for _ in hashes]
        for replies in await asyncio.gather(*map(shard, self.keys.all_shards)):
            for total, raw in zip(totals, replies, strict=True):
                _add_into(total, _int_hash(raw))
        return totals

    async def counts(self) -> dict[str, int]:
        """Live customers per segment; segments that emptied keep a 0 field and are dropped."""
        (raw,) = await self.sums(self.keys.counts)
        return {k: v for k, v in raw.items() if v}

    async def transitions(self, hours: Sequence[int]) -> list[dict[str, int]]:
        """The hourly ``"<from>><to>"`` -> moves of the given epoch hours (absent = empty)."""
        pipe = self.redis.pipeline(transaction=False)
        for hour in hours:
            for s in self.keys.all_shards:
                pipe.hgetall(self.keys.transitions(hour, s))
        replies = iter(await pipe.execute())
        out = []
        for _ in hours:
            total: dict[str, int] = {}
            for _ in self.keys.all_shards:
                _add_into(total, _int_hash(next(replies)))
            out.append(total)
        return out

    async def add_stats(self, **deltas: int) -> None:
        pipe = self.redis.pipeline(transaction=False)
        for name, n in deltas.items():
            if n:
                pipe.hincrby(self.keys.stats(0), name, n)
        await pipe.execute()

    async def stats(self) -> dict[str, int]:
        (raw,) = await self.sums(self.keys.stats)
        return raw

    def _outbox_id(self, shard: int, entry_id: bytes) -> bytes:
        return f"{shard}/".encode() + entry_id if self.keys.sharded else entry_id

    def _outbox_split(self, oid: bytes) -> tuple[int, bytes]:
        if not self.keys.sharded:
            return 0, oid
        shard, _, entry_id = oid.partition(b"/")
        return int(shard), entry_id

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
                oid = self._outbox_id(s, eid)
                for name, body in fields.items():
                    if name[:1] == b"e":  # e<k> with its customer in c<k> ("e", "c": older)
                        out.append((oid, fields[b"c" + name[1:]].decode("utf-8"), body))
        return out

    async def outbox_delete(self, ids: Sequence[bytes]) -> None:
        groups: dict[int, set[bytes]] = {}
        for oid in ids:
            shard, entry_id = self._outbox_split(oid)
            groups.setdefault(shard, set()).add(entry_id)
        for shard, entry_ids in groups.items():
            await self.redis.xdel(self.keys.outbox(shard), *entry_ids)

    async def outbox_length(self) -> int:
        pipe = self.redis.pipeline(transaction=False)
        for s in self.keys.all_shards:
            pipe.xlen(self.keys.outbox(s))
        return sum(int(n) for n in await pipe.execute())
