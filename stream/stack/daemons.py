"""The stack's two daemons as processes: started detached, found again, stopped.

Each runs in a session of its own (`stream.process`), so it outlives the `rfm stack up` that
started it and survives terminal hang-ups. A pid file and an info file (address, ports, time
to ready) record it; a pid counts as ours only while /proc shows it running our config file,
so `up` is idempotent and `down` never signals anything it did not start.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from stream.process import Child, alive, stop_groups
from stream.stack.errors import StackError
from stream.stack.layout import HOST, Layout, write_atomic

NAMES = ("kafka", "redis")
_STOP_GRACE = 30.0  # a KRaft broker's controlled shutdown takes a few seconds

# Children this Python process started: kept so they are reaped (no zombies) and so no
# "still running" ResourceWarning fires when they outlive us.
_children: dict[int, Child] = {}


def known(pid: int | None) -> int:
    if pid is None:  # pragma: no cover - up() fills every pid before waiting
        raise AssertionError("pid missing")
    return pid


def _running(pid: int) -> bool:
    """Alive; a child of ours is reaped once it has exited."""
    child = _children.get(pid)
    return child.alive if child is not None else alive(pid)


def _owned(layout: Layout, name: str, pid: int) -> bool:
    """True if the pid runs our config file (a recycled pid or a foreign process never matches)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    if str(layout.config(name)).encode() in cmdline:
        return True
    # redis-server rewrites its cmdline (proc title); our config asks it to show the config
    # path, but should a title ever get truncated, its working dir (= our data dir) still tells.
    if name == "redis" and b"redis" in cmdline:
        with contextlib.suppress(OSError):
            return os.readlink(f"/proc/{pid}/cwd") == str(layout.redis_data)
    return False


def live_pid(layout: Layout, name: str) -> int | None:
    try:
        pid = int(layout.pid_file(name).read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if pid > 0 and _running(pid) and _owned(layout, name, pid) else None


def read_info(layout: Layout, name: str) -> dict[str, Any]:
    try:
        info = json.loads(layout.info_file(name).read_text())
    except (OSError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}


def update_info(layout: Layout, name: str, **fields: Any) -> None:
    info = read_info(layout, name)
    info.update(fields)
    write_atomic(layout.info_file(name), json.dumps(info, sort_keys=True) + "\n")


def forget(layout: Layout, name: str) -> None:
    for path in (layout.pid_file(name), layout.info_file(name)):
        path.unlink(missing_ok=True)


def address(layout: Layout, name: str, default_port: int) -> str:
    return str(read_info(layout, name).get("address") or f"{HOST}:{default_port}")


def spawn(layout: Layout, name: str, cmd: list[str], ports: tuple[int, ...], cwd: Path) -> int:
    """Start a daemon and record it: pid file, and the ports it was asked to listen on."""
    child = Child(name, cmd, None, layout.log(name), cwd=cwd).start()
    _children[child.pid] = child
    write_atomic(layout.pid_file(name), f"{child.pid}\n")
    info: dict[str, Any] = {"address": f"{HOST}:{ports[0]}", "ports": list(ports)}
    write_atomic(layout.info_file(name), json.dumps(info, sort_keys=True) + "\n")
    return child.pid


def check_running(layout: Layout, name: str, pid: int) -> None:
    """Raise if the daemon being awaited has already exited."""
    if not _running(pid):
        child = _children.get(pid)
        code = f" (exit {child.returncode})" if child is not None else ""
        raise StackError(f"{name} exited during start-up{code}: see {layout.log(name)}")


def stop(targets: list[tuple[str, int]], echo: Callable[[str], None]) -> None:
    """Stop these daemons together: SIGTERM, SIGKILL after a grace; say so on the way."""
    names = {pid: name for name, pid in targets}
    for name, pid in targets:
        echo(f"{name}: stopping (pid {pid})")

    def killing(pid: int) -> None:
        echo(f"{names[pid]}: still running after {_STOP_GRACE:.0f}s; sending SIGKILL")

    survivors = stop_groups(list(names), grace=_STOP_GRACE, on_kill=killing)
    for name, pid in targets:
        child = _children.pop(pid, None)
        if pid in survivors:
            raise StackError(f"{name} (pid {pid}) survived SIGKILL: check it with `ps -p {pid}`")
        if child is not None:
            child.wait(1.0)  # reap: it is gone
        echo(f"{name}: stopped")
