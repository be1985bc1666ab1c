"""Redis Cluster: a local three-master cluster started here, the scorer unchanged on top.

Each customer's keys and its shard's aggregates share one hash tag, so every script call
stays in one slot; quantile edges are found across the shards' indexes and must equal the
ranks of the whole population; the final state must equal the batch oracle.
"""

from __future__ import annotations

import asyncio
import functools
import random
import shutil
import socket
import subprocess
import sys
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest
import redis
from redis.cluster import RedisCluster

from stream.config import settings_from
from stream.core.scoring import quantile_edges
from stream.kafka import ensure_topics
from stream.kafka.topics import Topics
from stream.process import Child, stop_all
from stream.store.keys import DIMS, Keys
from stream.store.redis_store import open_store
from tests.conftest import Isolated
from tests.support import (
    WorkerProcess,
    assert_change_chains,
    assert_export_is_the_oracle,
    produce,
    random_orders,
    read_topic,
    rfm,
    wait_for,
)

pytestmark = pytest.mark.integration

SHARDS = 16


@dataclass(frozen=True)
class Cluster:
    ports: tuple[int, ...]

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.ports[0]}/0"

    def client(self) -> RedisCluster:
        return RedisCluster.from_url(self.url)


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _cluster_port(taken: set[int]) -> int:
    """A port whose cluster bus port (port + 10000) is free too; both must stay < 65536."""
    rng = random.Random()
    while True:
        port = rng.randrange(20_000, 30_000)
        if port not in taken and _bindable(port) and _bindable(port + 10_000):
            taken.add(port)
            return port


