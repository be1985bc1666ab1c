"""Customer state: load customers with their dedupe marks, commit their transitions.

Each batch costs two round trips (one pipelined load, one pipelined commit) whatever its
size; the commit script rejects a write whose customer or thresholds moved meanwhile, and
the caller recomputes just those customers.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

from stream.core.customer import Customer
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
from stream.store.connection import StorePart
from stream.store.keys import DIMS
from stream.store.outbox import outbox_id

COMMIT_CHUNK = 500  # customers per script call: bounds how long one call blocks Redis


class ServerRestarted(RuntimeError):
    """A commit met a Redis server other than the one the batch's positions check read: it
    restarted (or a replica took over) and may have lost what came before the batch, so the
    batch is not applied there; the worker reads its input again from the positions."""


class CustomerStates(StorePart):
    async def load(self, wanted: Mapping[str, Sequence[str]]) -> dict[str, Loaded]:
        """Customers by id, each with the subset of the given event ids already applied."""
        chunks: list[list[str]] = []
        calls: list[tuple[list[str], list[Any]]] = []
        for ids in self.by_shard(wanted).values():
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
        replies = await self.scripts.run(self.scripts.load, calls)
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
        for shard, members in self.by_shard(ids).items():
            for start in range(0, len(members), COMMIT_CHUNK):
                chunk = members[start : start + COMMIT_CHUNK]
                chunks.append(chunk)
                keys = [k.due(shard)]
                for cid in chunk:
                    keys += (k.customer(cid), k.due_of(cid))
                calls.append((keys, list(chunk)))
        out: dict[str, Standing | None] = {}
        for chunk, (fields, due) in zip(
            chunks, await self.scripts.run(self.scripts.standing, calls), strict=True
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
                server = self.servers[shard] if self.servers else b""
                args = [*versions, rising, self.history_length, server]
                for i in chunk:
                    cid = commits[i].customer.customer_id
                    keys += (k.customer(cid), k.applied(cid), k.history(cid), k.due_of(cid))
                    args += commit_record(commit_doc(commits[i]))
                chunks.append((shard, chunk))
                calls.append((keys, args))
        results: list[CommitResult] = [CommitResult(False, reason="thresholds")] * len(commits)
        for (shard, chunk), reply in zip(
            chunks, await self.scripts.run(self.scripts.commit, calls), strict=True
        ):
            if int(reply[0]) != 1:
                if reply[1] in (b"restarted", "restarted"):
                    raise ServerRestarted(f"shard {shard}: its Redis server changed")
                continue
            entry = outbox_id(k, shard, reply[2]) if reply[2] else None
            for i, one in zip(chunk, reply[1], strict=True):
                if int(one) == 1:
                    results[i] = CommitResult(True, outbox_id=entry)
                else:
                    results[i] = CommitResult(False, reason="version")
        return results

    async def customer(self, customer_id: str) -> Customer | None:
        fields = await self.redis.hgetall(self.keys.customer(customer_id))
        return decode_customer(customer_id, fields) if fields else None

    async def scan_customer_ids(self, count: int = 1000) -> AsyncIterator[str]:
        """Every customer id (on a cluster, every primary is scanned)."""
        async for key in self.redis.scan_iter(match=self.keys.customer_pattern, count=count):
            yield self.keys.customer_id_of(key)

    async def customer_pages(self, page: int = 500) -> AsyncIterator[list[Customer]]:
        """Every stored customer, a page at a time (SCAN + one pipelined HGETALL per page):
        memory stays flat whatever the population. SCAN returns every customer present for
        the whole iteration at least once; one erased meanwhile is skipped."""
        ids: list[str] = []
        async for cid in self.scan_customer_ids():
            ids.append(cid)
            if len(ids) >= page:
                yield await self._page(ids)
                ids = []
        if ids:
            yield await self._page(ids)

    async def _page(self, ids: list[str]) -> list[Customer]:
        pipe = self.redis.pipeline(transaction=False)
        for cid in ids:
            pipe.hgetall(self.keys.customer(cid))
        replies = await pipe.execute()
        return [decode_customer(cid, f) for cid, f in zip(ids, replies, strict=True) if f]

    async def lifetimes(self, page: int = 1000) -> AsyncIterator[Customer]:
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
