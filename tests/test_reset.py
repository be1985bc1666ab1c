"""`rfm reset --namespace NAME` through the real CLI, on the real Kafka and Redis: refused
while a worker of the namespace runs, asks first, then leaves no key, topic or consumer
group of it, and nothing of any other namespace moves (one whose name extends it included).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import redis
from aiokafka.admin import AIOKafkaAdminClient

from stream.config import Settings, settings_from
from stream.kafka import client_options, delete_topics, ensure_topics
from stream.namespace import Namespace
from stream.process import stop_all
from stream.shell.processor import wall_ms
from stream.store.redis_store import open_store
from tests.api_support import order
from tests.conftest import Infra
from tests.support import WorkerProcess, produce, wait_for

pytestmark = pytest.mark.integration


def _env(infra: Infra, ns: Namespace, tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RFM_")}
    env.update(ns.env)
    env.update(
        {
            "RFM_KAFKA_BOOTSTRAP": infra.bootstrap,
            "RFM_REDIS_URL": infra.redis_url,
            "RFM_PARTITIONS": "2",
            "PYTHONUNBUFFERED": "1",
            "XDG_CACHE_HOME": str(tmp / "cache"),
        }
    )
    return env


def _reset(
    env: dict[str, str], name: str, *flags: str, answer: str = ""
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stream.cli", "reset", "--namespace", name, *flags],
        env=env,
        input=answer,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _keys(infra: Infra, ns: Namespace) -> set[bytes]:
    client = redis.Redis.from_url(infra.redis_url)
    try:
        return set(client.scan_iter(match=f"{ns.key_prefix}*", count=1000))
    finally:
        client.close()


def _kafka(infra: Infra, ns: Namespace) -> tuple[set[str], set[str]]:
    """The namespace's topics and consumer groups, as the broker lists them."""

    async def run() -> tuple[set[str], set[str]]:
        admin = AIOKafkaAdminClient(
            **client_options(settings_from({"RFM_KAFKA_BOOTSTRAP": infra.bootstrap}))
        )
        await admin.start()
        try:
            topics = {t for t in await admin.list_topics() if t.startswith(ns.topic_prefix)}
            groups = {
                g[0] for g in await admin.list_consumer_groups() if g[0].startswith(ns.topic_prefix)
            }
            return topics, groups
        finally:
            await admin.close()

    return asyncio.run(run())


@pytest.fixture
def namespaces(infra: Infra) -> Iterator[tuple[Namespace, Namespace, Namespace]]:
    """The one to reset, an unrelated one, and one whose name starts with the first's."""
    base = f"r{uuid.uuid4().hex[:10]}"
    spaces = (Namespace(base), Namespace(f"o{uuid.uuid4().hex[:10]}"), Namespace(f"{base}x"))
    yield spaces
    client = redis.Redis.from_url(infra.redis_url)
    try:
        for ns in spaces:
            keys = list(client.scan_iter(match=f"{ns.key_prefix}*", count=1000))
            if keys:
                client.delete(*keys)
    finally:
        client.close()
    settings = settings_from({"RFM_KAFKA_BOOTSTRAP": infra.bootstrap})
    asyncio.run(delete_topics(settings, *(ns.topic_prefix for ns in spaces)))


def test_reset_removes_one_namespace_and_nothing_else(
    infra: Infra, namespaces: tuple[Namespace, Namespace, Namespace], tmp_path: Path
) -> None:
    target, other, longer = namespaces
    now = wall_ms() - 60_000
    workers: list[WorkerProcess] = []
    try:
        for k, ns in enumerate(namespaces):
            env = _env(infra, ns, tmp_path)
            settings = settings_from(env)
            asyncio.run(ensure_topics(settings))
            produce(
                settings,
                [
                    (
                        settings.topic_prefix + "orders",
                        f"c{n}".encode(),
                        orjson.dumps(order(n, f"c{n}", 10_000 + n, now - n * 3_600_000)),
                    )
                    for n in range(20 + k)
                ],
            )
            worker = WorkerProcess(env, tmp_path / f"worker-{ns.name}.log")
            workers.append(worker.start())
            wanted = 20 + k
            wait_for(
                lambda: _scored(settings) == wanted,  # noqa: B023 (called before the loop moves)
                timeout=90,
                what=f"the worker of {ns.name} to score its customers",
                diagnose=worker.tail,
            )
        before = {ns: _keys(infra, ns) for ns in namespaces}
        topics = {ns: _kafka(infra, ns)[0] for ns in namespaces}
        assert all(before.values()) and all(topics.values())
        env = _env(infra, target, tmp_path)

        # a running worker of the namespace: refused, naming its group; nothing removed
        refused = _reset(env, target.name, "--yes")
        assert refused.returncode != 0
        assert f"{target.name}.scorer" in refused.stderr and "nothing removed" in refused.stderr
        customers = {k for k in before[target] if b":c:" in k}  # a worker removes none
        assert customers and _keys(infra, target) >= customers

        stop_all(workers)
        # the workers are stopped: what each namespace holds now (a running worker's
        # periodic round adds and drops keys of its own: lease, positions, refresh times)
        before = {ns: _keys(infra, ns) for ns in namespaces}
        # asked first: "no" removes nothing
        declined = _reset(env, target.name, answer="n\n")
        assert declined.returncode != 0, declined.stdout
        assert f"under '{target.key_prefix}'" in declined.stdout
        assert _keys(infra, target) == before[target]

        done = _reset(env, target.name, answer="y\n")
        assert done.returncode == 0, done.stdout + done.stderr
        assert f"removed namespace '{target.name}'" in done.stdout
        assert _keys(infra, target) == set()
        wait_for(
            lambda: _kafka(infra, target) == (set(), set()),
            timeout=30,
            what=f"the broker to drop {target.name}'s topics and groups",
            diagnose=lambda: repr(_kafka(infra, target)),
        )
        for ns in (other, longer):
            assert _keys(infra, ns) == before[ns]
            assert _kafka(infra, ns)[0] == topics[ns]
        again = _reset(env, target.name, "--yes")
        assert again.returncode == 0 and "is empty" in again.stdout
    finally:
        stop_all(workers)


def _scored(settings: Settings) -> int:
    """Customers in the namespace's live segment counts."""

    async def run() -> int:
        store = open_store(settings)
        try:
            return sum((await store.counts()).values())
        finally:
            await store.redis.aclose()

    return asyncio.run(run())
