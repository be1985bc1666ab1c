"""``Pipelined`` on a real Redis: concurrent callers share one pipeline per loop turn and
each gets its own reply; a command's error reaches its caller only; a caller that gives
up does not disturb the others; a Redis that is gone fails every caller, nothing hangs."""

from __future__ import annotations

import asyncio
import secrets

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from stream.collect.pipelined import Pipelined
from tests.conftest import Infra
from tests.ports import free_ports

pytestmark = pytest.mark.integration


class Counting:
    """A client that counts the pipelines sent through it (the real client underneath)."""

    def __init__(self, client: aioredis.Redis) -> None:
        self.client = client
        self.pipelines = 0

    def pipeline(self, transaction: bool = True) -> object:
        self.pipelines += 1
        return self.client.pipeline(transaction=transaction)


def test_callers_of_one_turn_share_a_pipeline_and_get_their_own_replies(infra: Infra) -> None:
    asyncio.run(_share(infra.redis_url))


def test_a_redis_that_is_gone_fails_every_caller() -> None:
    asyncio.run(_gone())


async def _share(redis_url: str) -> None:
    client = aioredis.Redis.from_url(redis_url)
    prefix = f"pipelined:{secrets.token_hex(4)}:"
    counting = Counting(client)
    pipelined = Pipelined(counting)
    try:
        keys = [f"{prefix}{i}" for i in range(200)]
        await client.set(keys[7], b"x")
        await client.hset(f"{prefix}hash", "f", "v")
        found = await asyncio.gather(*(pipelined.call("exists", key) for key in keys))
        assert found == [int(i == 7) for i in range(200)]
        assert counting.pipelines == 1

        set_first = await asyncio.gather(
            *(pipelined.call("set", key, b"1", nx=True, px=60_000) for key in keys[:10])
        )
        assert set_first == [True] * 7 + [None] + [True] * 2  # key 7 was there: NX refuses

        wrong_type = pipelined.call("incr", f"{prefix}hash")  # INCR of a hash: an error
        fine = pipelined.call("get", keys[7])
        with pytest.raises(ResponseError):
            await wrong_type
        assert await fine == b"x"

        gave_up = pipelined.call("get", keys[0])
        gave_up.cancel()  # its caller's deadline passed before the reply
        assert await pipelined.call("get", keys[1]) == b"1"
        assert gave_up.cancelled()
    finally:
        await client.delete(*[k async for k in client.scan_iter(f"{prefix}*")])
        await client.aclose()


async def _gone() -> None:
    (port,) = free_ports(1)
    client = aioredis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=1)
    pipelined = Pipelined(client)
    try:
        calls = [pipelined.call("exists", f"k{i}") for i in range(5)]
        results = await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), 10)
        assert all(isinstance(r, RedisConnectionError) for r in results), results
    finally:
        await client.aclose()
