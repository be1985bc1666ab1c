"""Facts about where the figures were measured, so runs on different boxes compare honestly."""

from __future__ import annotations

import os
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

from stream import native
from stream.config import Settings
from stream.stack import KAFKA_VERSION
from stream.store.redis_store import connect

PACKAGES = (
    "rfm-stream",
    "faust-streaming",
    "aiokafka",
    "redis",
    "hiredis",
    "orjson",
    "uvloop",
    "numpy",
    "matplotlib",
)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _ram_bytes() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


async def facts(settings: Settings) -> dict[str, Any]:
    redis = connect(settings.redis_url)
    try:
        server = await redis.info("server")
    finally:
        await redis.aclose()
    return {
        "cores": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "ram_bytes": _ram_bytes(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "kafka_version": KAFKA_VERSION,
        "redis_version": str(server.get("redis_version")),
        "partitions": settings.partitions,
        "packages": {name: _version(name) for name in PACKAGES},
        "compiled_core": native.active(),  # the worker and the baseline run the same way
    }