def _pongs(port: int) -> bool:
    done = subprocess.run(
        ["redis-cli", "-p", str(port), "ping"],
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    return done.stdout.strip() == "PONG"


def _cluster_ok(ports: tuple[int, ...]) -> bool:
    for port in ports:
        done = subprocess.run(
            ["redis-cli", "-p", str(port), "cluster", "info"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        if "cluster_state:ok" not in done.stdout:
            return False
    return True


@pytest.fixture
def redis_cluster(tmp_path: Path) -> Iterator[Cluster]:
    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        pytest.fail("redis-server and redis-cli are needed (scripts/bootstrap installs them)")
    taken: set[int] = set()
    ports = tuple(_cluster_port(taken) for _ in range(3))
    nodes: list[Child] = []
    try:
        for port in ports:
            home = tmp_path / f"node-{port}"
            home.mkdir()
            node = Child(
                f"cluster node on port {port}",
                [
                    "redis-server", "--port", str(port), "--bind", "127.0.0.1",
                    "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                    "--save", "", "--appendonly", "no", "--dir", str(home),
                ],
                None,
                home / "redis.log",
            )  # fmt: skip
            nodes.append(node.start())
        for port, node in zip(ports, nodes, strict=True):
            node.wait_ready(functools.partial(_pongs, port), timeout=30, what="PONG")
        subprocess.run(
            [
                "redis-cli", "--cluster", "create",
                *(f"127.0.0.1:{p}" for p in ports),
                "--cluster-replicas", "0", "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )  # fmt: skip
        wait_for(lambda: _cluster_ok(ports), timeout=60, what="cluster_state:ok on every node")
        yield Cluster(ports)
    finally:
        stop_all(nodes)


def test_quantile_edges_across_shards_equal_the_ranks_of_the_whole_population(
    redis_cluster: Cluster,
) -> None:
    """Values spread over 16 shards on three masters; edges must be the exact population
    quantiles, ties and skew included (the case that breaks merging per-shard quantiles)."""
    rng = random.Random(5)
    populations = {
        "r": [1_780_000_000_000 + rng.randrange(0, 400 * 86_400_000) for _ in range(3_000)],
        "f": [rng.choice((1, 1, 1, 1, 2, 2, 3, 7, 40)) for _ in range(3_000)],
        "m": [int(rng.paretovariate(1.2) * 1000) for _ in range(3_000)],
        "i": [5] * 10,  # one value only
    }

    async def check() -> None:
        store = open_store(
            settings_from(
                {
                    "RFM_REDIS_URL": redis_cluster.url,
                    "RFM_REDIS_CLUSTER": "1",
                    "RFM_KEY_PREFIX": "q:",
                }
            )
        )
        try:
            for d, values in populations.items():
                by_shard: dict[int, dict[str, int]] = defaultdict(dict)
                for n, value in enumerate(values):
                    cid = f"c{n}"
                    by_shard[store.keys.shard_of(cid)][cid] = value
                for shard, members in by_shard.items():  # unsplit: one bucket per shard
                    k = store.keys
                    await store.redis.zadd(k.index_bucket(d, b"", shard), members)
                    await store.redis.zadd(k.index_directory(d, shard), {b"": 0})
                    await store.redis.hset(k.index_sizes(d, shard), b"", len(members))
            for buckets in (2, 5, 9):
                edges, population = await store.quantile_edges(buckets)
                for d, values in populations.items():
                    assert population[d] == len(values)
                    assert edges[d] == quantile_edges(sorted(values), buckets), (d, buckets)
        finally:
            await store.aclose()

    asyncio.run(check())
    client = redis_cluster.client()
    try:
        nodes = {client.get_node_from_key(Keys("q:", SHARDS).index("r", s)).port for s in range(16)}
    finally:
        client.close()
    assert nodes == set(redis_cluster.ports)  # the shards really live on all three masters


@dataclass(frozen=True)
class ClusterDeployment:
    """``isolated``'s topics and prefix, with its state in the cluster."""

    iso: Isolated
    cluster: Cluster

    def process_env(self, config: Path | None = None) -> dict[str, str]:
        env = self.iso.process_env(config)
        env.update(RFM_REDIS_URL=self.cluster.url, RFM_REDIS_CLUSTER="1", RFM_REDIS_SHARDS="16")
        return env


def test_the_scorer_runs_unchanged_on_a_three_master_cluster(
    isolated: Isolated, redis_cluster: Cluster
) -> None:
    deployment = ClusterDeployment(isolated, redis_cluster)
    settings = isolated.settings({"scoring": {"clock": "event"}})
    topics = Topics(settings.topic_prefix)
    asyncio.run(ensure_topics(settings))
    config = isolated.config_file('[scoring]\nclock = "event"\nrefresh_interval = "2s"\n')
    events = random_orders(9, 12_000, customers=1_500)
    keys = Keys(f"{isolated.name}:", SHARDS)
    client = redis_cluster.client()

    def accepted() -> int:
        return sum(int(client.hget(keys.stats(s), "accepted") or 0) for s in keys.all_shards)

    worker = WorkerProcess(deployment.process_env(config), isolated.tmp / "worker.log").start()
    try:
        produce(
            settings, [(topics.orders, e["customer_id"].encode(), orjson.dumps(e)) for e in events]
        )
        wait_for(
            lambda: accepted() >= len(events),
            timeout=240,
            what="every order applied through the cluster",
            diagnose=lambda: f"accepted={accepted()}\n{worker.tail()}",
        )
        assert accepted() == len(events)
        rfm(deployment, config, "refresh")
        wait_for(
            lambda: sum(client.xlen(keys.outbox(s)) for s in keys.all_shards) == 0,
            timeout=60,
            what="every shard's outbox drained",
        )
        assert worker.alive
        per_node = Counter(
            client.get_node_from_key(keys.customer(f"{n:05d}")).port for n in range(1_500)
        )
    finally:
        worker.stop()
        client.close()
    assert set(per_node) == set(redis_cluster.ports)

    rows = assert_export_is_the_oracle(rfm(deployment, config, "export"), events)
    assert_change_chains(read_topic(settings, topics.changes), rows)

    async def live_counts() -> tuple[dict[str, int], dict[str, tuple[int, ...]], list[str]]:
        store = open_store(settings_from(deployment.process_env()))
        try:
            current, _ = await store.thresholds()
            # every customer has orders inside the window: each is due when they leave it
            due = await store.due_before(2**62, limit=10 * len(rows))
            return await store.counts(), dict(current.edges), due
        finally:
            await store.aclose()

    counts, edges, due = asyncio.run(live_counts())
    assert counts == dict(Counter(row["segment"] for row in rows.values()))
    assert sorted(due) == sorted(rows)  # the sweep reaches every shard's buckets, once each
    assert set(edges) >= {"r", "f", "m"} and set(edges) <= set(DIMS)


def test_turning_sharding_on_over_unsharded_data_is_refused(isolated: Isolated) -> None:
    """Data from before the layout was recorded tells its layout by its key names; a worker or
    CLI with another shard count stops, naming the setting, instead of starting from zero."""
    client = redis.Redis.from_url(isolated.infra.redis_url)
    try:
        client.hset(f"{isolated.name}:counts", "champions", 3)  # an unsharded deployment's data
    finally:
        client.close()
    sharded = {**isolated.process_env(), "RFM_REDIS_SHARDS": "8"}
    for args in (["export"], ["worker"]):
        done = subprocess.run(
            [sys.executable, "-m", "stream.cli", *args],
            env=sharded,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode != 0, args
        assert "RFM_REDIS_SHARDS" in done.stderr and "1 shard" in done.stderr, done.stderr
        assert "Traceback" not in done.stderr, done.stderr
    rfm(isolated, None, "export")  # the layout the data has still reads (exit 0 asserted)
