"""Loopback ports for the private stacks some tests start beside the shared one."""

from __future__ import annotations

import contextlib
import random
import socket
from pathlib import Path

LOWEST = 10_000


def _ephemeral_floor() -> int:
    """Where the kernel starts picking source ports for outgoing connections."""
    try:
        low = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0]
        return int(low)
    except (OSError, IndexError, ValueError):
        return 32_768


def free_ports(count: int) -> list[int]:
    """``count`` distinct loopback ports that nothing is bound to right now.

    Drawn at random below the kernel's ephemeral range, so no outgoing connection (of this
    test or any other process on the host) is handed one while a server restarts on it; all
    are held at once while choosing, so none repeats. Released on return, for the caller's
    servers to take."""
    floor = _ephemeral_floor()
    if floor - LOWEST < 1_000:  # no room below the ephemeral range: let the kernel choose
        candidates = [0] * (count * 4)
    else:
        candidates = random.sample(range(LOWEST, floor), count * 20)
    with contextlib.ExitStack() as held:
        ports: list[int] = []
        for candidate in candidates:
            sock = held.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            try:
                sock.bind(("127.0.0.1", candidate))
            except OSError:
                continue
            port = int(sock.getsockname()[1])
            if port not in ports:
                ports.append(port)
            if len(ports) == count:
                return ports
    raise RuntimeError(f"found only {len(ports)} of {count} free loopback ports")
