"""`up`, `down` and `status`: the stack's lifecycle on one state dir, under its lock."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from pathlib import Path

from stream.stack import broker, daemons, ports, redis_server
from stream.stack.daemons import NAMES, forget, known, live_pid
from stream.stack.jars import default_libs_dir, ensure_libs
from stream.stack.layout import HOST, Layout, locked, rotate
from stream.stack.readiness import wait_kafka, wait_redis, wait_scram_logins
from stream.stack.security import check_sasl, ensure_tls
from stream.stack.status import ComponentStatus, StackStatus

# Once a fresh broker answers, a SCRAM login that still fails after this is a wrong credential.
_LOGIN_GRACE = 10.0


def up(
    *,
    kafka_port: int = 9092,
    controller_port: int = 9093,
    redis_port: int = 6379,
    sasl_port: int | None = None,
    sasl_ssl_port: int | None = None,
    sasl_users: Mapping[str, str] | None = None,
    timeout: float = 120.0,
    echo: Callable[[str], None] = print,
    state_dir: Path | None = None,
    libs_dir: Path | None = None,
) -> StackStatus:
    """Start whatever is not running yet and return once both answer a real round trip.

    Idempotent: components already running from this state dir are reused, not restarted. It
    either returns a working stack or raises StackError after stopping what this call started,
    so a failed `up` leaves nothing half-started. `timeout` bounds the whole call, downloads too.

    `sasl_port` adds a SASL_PLAINTEXT listener, `sasl_ssl_port` a SASL_SSL one (its CA is
    `ca_file(state_dir)`), both with SCRAM-SHA-256 and -512 for `sasl_users` (name: password).
    Kafka stores SCRAM users in its metadata log, and this stack writes them only when it
    formats a fresh state dir; `up` returns once every user has logged in on every SASL
    listener, so a state dir formatted with other users is reported, never silently accepted.
    """
    began = time.monotonic()
    deadline = began + timeout
    sasl = {"SASL_PLAINTEXT": sasl_port, "SASL_SSL": sasl_ssl_port}
    listeners = {protocol: port for protocol, port in sasl.items() if port is not None}
    users = check_sasl(listeners, sasl_users)
    ports.check_numbers(kafka_port, controller_port, redis_port, *listeners.values())
    layout = Layout.at(state_dir)
    layout.make()
    libs = (libs_dir or default_libs_dir(layout.root)).expanduser().resolve()
    wanted = {"kafka": (kafka_port, controller_port, *listeners.values()), "redis": (redis_port,)}
    roles = {"kafka": ("kafka", "kafka controller", *listeners), "redis": ("redis",)}
    with locked(layout):
        pids = {name: live_pid(layout, name) for name in NAMES}
        for name in NAMES:
            if pids[name] is None:
                forget(layout, name)
            else:
                ports.check_same(layout, name, pids[name], wanted[name])
                address = daemons.address(layout, name, wanted[name][0])
                echo(f"{name}: already running on {address} (pid {pids[name]})")
        # Everything that can fail without side effects comes before the first process starts.
        redis_bin = redis_server.redis_server() if pids["redis"] is None else None
        java = broker.java() if pids["kafka"] is None else None
        for name in NAMES:
            if pids[name] is None:
                for port, role in zip(wanted[name], roles[name], strict=True):
                    ports.check_free(port, role)
        if java is not None:
            ensure_libs(libs, layout, deadline, echo)
            if "SASL_SSL" in listeners:
                ensure_tls(java, layout, deadline)
            broker.write_config(layout, kafka_port, controller_port, listeners)
            rotate(layout.log("kafka"))
            broker.format_storage(java, libs, layout, deadline, echo, users)

        started: list[str] = []
        seconds: dict[str, float] = {}
        try:
            redis_t0 = time.monotonic()
            if redis_bin is not None:
                redis_server.write_config(layout, redis_port)
                rotate(layout.log("redis"))
                echo(f"redis: starting on {HOST}:{redis_port}")
                cmd = redis_server.command(redis_bin, layout)
                pids["redis"] = daemons.spawn(
                    layout, "redis", cmd, wanted["redis"], layout.redis_data
                )
                started.append("redis")
            if java is not None:
                echo(f"kafka: starting on {HOST}:{kafka_port}")
                cmd = broker.command(java, libs, layout)
                pids["kafka"] = daemons.spawn(layout, "kafka", cmd, wanted["kafka"], layout.root)
                started.append("kafka")

            wait_redis(layout, known(pids["redis"]), redis_port, deadline, timeout)
            seconds["redis"] = time.monotonic() - redis_t0
            if "redis" in started:
                echo(f"redis: ready in {seconds['redis']:.1f}s (pid {pids['redis']})")
            kafka_t0 = time.monotonic()
            wait_kafka(layout, known(pids["kafka"]), kafka_port, deadline, timeout)
            if listeners:
                grace = _LOGIN_GRACE if "kafka" in started else 0.0  # a reused one is ready
                wait_scram_logins(layout, known(pids["kafka"]), listeners, users, deadline, grace)
            # A started broker's time includes jar download and formatting: what users wait for.
            seconds["kafka"] = time.monotonic() - (began if java is not None else kafka_t0)
            if "kafka" in started:
                echo(f"kafka: ready in {seconds['kafka']:.1f}s (pid {pids['kafka']})")
        except BaseException:
            daemons.stop([(name, known(pids[name])) for name in started], lambda _msg: None)
            for name in started:
                forget(layout, name)
            raise

        for name in started:
            daemons.update_info(layout, name, up_seconds=round(seconds[name], 3))
        kafka, redis = (
            _component(layout, name, pids[name], wanted[name][0], seconds[name], name in started)
            for name in NAMES
        )
        return StackStatus(kafka=kafka, redis=redis, state_dir=layout.root)


def down(*, echo: Callable[[str], None] = print, state_dir: Path | None = None) -> None:
    """Stop only the processes `up` started from this state dir: SIGTERM, then SIGKILL.

    Data stays (so the next `up` is warm); pid files go. Anything else on the ports is left alone.
    """
    layout = Layout.at(state_dir)
    if not layout.run.is_dir():
        echo("stack is not running")
        return
    with locked(layout):
        targets: list[tuple[str, int]] = []
        for name in NAMES:
            pid = live_pid(layout, name)
            if pid is None:
                echo(f"{name}: not running")
                forget(layout, name)
            else:
                targets.append((name, pid))
        daemons.stop(targets, echo)
        for name, _pid in targets:
            forget(layout, name)


def status(
    *,
    kafka_port: int = 9092,
    redis_port: int = 6379,
    state_dir: Path | None = None,
) -> StackStatus:
    """Report what runs from this state dir without starting, stopping or writing anything.

    The ports only fill in `address` for components that are not running (a running one reports
    the address it was started with).
    """
    layout = Layout.at(state_dir)
    return StackStatus(
        kafka=_component(layout, "kafka", live_pid(layout, "kafka"), kafka_port, None, False),
        redis=_component(layout, "redis", live_pid(layout, "redis"), redis_port, None, False),
        state_dir=layout.root,
    )


def _component(
    layout: Layout,
    name: str,
    pid: int | None,
    port: int,
    seconds: float | None,
    started: bool,
) -> ComponentStatus:
    if pid is None:
        return ComponentStatus(name, False, None, f"{HOST}:{port}", None, False, layout.log(name))
    if seconds is None:
        recorded = daemons.read_info(layout, name).get("up_seconds")
        seconds = float(recorded) if isinstance(recorded, int | float) else None
    return ComponentStatus(
        name, True, pid, daemons.address(layout, name, port), seconds, started, layout.log(name)
    )
