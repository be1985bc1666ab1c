"""Faults survived (issue: reliability): the broker restarts, Redis restarts (append-only file
on), Redis stalls, all mid-stream, on a private stack on free ports so the shared one is
untouched. The worker recovers on its own, skips nothing, counts nothing twice, and ends at
the oracle."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis

from stream import stack
from stream.kafka.topics import Topics
from stream.process import alive
from tests.conftest import Infra, Isolated
from tests.ports import free_ports
from tests.support import (
    WorkerProcess,
    assert_export_is_the_oracle,
    produce,
    random_orders,
    rfm,
    wait_for,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]


@dataclass(frozen=True)
class PrivateStack:
    state: Path
    ports: dict[str, int]  # stack.up's kafka_port, controller_port, redis_port

    def up(self) -> stack.StackStatus:
        """Start what is not running (again, on the same ports and data)."""
        return stack.up(
            state_dir=self.state,
            libs_dir=stack.default_libs_dir(),
            echo=lambda _m: None,
            **self.ports,
        )

    def status(self) -> stack.StackStatus:
        return stack.status(state_dir=self.state)

    @property
    def infra(self) -> Infra:
        kafka, redis_port = self.ports["kafka_port"], self.ports["redis_port"]
        return Infra(f"127.0.0.1:{kafka}", f"redis://127.0.0.1:{redis_port}/0", "private stack")


@pytest.fixture
def private_stack(tmp_path: Path) -> Iterator[PrivateStack]:
    kafka, controller, redis_port = free_ports(3)
    ports = {"kafka_port": kafka, "controller_port": controller, "redis_port": redis_port}
    private = PrivateStack(tmp_path / "stack", ports)
    try:
        private.up()
        yield private
    finally:
        stack.down(state_dir=private.state, echo=lambda _m: None)


def kill_and_wait(pid: int, sig: int = signal.SIGTERM) -> None:
    os.kill(pid, sig)
    wait_for(lambda: not alive(pid), timeout=60, what="exit")


def test_broker_restart_redis_restart_and_redis_stall_mid_stream(
    private_stack: PrivateStack, tmp_path: Path
) -> None:
    infra = private_stack.infra
    iso = Isolated(infra, "faults", tmp_path)
    config = iso.config_file('[scoring]\nclock = "event"\nrefresh_interval = "2s"\n')
    settings = iso.settings({"scoring": {"clock": "event"}})
    topics = Topics(settings.topic_prefix)
    events = random_orders(3, 8_000, customers=500, days=300)
    chunks = [events[n : n + 2_000] for n in range(0, len(events), 2_000)]
    worker = WorkerProcess(iso.process_env(config), tmp_path / "worker.log").start()
    client = redis.Redis.from_url(infra.redis_url, socket_timeout=2, socket_connect_timeout=2)

    def accepted() -> int:
        try:
            return int(client.hget("faults:stats", "accepted") or 0)
        except redis.RedisError:
            return -1

    def send(chunk: list[dict[str, Any]]) -> None:
        produce(
            settings, [(topics.orders, e["customer_id"].encode(), orjson.dumps(e)) for e in chunk]
        )

    def applied(n: int, what: str) -> None:
        wait_for(lambda: accepted() >= n, timeout=180, what=what, diagnose=worker.tail)

    try:
        send(chunks[0])
        applied(2_000, "the first chunk")

        # 1. The broker restarts (controlled shutdown, then the same data dir comes back).
        kill_and_wait(private_stack.status().kafka.pid or 0)
        private_stack.up()
        send(chunks[1])
        applied(4_000, "the chunk after the broker restart")

        # 2. Redis restarts; its append-only file brings the state back.
        kill_and_wait(private_stack.status().redis.pid or 0)
        send(chunks[2])  # arrives while Redis is down: the worker must wait, not skip
        private_stack.up()
        applied(6_000, "the chunk sent while Redis was down")

        # 3. Redis stalls (unreachable but not gone) while events keep coming.
        redis_pid = private_stack.status().redis.pid or 0
        os.kill(redis_pid, signal.SIGSTOP)
        try:
            send(chunks[3])
            wait_for(
                lambda: "not applied yet" in worker.log.read_text(errors="replace"),
                timeout=60,
                what="the worker to report itself degraded",
            )
        finally:
            os.kill(redis_pid, signal.SIGCONT)
        applied(8_000, "the chunk sent while Redis stalled")
        wait_for(
            lambda: "recovered" in worker.log.read_text(errors="replace"),
            timeout=60,
            what="the worker to report recovery",
        )
        assert accepted() == len(events)
        assert worker.alive, worker.tail()
        rfm(iso, config, "refresh")
        wait_for(lambda: client.xlen("faults:outbox") == 0, timeout=60, what="outbox drained")
    finally:
        client.close()
        worker.stop()

    assert_export_is_the_oracle(rfm(iso, config, "export"), events, scores=False)
