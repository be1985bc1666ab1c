"""What `up` and `status` report about the stack's two processes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ComponentStatus:
    """One process of the stack, as `up` left it or `status` found it."""

    name: str  # "kafka" or "redis"
    running: bool  # alive and verifiably ours (pid file + /proc cmdline)
    pid: int | None
    address: str  # host:port clients connect to
    up_seconds: float | None  # time `up` spent on it (from status(): the `up` that started it)
    started: bool  # True when this `up` call started it (False: reused, or from status())
    log: Path


@dataclass(frozen=True)
class StackStatus:
    """Both components plus where their state lives."""

    kafka: ComponentStatus
    redis: ComponentStatus
    state_dir: Path

    @property
    def running(self) -> bool:
        return self.kafka.running and self.redis.running
