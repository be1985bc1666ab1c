"""Where one stack keeps its files (config, data, logs, pid files) under its state dir."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

HOST = "127.0.0.1"  # loopback only: the plain listeners have no authentication


def default_state_dir() -> Path:
    """`$RFM_STACK_DIR`, else `$XDG_CACHE_HOME/rfm`, else `~/.cache/rfm`: per user, not per repo."""
    explicit = os.environ.get("RFM_STACK_DIR")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg and Path(xdg).is_absolute() else Path.home() / ".cache"
    return base / "rfm"


@dataclass(frozen=True)
class Layout:
    """The paths of one state dir; the config paths double as the ownership marker."""

    root: Path

    @classmethod
    def at(cls, state_dir: Path | None) -> Layout:
        return cls((state_dir or default_state_dir()).expanduser().resolve())

    @property
    def run(self) -> Path:
        return self.root / "run"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def conf(self) -> Path:
        return self.root / "conf"

    @property
    def kafka_data(self) -> Path:
        return self.root / "kafka-data"

    @property
    def redis_data(self) -> Path:
        return self.root / "redis-data"

    @property
    def tls(self) -> Path:
        return self.root / "tls"

    @property
    def cluster_id_file(self) -> Path:
        return self.root / "kafka-cluster-id"

    def config(self, name: str) -> Path:
        return self.conf / ("kafka.properties" if name == "kafka" else "redis.conf")

    def pid_file(self, name: str) -> Path:
        return self.run / f"{name}.pid"

    def info_file(self, name: str) -> Path:
        return self.run / f"{name}.json"

    def log(self, name: str) -> Path:
        return self.logs / f"{name}.log"

    def make(self) -> None:
        for path in (self.run, self.logs, self.conf, self.kafka_data, self.redis_data):
            path.mkdir(parents=True, exist_ok=True)


@contextlib.contextmanager
def locked(layout: Layout) -> Iterator[None]:
    """Serialise up/down on one state dir (two `up`s at once must not start two brokers)."""
    layout.run.mkdir(parents=True, exist_ok=True)
    with open(layout.run / "stack.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def rotate(log: Path) -> None:
    """Keep the previous run's log as `.1`, so logs stay bounded without a log daemon."""
    if log.exists():
        os.replace(log, log.with_name(log.name + ".1"))
