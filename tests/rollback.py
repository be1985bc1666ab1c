"""Redis taken back to an earlier copy of itself, while its clients run on.

What a server restarted from an older append-only file or snapshot holds, for the keys of
one test's namespace: ``Copy.take`` keeps every key's DUMP and time to live, ``restore``
deletes what the namespace holds now and puts the copy back. The server is the shared one
and keeps running, so the processes under test keep their connections and their caches,
exactly the case of a worker that acted on the newer state and goes on after the loss.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis

from tests.ports import free_ports
from tests.support import wait_for


@dataclass(frozen=True)
class Copy:
    prefix: str
    keys: dict[bytes, tuple[bytes, int]]  # key -> (DUMP, PTTL: -1 = none)

    @classmethod
    async def take(cls, client: aioredis.Redis, prefix: str) -> Copy:
        keys: dict[bytes, tuple[bytes, int]] = {}
        async for key in client.scan_iter(match=f"{prefix}*", count=1000):
            dumped = await client.dump(key)
            if dumped is not None:
                keys[key] = (dumped, int(await client.pttl(key)))
        return cls(prefix, keys)

    async def restore(self, client: aioredis.Redis) -> None:
        now = [key async for key in client.scan_iter(match=f"{self.prefix}*", count=1000)]
        if now:
            await client.delete(*now)
        for key, (dumped, ttl) in self.keys.items():
            await client.restore(key, max(ttl, 0), dumped)


class OwnRedis:
    """A redis-server of this test's own, persisting to an append-only file in ``data``."""

    def __init__(self, tmp: Path) -> None:
        self.data = tmp / "redis-data"
        self.data.mkdir()
        self.log = tmp / "redis.log"
        (self.port,) = free_ports(1)
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        argv = [
            shutil.which("redis-server") or "redis-server",
            "--bind", "127.0.0.1",
            "--port", str(self.port),
            "--dir", str(self.data),
            "--logfile", str(self.log),
            "--appendonly", "yes",
            "--appendfsync", "everysec",
            "--save", "",
        ]  # fmt: skip
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis.from_url(self.url, socket_connect_timeout=1)

        def answers() -> bool:
            try:
                return bool(client.ping())
            except redis.RedisError:
                return False

        try:
            wait_for(answers, timeout=30, what="the test's redis-server", diagnose=self.tail)
        finally:
            client.close()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def copy_data(self, to: Path) -> None:
        """The data directory as it is now, taken while the server is stopped."""
        os.kill(self.pid, signal.SIGSTOP)
        try:
            shutil.copytree(self.data, to)
        finally:
            os.kill(self.pid, signal.SIGCONT)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def restore(self, copy: Path) -> None:
        shutil.rmtree(self.data)
        shutil.copytree(copy, self.data)

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[OwnRedis]:
    server = OwnRedis(tmp_path)
    server.start()
    try:
        yield server
    finally:
        if server.proc is not None and server.proc.poll() is None:
            server.kill()
