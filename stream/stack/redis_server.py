"""The stack's Redis: the system `redis-server` with a config file of ours."""

from __future__ import annotations

import shutil

from stream.stack.errors import StackError
from stream.stack.layout import HOST, Layout, write_atomic


def redis_server() -> str:
    found = shutil.which("redis-server")
    if found is None:
        raise StackError(
            "redis-server not found on PATH: install it "
            "(apt-get install redis-server, or run scripts/ensure-redis.sh)"
        )
    return found


def command(redis_server: str, layout: Layout) -> list[str]:
    return [redis_server, str(layout.config("redis"))]


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def write_config(layout: Layout, port: int) -> None:
    lines = [
        "# written by `rfm stack up` on every start; edits are overwritten",
        f"bind {HOST}",
        f"port {port}",
        "protected-mode yes",
        "daemonize no",
        f"dir {_quote(str(layout.redis_data))}",
        f"logfile {_quote(str(layout.log('redis')))}",
        "appendonly yes",
        # The AOF is the durability; RDB snapshots on top forked the server every minute
        # under write load (a 20 s copy-on-write save at 1,000,000 customers on 2 cores).
        'save ""',
        # puts our config path into /proc/<pid>/cmdline: that is how we recognise our redis
        'proc-title-template "{title} {listen-addr} {server-mode} {config-file}"',
    ]
    write_atomic(layout.config("redis"), "\n".join(lines) + "\n")
