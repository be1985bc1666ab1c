"""How the long-running processes end: a worker, and the demo with its children.

A worker signalled (SIGTERM, SIGINT, SIGHUP), idle or in the middle of a stream, finishes
the batch it is applying, commits, leaves its consumer group at once (no session timeout for
the others to wait out) and exits 0; its log holds no traceback, no error and no terminal
escape code, whether it went to a file or stdout was a terminal; no process of its group is
left; and a worker that takes over applies the rest without counting any event twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pty
import re
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
from aiokafka.admin import AIOKafkaAdminClient

from stream.config import Settings
from stream.kafka import client_options, ensure_topics
from stream.kafka.topics import Topics
from tests.conftest import Isolated
from tests.support import (
    WorkerProcess,
    events_applied,
    group_drained,
    produce,
    random_orders,
    rfm_child,
    wait_for,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(400)]

# a refresh every second keeps the periodic work busy while the batches come in
CONFIG = """
[scoring]
refresh_interval = "1s"
"""
ORDERS = 20_000
MID_STREAM = 2_000  # events applied before a mid-stream signal, of ORDERS
ESCAPE = re.compile(rb"\x1b|\x08")  # any escape sequence, and the spinner's backspaces
LOG_FAULTS = (b"Traceback", b"Crashed", b"[ERROR]", b"[CRITICAL]", b"is overlapping")


def process_group(pgid: int) -> list[int]:
    """Live processes (zombies excluded) of process group ``pgid``, by /proc."""
    found = []
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):  # gone since the listing
            stat = stat_file.read_bytes()
            state, _parent, group = stat[stat.rfind(b")") + 2 :].split()[:3]
            if int(group) == pgid and state not in (b"Z", b"X"):
                found.append(int(stat_file.parent.name))
    return found


def group_members(settings: Settings) -> list[Any]:
    async def run() -> list[Any]:
        admin = AIOKafkaAdminClient(**client_options(settings))
        await admin.start()
        try:
            [described] = await admin.describe_consumer_groups([settings.group_id])
            [group] = described.to_object()["groups"]
            return list(group["members"])
        finally:
            await admin.close()

    return asyncio.run(asyncio.wait_for(run(), 30))


def log_faults(log: bytes) -> list[str]:
    """Lines of ``log`` a clean run must not have (see LOG_FAULTS and ESCAPE)."""
    return [
        line.decode(errors="replace")
        for line in log.splitlines()
        if ESCAPE.search(line) or any(fault in line for fault in LOG_FAULTS)
    ]


class TerminalStdoutWorker(WorkerProcess):
    """A worker whose stdout is a pseudo-terminal and whose stderr (its log) is a file: as
    `rfm worker 2>worker.log` typed in a terminal."""

    def start(self) -> TerminalStdoutWorker:
        self.terminal, tty = pty.openpty()
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                self.argv,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=tty,
                stderr=out,
                start_new_session=True,
            )
        os.close(tty)
        return self

    def close(self) -> None:
        os.close(self.terminal)


@pytest.fixture
def workers(isolated: Isolated) -> Iterator[list[WorkerProcess]]:
    started: list[WorkerProcess] = []
    yield started
    for worker in started:
        worker.stop(timeout=10)
        if isinstance(worker, TerminalStdoutWorker):
            worker.close()


@pytest.mark.parametrize(
    ("sig", "moment", "stdout"),
    [
        (signal.SIGTERM, "idle", "file"),
        (signal.SIGTERM, "mid-stream", "file"),
        (signal.SIGINT, "mid-stream", "terminal"),
        (signal.SIGHUP, "idle", "file"),
    ],
    ids=["SIGTERM-idle", "SIGTERM-mid-stream", "SIGINT-mid-stream-stdout-on-a-terminal", "SIGHUP"],
)
def test_a_signalled_worker_commits_leaves_its_group_and_exits_0_with_a_clean_log(
    isolated: Isolated,
    workers: list[WorkerProcess],
    sig: signal.Signals,
    moment: str,
    stdout: str,
) -> None:
    config = isolated.config_file(CONFIG)
    settings = isolated.settings()
    asyncio.run(ensure_topics(settings))
    topic = Topics(settings.topic_prefix).orders
    orders = random_orders(30, ORDERS, 5_000)
    produce(settings, [(topic, o["customer_id"].encode(), orjson.dumps(o)) for o in orders])
    client = redis.Redis.from_url(isolated.infra.redis_url)
    kind = TerminalStdoutWorker if stdout == "terminal" else WorkerProcess
    # at warn, as `rfm demo` runs it, Faust would draw its spinner; at info it logs more
    level = "warn" if moment == "idle" else "info"
    first = kind(isolated.process_env(config), isolated.tmp / "first.log", loglevel=level)
    workers.append(first.start())

    def applied() -> int:
        return events_applied(client, isolated.name)

    # idle: its agent waits for events; mid-stream: it waits for room to buffer more
    when = ORDERS if moment == "idle" else MID_STREAM
    wait_for(
        lambda: applied() >= when, timeout=240, what=f"{when} events applied", diagnose=first.tail
    )
    assert group_members(settings), "the running worker is not seen in its group"
    before = applied()
    os.kill(first.pid, sig)
    code = first.wait(60)
    assert moment == "idle" or before < ORDERS, "the signal came after the stream was applied"

    assert code == 0, first.tail()
    assert process_group(first.pid) == []
    assert group_members(settings) == [], "the worker did not leave its consumer group"
    log = first.log.read_bytes()
    assert log_faults(log) == [], first.tail()

    # what the first applied it committed: the next applies only the rest
    second = WorkerProcess(isolated.process_env(config), isolated.tmp / "second.log")
    workers.append(second.start())
    wait_for(
        lambda: group_drained(settings, settings.group_id, topic),
        timeout=240,
        what="every order applied and committed",
        diagnose=second.tail,
    )
    stats = client.hgetall(f"{isolated.name}:stats")
    client.close()
    assert int(stats.get(b"duplicates", 0)) == 0, stats
    assert int(stats[b"accepted"]) == ORDERS, stats


def children_of(pid: int) -> list[int]:
    """Live processes whose parent is ``pid``, by /proc."""
    found = []
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            stat = stat_file.read_bytes()
            state, parent = stat[stat.rfind(b")") + 2 :].split()[:2]
            if int(parent) == pid and state not in (b"Z", b"X"):
                found.append(int(stat_file.parent.name))
    return found


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_a_signalled_demo_stops_every_child_and_exits_0(
    isolated: Isolated, sig: signal.Signals
) -> None:
    """The demo's worker, API and campaign consumer run in sessions of their own (a Ctrl-C
    in the terminal reaches only the demo): the demo itself must take each down with it."""
    log = isolated.tmp / "demo.log"
    demo = rfm_child(
        isolated.process_env(), log, "demo", "--namespace", isolated.name, "--customers", "200"
    )
    try:
        wait_for(
            lambda: len(children_of(demo.pid)) >= 3 and b"dashboard:" in log.read_bytes(),
            timeout=120,
            what="the demo's worker, API and campaign consumer",
            diagnose=demo.tail,
        )
        children = children_of(demo.pid)
        os.kill(demo.pid, sig)
        assert demo.wait(timeout=60) == 0, demo.tail()
    finally:
        demo.stop(timeout=15)
    left = [pid for child in children for pid in process_group(child)]
    assert left == [], f"left running after {sig.name}: {left}"
    assert b"Traceback" not in log.read_bytes(), demo.tail()
    assert b"demo stopped" in log.read_bytes()
