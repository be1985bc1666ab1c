"""Port checks before anything starts: valid, distinct, free, or the ones a running daemon has."""

from __future__ import annotations

import socket

from stream.stack.daemons import address, read_info
from stream.stack.errors import StackError
from stream.stack.layout import HOST, Layout

_PORT_HINT = {
    "kafka": "stop it or set RFM_KAFKA_BOOTSTRAP to use it",
    "kafka controller": "stop it or choose another controller port",
    "redis": "stop it or set RFM_REDIS_URL to use it",
}


def check_numbers(*ports: int) -> None:
    for port in ports:
        if not 0 < port < 65536:
            raise StackError(f"port {port} is not a valid TCP port: use 1-65535")
    if len(set(ports)) != len(ports):
        raise StackError(f"ports {', '.join(map(str, ports))} must all differ: pick distinct ports")


def check_same(layout: Layout, name: str, pid: int | None, wanted: tuple[int, ...]) -> None:
    have = read_info(layout, name).get("ports")
    if isinstance(have, list) and tuple(have) != wanted:
        raise StackError(
            f"{name} is already running on {address(layout, name, wanted[0])} (pid {pid}), "
            f"not on the requested port(s) {', '.join(map(str, wanted))}: "
            "run `rfm stack down` first"
        )


def check_free(port: int, role: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # SO_REUSEADDR like the daemons themselves: a TIME_WAIT leftover is not "held".
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
            return
        except OSError:
            pass
    hint = _PORT_HINT.get(role, f"stop it or choose another {role} port")
    raise StackError(f"port {port} is held by another process (not started by rfm stack): {hint}")
