"""End to end with several workers in one consumer group: what scaling out buys on this box.

The clock starts only once Kafka reports the group stable with every worker a member, so no
rebalance falls inside the timed run (a worker that joins late would stop the group for
its rebalance, and the figure would time Kafka's protocol, not the workers).
"""

from __future__ import annotations

import asyncio
import time

from aiokafka.admin import AIOKafkaAdminClient

from bench import BenchError
from stream.config import Settings
from stream.kafka import client_options
from stream.process import Children

POLL_S = 0.2


async def group_state(admin: AIOKafkaAdminClient, group_id: str) -> tuple[str, int]:
    """(state, members) of a consumer group as its coordinator reports them."""
    (response,) = await admin.describe_consumer_groups([group_id])
    group = response.to_object()["groups"][0]
    return str(group["state"]), len(group["members"])


async def wait_stable(settings: Settings, workers: Children, timeout_s: float) -> None:
    """Block until the group is ``Stable`` with every one of ``workers`` in it."""
    admin = AIOKafkaAdminClient(**client_options(settings))
    await admin.start()
    try:
        deadline = time.monotonic() + timeout_s
        wanted = len(workers.children)
        while (seen := await group_state(admin, settings.group_id)) != ("Stable", wanted):
            if not workers.alive:
                raise BenchError(
                    f"{workers.name}: one exited before the group formed\n{workers.tail()}"
                )
            if time.monotonic() > deadline:
                raise BenchError(
                    f"{workers.name}: group {settings.group_id} still {seen[0]} with"
                    f" {seen[1]} of {wanted} members after {timeout_s:.0f}s\n{workers.tail()}"
                )
            await asyncio.sleep(POLL_S)
    finally:
        await admin.close()
