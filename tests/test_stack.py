"""`rfm stack`: a private second stack on free ports, so the shared one is untouched."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from stream import stack
from tests.ports import free_ports

pytestmark = pytest.mark.integration


def private_ports() -> dict[str, int]:
    kafka, controller, redis = free_ports(3)
    return {"kafka_port": kafka, "controller_port": controller, "redis_port": redis}


def ours(state_dir: Path) -> list[int]:
    """Pids of live processes whose command line or working dir points into ``state_dir``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            cwd = os.readlink(entry / "cwd")
            state = (entry / "stat").read_bytes().rsplit(b")", 1)[1].split()[0]
        except OSError:
            continue
        if state != b"Z" and (str(state_dir).encode() in cmdline or cwd.startswith(str(state_dir))):
            found.append(int(entry.name))
    return found


@pytest.fixture
def state_dir(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "stack"
    yield path
    stack.down(echo=lambda _m: None, state_dir=path)


def test_up_is_idempotent_and_down_leaves_none_of_our_processes(state_dir: Path) -> None:
    libs = stack.default_libs_dir()  # share the one download with the suite's stack
    ports = private_ports()
    first = stack.up(state_dir=state_dir, libs_dir=libs, echo=lambda _m: None, **ports)
    assert first.running and first.kafka.started and first.redis.started
    assert first.kafka.address == f"127.0.0.1:{ports['kafka_port']}"
    assert first.redis.address == f"127.0.0.1:{ports['redis_port']}"
    again = stack.up(state_dir=state_dir, libs_dir=libs, echo=lambda _m: None, **ports)
    assert again.running and not again.kafka.started and not again.redis.started
    assert (again.kafka.pid, again.redis.pid) == (first.kafka.pid, first.redis.pid)
    assert set(ours(state_dir)) >= {first.kafka.pid, first.redis.pid}

    stack.down(echo=lambda _m: None, state_dir=state_dir)
    assert ours(state_dir) == []
    assert not stack.status(state_dir=state_dir).kafka.running


def test_a_port_held_by_something_else_is_named(state_dir: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(stack.StackError, match=f"port {port} is held by another process"):
            stack.up(
                state_dir=state_dir, echo=lambda _m: None, **{**private_ports(), "redis_port": port}
            )
    assert ours(state_dir) == []
