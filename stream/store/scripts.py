"""The Lua scripts, and how a batch of calls to one of them reaches Redis.

Every write that must be atomic (a customer's commit, a publication under the lease) is a
script; the store registers each once per client and sends its calls by SHA.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from importlib import resources
from typing import Any

from redis.asyncio.cluster import RedisCluster
from redis.exceptions import NoScriptError


def source(name: str) -> str:
    """The text of ``stream/store/lua/<name>``."""
    return resources.files("stream.store").joinpath("lua", name).read_text(encoding="utf-8")


class Scripts:
    """The store's scripts registered on one client (redis-py ``Script`` objects)."""

    def __init__(self, redis: Any) -> None:
        self.redis = redis
        self.cluster = isinstance(redis, RedisCluster)
        register = redis.register_script
        self.commit = register(source("commit.lua"))
        self.load = register(source("load.lua"))
        self.standing = register(source("standing.lua"))
        self.sweep_due = register(source("sweep_due.lua"))
        self.index_members = register(source("index_members.lua"))
        self.publish_thresholds = register(source("publish_thresholds.lua"))
        self.publish_model = register(source("publish_model.lua"))
        self.release_lease = register(source("release_lease.lua"))
        self.renew_lease = register(source("renew_lease.lua"))
        self.raise_fence = register(source("raise_fence.lua"))
        self.set_under_lease = register(source("set_under_lease.lua"))
        self.positions = register(source("positions.lua"))
        self.advance_positions = register(source("advance_positions.lua"))

    async def run(self, script: Any, calls: Sequence[tuple[list[str], list[Any]]]) -> list[Any]:
        """Run ``script`` once per ``(keys, args)``. One pipelined round trip on a single
        server; concurrent calls on a cluster, whose pipelines cannot reload a script a
        restarted node has forgotten (each call routes to its own slot's node)."""
        if not calls:
            return []
        if self.cluster:
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
