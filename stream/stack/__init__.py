"""Local Apache Kafka (KRaft) + Redis on loopback: the engine behind `rfm stack up|down|status`.

Why it exists: the scorer needs a broker and a Redis, and Docker is not always available. The
broker runs on our own JVM from Maven-resolved jars (fetched once into a per-user cache), Redis
from the system `redis-server`. Both bind 127.0.0.1 only, keep their data and logs under one
state dir, and outlive the `rfm stack up` that started them so `rfm worker` & co. can use them.
Processes are recognised as ours by pid file + /proc cmdline (which names our config file), so
`up` is idempotent and `down` never signals anything it did not start. No topics are created here.

Optionally the broker also listens for SASL_PLAINTEXT and/or SASL_SSL (a self-signed certificate
made once per state dir, see `ca_file`) with SCRAM-SHA-256/512 for the users given to `up`: a real
SASL broker to point the scorer's SASL and TLS settings at.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import fcntl
import hashlib
import itertools
import json
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

__all__ = [
    "HOST",
    "KAFKA_VERSION",
    "SCRAM_MECHANISMS",
    "ComponentStatus",
    "StackError",
    "StackStatus",
    "ca_file",
    "default_libs_dir",
    "default_state_dir",
    "down",
    "status",
    "up",
]

KAFKA_VERSION = "3.9.1"
HOST = "127.0.0.1"  # loopback only: the plain listeners have no authentication
# What the optional SASL_PLAINTEXT listener accepts; every user gets a credential for each.
SCRAM_MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-512")
_SCRAM_ITERATIONS = 4096  # Kafka's minimum (and default)
_SCRAM_USER = re.compile(r"[A-Za-z0-9._@-]{1,128}")  # nothing the format tool's parser splits on

_KAFKA_JAR = f"kafka_2.13-{KAFKA_VERSION}.jar"  # present only once a jar download completed
# Heap capped so the broker fits next to workers on a small box. SerialGC measurably shortens
# start-up on 2 cores (see module tests/report); C2 stays on because benchmarks run on this broker.
_KAFKA_JVM = ("-Xms256m", "-Xmx512m", "-XX:+UseSerialGC", "-Djava.awt.headless=true")
# The one-shot storage formatter never runs long enough for C2 to pay off.
_TOOL_JVM = ("-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1")
_NAMES = ("kafka", "redis")
_STOP_GRACE = 30.0  # a KRaft broker's controlled shutdown takes a few seconds
_KILL_GRACE = 10.0
_POLL = 0.1
# Once a fresh broker answers, a SCRAM login that still fails after this is a wrong credential.
_LOGIN_GRACE = 10.0

# Popen objects of processes this Python process started: kept so they are reaped (no zombies
# that still look alive) and so no "still running" ResourceWarning fires when they outlive us.
_children: dict[int, subprocess.Popen[bytes]] = {}


class StackError(Exception):
    """A one-line message saying what is wrong and how to fix it; the CLI prints it as is."""


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


def default_state_dir() -> Path:
    """`$RFM_STACK_DIR`, else `$XDG_CACHE_HOME/rfm`, else `~/.cache/rfm`: per user, not per repo."""
    explicit = os.environ.get("RFM_STACK_DIR")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg and Path(xdg).is_absolute() else Path.home() / ".cache"
    return base / "rfm"


def default_libs_dir(state_dir: Path | None = None) -> Path:
    """`$RFM_KAFKA_LIBS`, else `<state dir>/kafka-<version>/libs`: stacks share one download."""
    explicit = os.environ.get("RFM_KAFKA_LIBS")
    if explicit:
        return Path(explicit).expanduser()
    return (state_dir or default_state_dir()) / f"kafka-{KAFKA_VERSION}" / "libs"


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
    users = _check_sasl(listeners, sasl_users)
    _check_port_numbers(kafka_port, controller_port, redis_port, *listeners.values())
    layout = _Layout.at(state_dir)
    layout.make()
    libs = (libs_dir or default_libs_dir(layout.root)).expanduser().resolve()
    ports = {"kafka": (kafka_port, controller_port, *listeners.values()), "redis": (redis_port,)}
    roles = {"kafka": ("kafka", "kafka controller", *listeners), "redis": ("redis",)}
    with _locked(layout):
        pids = {name: _live_pid(layout, name) for name in _NAMES}
        for name in _NAMES:
            if pids[name] is None:
                _forget(layout, name)
            else:
                _check_same_ports(layout, name, pids[name], ports[name])
                address = _address(layout, name, ports[name][0])
                echo(f"{name}: already running on {address} (pid {pids[name]})")
        # Everything that can fail without side effects comes before the first process starts.
        redis_bin = _redis_server() if pids["redis"] is None else None
        java = _java() if pids["kafka"] is None else None
        for name in _NAMES:
            if pids[name] is None:
                for port, role in zip(ports[name], roles[name], strict=True):
                    _check_port_free(port, role)
        if java is not None:
            _ensure_libs(libs, layout, deadline, echo)
            if "SASL_SSL" in listeners:
                _ensure_tls(java, layout, deadline)
            _write_kafka_config(layout, kafka_port, controller_port, listeners)
            _rotate(layout.log("kafka"))
            _format_storage(java, libs, layout, deadline, echo, users)

        started: list[str] = []
        seconds: dict[str, float] = {}
        try:
            redis_t0 = time.monotonic()
            if redis_bin is not None:
                _write_redis_config(layout, redis_port)
                _rotate(layout.log("redis"))
                echo(f"redis: starting on {HOST}:{redis_port}")
                cmd = [redis_bin, str(layout.config("redis"))]
                pids["redis"] = _spawn(layout, "redis", cmd, ports["redis"], layout.redis_data)
                started.append("redis")
            if java is not None:
                echo(f"kafka: starting on {HOST}:{kafka_port}")
                cmd = [java, *_KAFKA_JVM, *_log4j_args(layout), "-cp", _classpath(libs)]
                cmd += ["kafka.Kafka", str(layout.config("kafka"))]
                pids["kafka"] = _spawn(layout, "kafka", cmd, ports["kafka"], layout.root)
                started.append("kafka")

            _wait_redis(layout, _known(pids["redis"]), redis_port, deadline, timeout)
            seconds["redis"] = time.monotonic() - redis_t0
            if "redis" in started:
                echo(f"redis: ready in {seconds['redis']:.1f}s (pid {pids['redis']})")
            kafka_t0 = time.monotonic()
            _wait_kafka(layout, _known(pids["kafka"]), kafka_port, deadline, timeout)
            if listeners:
                grace = _LOGIN_GRACE if "kafka" in started else 0.0  # a reused one is ready
                _wait_scram_logins(layout, _known(pids["kafka"]), listeners, users, deadline, grace)
            # A started broker's time includes jar download and formatting: what users wait for.
            seconds["kafka"] = time.monotonic() - (began if java is not None else kafka_t0)
            if "kafka" in started:
                echo(f"kafka: ready in {seconds['kafka']:.1f}s (pid {pids['kafka']})")
        except BaseException:
            _stop([(name, _known(pids[name])) for name in started], lambda _msg: None)
            for name in started:
                _forget(layout, name)
            raise

        for name in started:
            _update_info(layout, name, up_seconds=round(seconds[name], 3))
        kafka, redis = (
            _component(layout, name, pids[name], ports[name][0], seconds[name], name in started)
            for name in _NAMES
        )
        return StackStatus(kafka=kafka, redis=redis, state_dir=layout.root)


def down(*, echo: Callable[[str], None] = print, state_dir: Path | None = None) -> None:
    """Stop only the processes `up` started from this state dir: SIGTERM, then SIGKILL.

    Data stays (so the next `up` is warm); pid files go. Anything else on the ports is left alone.
    """
    layout = _Layout.at(state_dir)
    if not layout.run.is_dir():
        echo("stack is not running")
        return
    with _locked(layout):
        targets: list[tuple[str, int]] = []
        for name in _NAMES:
            pid = _live_pid(layout, name)
            if pid is None:
                echo(f"{name}: not running")
                _forget(layout, name)
            else:
                targets.append((name, pid))
        _stop(targets, echo)
        for name, _pid in targets:
            _forget(layout, name)


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
    layout = _Layout.at(state_dir)
    return StackStatus(
        kafka=_component(layout, "kafka", _live_pid(layout, "kafka"), kafka_port, None, False),
        redis=_component(layout, "redis", _live_pid(layout, "redis"), redis_port, None, False),
        state_dir=layout.root,
    )


def ca_file(state_dir: Path | None = None) -> Path:
    """The certificate clients trust for the SASL_SSL listener (`RFM_KAFKA_SSL_CAFILE`).

    Self-signed for 127.0.0.1 and localhost, made on the first `up` with a `sasl_ssl_port`.
    """
    return _Layout.at(state_dir).tls / "ca.pem"


# --- layout -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Layout:
    """Where one stack keeps its files; the config paths double as the ownership marker."""

    root: Path

    @classmethod
    def at(cls, state_dir: Path | None) -> _Layout:
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
    def kafka_home(self) -> Path:
        return self.root / f"kafka-{KAFKA_VERSION}"

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
def _locked(layout: _Layout) -> Iterator[None]:
    """Serialise up/down on one state dir (two `up`s at once must not start two brokers)."""
    layout.run.mkdir(parents=True, exist_ok=True)
    with open(layout.run / "stack.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _rotate(log: Path) -> None:
    """Keep the previous run's log as `.1`, so logs stay bounded without a log daemon."""
    if log.exists():
        os.replace(log, log.with_name(log.name + ".1"))


# --- processes --------------------------------------------------------------------------------


def _known(pid: int | None) -> int:
    if pid is None:  # pragma: no cover - up() fills every pid before waiting
        raise AssertionError("pid missing")
    return pid


def _alive(pid: int) -> bool:
    child = _children.get(pid)
    if child is not None:
        return child.poll() is None
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return False
    state = stat[stat.rfind(b")") + 2 :][:1]  # the field after "(comm)"; comm may hold spaces
    return state not in (b"Z", b"X", b"")


def _owned(layout: _Layout, name: str, pid: int) -> bool:
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


def _live_pid(layout: _Layout, name: str) -> int | None:
    try:
        pid = int(layout.pid_file(name).read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if pid > 0 and _alive(pid) and _owned(layout, name, pid) else None


def _read_info(layout: _Layout, name: str) -> dict[str, Any]:
    try:
        info = json.loads(layout.info_file(name).read_text())
    except (OSError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}


def _update_info(layout: _Layout, name: str, **fields: Any) -> None:
    info = _read_info(layout, name)
    info.update(fields)
    _write_atomic(layout.info_file(name), json.dumps(info, sort_keys=True) + "\n")


def _forget(layout: _Layout, name: str) -> None:
    for path in (layout.pid_file(name), layout.info_file(name)):
        path.unlink(missing_ok=True)


def _address(layout: _Layout, name: str, default_port: int) -> str:
    return str(_read_info(layout, name).get("address") or f"{HOST}:{default_port}")


def _component(
    layout: _Layout,
    name: str,
    pid: int | None,
    port: int,
    seconds: float | None,
    started: bool,
) -> ComponentStatus:
    if pid is None:
        return ComponentStatus(name, False, None, f"{HOST}:{port}", None, False, layout.log(name))
    if seconds is None:
        recorded = _read_info(layout, name).get("up_seconds")
        seconds = float(recorded) if isinstance(recorded, int | float) else None
    return ComponentStatus(
        name, True, pid, _address(layout, name, port), seconds, started, layout.log(name)
    )


def _spawn(layout: _Layout, name: str, cmd: list[str], ports: tuple[int, ...], cwd: Path) -> int:
    """Start a daemon in its own session so it survives our exit and terminal hang-ups."""
    with open(layout.log(name), "ab") as out:
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            start_new_session=True,
        )
    _children[proc.pid] = proc
    _write_atomic(layout.pid_file(name), f"{proc.pid}\n")
    info: dict[str, Any] = {"address": f"{HOST}:{ports[0]}", "ports": list(ports)}
    _write_atomic(layout.info_file(name), json.dumps(info, sort_keys=True) + "\n")
    return proc.pid


def _signal_group(pid: int, sig: int) -> None:
    """Signal the daemon's whole session group (we made pgid == pid), e.g. redis fork children."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def _wait_gone(pids: list[int], deadline: float) -> list[int]:
    while True:
        pids = [pid for pid in pids if _alive(pid)]
        if not pids or time.monotonic() >= deadline:
            return pids
        time.sleep(_POLL)


def _stop(targets: list[tuple[str, int]], echo: Callable[[str], None]) -> None:
    for name, pid in targets:
        echo(f"{name}: stopping (pid {pid})")
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    stubborn = _wait_gone([pid for _, pid in targets], time.monotonic() + _STOP_GRACE)
    for name, pid in targets:
        if pid in stubborn:
            echo(f"{name}: still running after {_STOP_GRACE:.0f}s; sending SIGKILL")
            _signal_group(pid, signal.SIGKILL)
    survivors = _wait_gone(stubborn, time.monotonic() + _KILL_GRACE)
    for name, pid in targets:
        _signal_group(pid, signal.SIGKILL)  # stragglers of an exited leader, if any
        _children.pop(pid, None)
        if pid in survivors:
            raise StackError(f"{name} (pid {pid}) survived SIGKILL: check it with `ps -p {pid}`")
        echo(f"{name}: stopped")


# --- preflight --------------------------------------------------------------------------------


def _check_port_numbers(*ports: int) -> None:
    for port in ports:
        if not 0 < port < 65536:
            raise StackError(f"port {port} is not a valid TCP port: use 1-65535")
    if len(set(ports)) != len(ports):
        raise StackError(f"ports {', '.join(map(str, ports))} must all differ: pick distinct ports")


def _check_sasl(listeners: Mapping[str, int], users: Mapping[str, str] | None) -> dict[str, str]:
    users = dict(users or {})
    if not listeners:
        if users:
            raise StackError("SCRAM users need a SASL listener: give a SASL port as well")
        return users
    if not users:
        raise StackError("a SASL listener needs at least one SCRAM user (name and password)")
    for name, password in users.items():
        if not _SCRAM_USER.fullmatch(name):
            raise StackError(
                f"SCRAM user name {name!r} is not supported: use 1-128 of A-Z a-z 0-9 . _ @ -"
            )
        if not password:
            raise StackError(f"SCRAM user {name!r} has an empty password: give it one")
    return users


def _check_same_ports(layout: _Layout, name: str, pid: int | None, wanted: tuple[int, ...]) -> None:
    have = _read_info(layout, name).get("ports")
    if isinstance(have, list) and tuple(have) != wanted:
        raise StackError(
            f"{name} is already running on {_address(layout, name, wanted[0])} (pid {pid}), "
            f"not on the requested port(s) {', '.join(map(str, wanted))}: "
            "run `rfm stack down` first"
        )


_PORT_HINT = {
    "kafka": "stop it or set RFM_KAFKA_BOOTSTRAP to use it",
    "kafka controller": "stop it or choose another controller port",
    "redis": "stop it or set RFM_REDIS_URL to use it",
}


def _check_port_free(port: int, role: str) -> None:
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


def _java() -> str:
    home = os.environ.get("JAVA_HOME")
    if home and os.access(Path(home) / "bin" / "java", os.X_OK):
        return str(Path(home) / "bin" / "java")
    found = shutil.which("java")
    if found is None:
        raise StackError(
            "java not found on PATH: install a Java 17 runtime "
            "(apt-get install openjdk-17-jre-headless)"
        )
    return found


def _redis_server() -> str:
    found = shutil.which("redis-server")
    if found is None:
        raise StackError(
            "redis-server not found on PATH: install it "
            "(apt-get install redis-server, or run scripts/ensure-redis.sh)"
        )
    return found


# --- kafka ------------------------------------------------------------------------------------


def _classpath(libs: Path) -> str:
    return f"{libs}/*"  # the JVM expands the wildcard itself


def _log4j_args(layout: _Layout) -> list[str]:
    target = layout.conf / "log4j.properties"
    template = resources.files(__package__ or __name__).joinpath("log4j.properties")
    _write_atomic(target, template.read_text(encoding="utf-8"))
    return [f"-Dlog4j.configuration=file:{target}"]


def _ensure_libs(libs: Path, layout: _Layout, deadline: float, echo: Callable[[str], None]) -> None:
    """Fetch the broker jars with Maven once; later starts (any state dir) reuse them."""
    if (libs / _KAFKA_JAR).is_file():
        return
    if libs.is_dir() and any(libs.iterdir()):
        raise StackError(
            f"{libs} holds no {_KAFKA_JAR}: delete that directory so the jars can be fetched again"
        )
    mvn = shutil.which("mvn")
    if mvn is None:
        raise StackError(
            f"mvn not found on PATH: install Maven (apt-get install maven) to fetch the Kafka "
            f"{KAFKA_VERSION} jars once, or set RFM_KAFKA_LIBS to a directory holding them"
        )
    echo(f"kafka: fetching Kafka {KAFKA_VERSION} jars with Maven into {libs} (first use only)")
    layout.kafka_home.mkdir(parents=True, exist_ok=True)
    pom = layout.kafka_home / "pom.xml"  # a copy, so Maven never writes into the installed package
    _write_atomic(pom, resources.files(__package__ or __name__).joinpath("pom.xml").read_text())
    libs.parent.mkdir(parents=True, exist_ok=True)
    partial = libs.with_name(f"{libs.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    log = layout.log("maven")
    cmd = [
        mvn,
        "-q",
        "-B",
        "-Dstyle.color=never",
        "-f",
        str(pom),
        "dependency:copy-dependencies",
        f"-DoutputDirectory={partial}",
        "-DincludeScope=runtime",
    ]
    code = _run_logged(cmd, log, None, deadline)
    if code is None:
        shutil.rmtree(partial, ignore_errors=True)
        raise StackError(
            f"Maven did not finish fetching the Kafka jars in time: see {log}, "
            f"then retry with a longer timeout"
        )
    if code != 0 or not (partial / _KAFKA_JAR).is_file():
        shutil.rmtree(partial, ignore_errors=True)
        raise StackError(
            f"Maven could not fetch the Kafka {KAFKA_VERSION} jars (exit {code}): see {log}"
        )
    if libs.is_dir():
        with contextlib.suppress(OSError):
            libs.rmdir()  # an empty placeholder; a complete one from a racing `up` stays
    try:
        os.rename(partial, libs)  # atomic: a libs dir with the broker jar is always complete
    except OSError:
        shutil.rmtree(partial, ignore_errors=True)
        if not (libs / _KAFKA_JAR).is_file():
            raise


def _run_logged(cmd: list[str], log: Path, cwd: Path | None, deadline: float) -> int | None:
    """Run a one-shot tool, its output appended to `log`; its exit code, None if out of time."""
    try:
        with open(log, "ab") as out:
            return subprocess.run(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                timeout=max(1.0, deadline - time.monotonic()),
                check=False,
            ).returncode
    except subprocess.TimeoutExpired:
        return None


def _java_props(props: dict[str, str]) -> str:
    """java.util.Properties text (Kafka reads it as ISO-8859-1, so escape the rest)."""

    def esc(value: str) -> str:
        value = value.replace("\\", "\\\\")
        return "".join(c if ord(c) < 128 else f"\\u{ord(c):04x}" for c in value)

    lines = ["# written by `rfm stack up` on every start; edits are overwritten"]
    lines += [f"{key}={esc(value)}" for key, value in props.items()]
    return "\n".join(lines) + "\n"


def _write_kafka_config(
    layout: _Layout, port: int, controller_port: int, sasl_listeners: Mapping[str, int]
) -> None:
    listeners = f"PLAINTEXT://{HOST}:{port},CONTROLLER://{HOST}:{controller_port}"
    advertised = f"PLAINTEXT://{HOST}:{port}"
    protocols = "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT"
    sasl: dict[str, str] = {}
    # Clients only: brokers and the controller keep talking over the plain listeners.
    for protocol, sasl_port in sasl_listeners.items():  # listener name = protocol name
        listeners += f",{protocol}://{HOST}:{sasl_port}"
        advertised += f",{protocol}://{HOST}:{sasl_port}"
        protocols += f",{protocol}:{protocol}"
        sasl["sasl.enabled.mechanisms"] = ",".join(SCRAM_MECHANISMS)
        prefix = f"listener.name.{protocol.lower()}"
        for mechanism in SCRAM_MECHANISMS:  # the broker side needs no secret, only the module
            key = f"{prefix}.{mechanism.lower()}.sasl.jaas.config"
            sasl[key] = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
        if protocol == "SASL_SSL":
            sasl[f"{prefix}.ssl.keystore.type"] = "PKCS12"
            sasl[f"{prefix}.ssl.keystore.location"] = str(layout.tls / _KEYSTORE)
            sasl[f"{prefix}.ssl.keystore.password"] = (layout.tls / _KEYSTORE_PASS).read_text()
    props = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@{HOST}:{controller_port}",
        "listeners": listeners,
        "advertised.listeners": advertised,
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": protocols,
        **sasl,
        "log.dirs": str(layout.kafka_data),
        # a single node: every internal topic has exactly one replica
        "offsets.topic.replication.factor": "1",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "group.initial.rebalance.delay.ms": "0",
    }
    _write_atomic(layout.config("kafka"), _java_props(props))


_KEYSTORE = "broker.p12"
_KEYSTORE_PASS = "broker.p12.password"


def _ensure_tls(java: str, layout: _Layout, deadline: float) -> None:
    """Once per state dir: a self-signed key pair for 127.0.0.1/localhost, and its certificate
    as the PEM clients trust. Made with the JDK's keytool; the store password goes by file."""
    if (layout.tls / _KEYSTORE).is_file() and ca_file(layout.root).is_file():
        return
    keytool = Path(java).resolve().parent / "keytool"
    if not os.access(keytool, os.X_OK):
        found = shutil.which("keytool")
        if found is None:
            raise StackError("keytool not found next to java or on PATH: install a full JDK/JRE")
        keytool = Path(found)
    shutil.rmtree(layout.tls, ignore_errors=True)  # a half-made set from an interrupted `up`
    layout.tls.mkdir(mode=0o700, parents=True)
    password_file = layout.tls / _KEYSTORE_PASS
    fd = os.open(password_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(secrets.token_hex(16))  # guards the key at rest like the dir's own mode
    store = ["-keystore", _KEYSTORE, "-storetype", "PKCS12", "-storepass:file", _KEYSTORE_PASS]
    key = [
        "-keyalg",
        "EC",
        "-groupname",
        "secp256r1",
        "-validity",
        "3650",
        "-dname",
        "CN=rfm-stack",
    ]
    steps = [
        ["-genkeypair", "-alias", "broker", *key, "-ext", f"SAN=ip:{HOST},dns:localhost", *store],
        ["-exportcert", "-rfc", "-alias", "broker", "-file", ca_file(layout.root).name, *store],
    ]
    log = layout.log("kafka")
    for step in steps:
        code = _run_logged([str(keytool), *step], log, layout.tls, deadline)
        if code != 0:
            shutil.rmtree(layout.tls, ignore_errors=True)
            failed = "timed out" if code is None else f"failed (exit {code})"
            raise StackError(f"keytool {failed} making the broker's TLS key: see {log}")


def _cluster_id(layout: _Layout) -> str:
    with contextlib.suppress(OSError):
        remembered = layout.cluster_id_file.read_text().strip()
        if remembered:
            return remembered
    while True:  # Kafka's own generator also avoids ids that look like a CLI flag
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            break
    _write_atomic(layout.cluster_id_file, cluster_id + "\n")
    return cluster_id


def _scram_credential(mechanism: str, name: str, password: str) -> str:
    """The format tool's `--add-scram` value, salted here so no password reaches the tool.

    SaltedPassword = PBKDF2-HMAC(password, salt, iterations) (RFC 5802), which the tool turns
    into the stored and server keys the broker keeps.
    """
    digest = mechanism.removeprefix("SCRAM-").replace("-", "").lower()  # sha256 / sha512
    salt = secrets.token_bytes(16)
    salted = hashlib.pbkdf2_hmac(digest, password.encode(), salt, _SCRAM_ITERATIONS)
    b64 = base64.b64encode
    return (
        f"{mechanism}=[name={name},iterations={_SCRAM_ITERATIONS},"
        f'salt="{b64(salt).decode()}",saltedpassword="{b64(salted).decode()}"]'
    )


def _format_storage(
    java: str,
    libs: Path,
    layout: _Layout,
    deadline: float,
    echo: Callable[[str], None],
    users: Mapping[str, str],
) -> None:
    """KRaft refuses to start on an unformatted log dir; format it once per state dir.

    SCRAM users go into the metadata log here. Their credentials travel in a private argument
    file (the java launcher expands `@file`), never on a command line other users can read.
    """
    if (layout.kafka_data / "meta.properties").is_file():
        return
    echo(f"kafka: formatting storage in {layout.kafka_data} (first start of this state dir)")
    args = ["kafka.tools.StorageTool", "format", "--ignore-formatted", "-t", _cluster_id(layout)]
    args += ["-c", layout.config("kafka").name]  # relative to cwd: no path to quote below
    for name, password in users.items():
        for mechanism in SCRAM_MECHANISMS:
            args += ["--add-scram", _scram_credential(mechanism, name, password)]
    # Every argument is from a quote-free alphabet (checked names, base64, our file names).
    argfile = layout.conf / f".format-{os.getpid()}.args"
    fd = os.open(argfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write("".join(f"'{arg}'\n" for arg in args))
    cmd = [java, *_TOOL_JVM, *_log4j_args(layout), "-cp", _classpath(libs), f"@{argfile}"]
    log = layout.log("kafka")
    try:
        code = _run_logged(cmd, log, layout.conf, deadline)
    finally:
        argfile.unlink(missing_ok=True)
    if code is None:
        raise StackError(f"formatting Kafka storage timed out: see {log}")
    if code != 0:
        raise StackError(f"formatting Kafka storage failed (exit {code}): see {log}")


# --- redis ------------------------------------------------------------------------------------


def _redis_quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _write_redis_config(layout: _Layout, port: int) -> None:
    lines = [
        "# written by `rfm stack up` on every start; edits are overwritten",
        f"bind {HOST}",
        f"port {port}",
        "protected-mode yes",
        "daemonize no",
        f"dir {_redis_quote(str(layout.redis_data))}",
        f"logfile {_redis_quote(str(layout.log('redis')))}",
        "appendonly yes",
        # The AOF is the durability; RDB snapshots on top forked the server every minute
        # under write load (a 20 s copy-on-write save at 1,000,000 customers on 2 cores).
        'save ""',
        # puts our config path into /proc/<pid>/cmdline: that is how we recognise our redis
        'proc-title-template "{title} {listen-addr} {server-mode} {config-file}"',
    ]
    _write_atomic(layout.config("redis"), "\n".join(lines) + "\n")


# --- readiness --------------------------------------------------------------------------------


def _check_still_running(layout: _Layout, name: str, pid: int) -> None:
    if not _alive(pid):
        child = _children.get(pid)
        code = f" (exit {child.returncode})" if child is not None else ""
        raise StackError(f"{name} exited during start-up{code}: see {layout.log(name)}")


def _wait_redis(layout: _Layout, pid: int, port: int, deadline: float, timeout: float) -> None:
    """Ready means a PING answered, not merely an open port (AOF loading answers LOADING)."""
    import redis

    client = redis.Redis(host=HOST, port=port, socket_connect_timeout=1.0, socket_timeout=1.0)
    try:
        while True:
            with contextlib.suppress(redis.RedisError):
                if client.ping():
                    return
            _check_still_running(layout, "redis", pid)
            if time.monotonic() >= deadline:
                raise StackError(
                    f"redis did not answer PING on {HOST}:{port} within {timeout:.0f}s: "
                    f"see {layout.log('redis')}"
                )
            time.sleep(_POLL)
    finally:
        client.close()


def _wait_kafka(layout: _Layout, pid: int, port: int, deadline: float, timeout: float) -> None:
    """Ready means a metadata request answered with a registered broker."""

    async def poll() -> None:
        while not await _probe_kafka({"bootstrap_servers": f"{HOST}:{port}"}, deadline):
            _check_still_running(layout, "kafka", pid)
            if time.monotonic() >= deadline:
                raise StackError(
                    f"kafka did not answer a metadata request on {HOST}:{port} within "
                    f"{timeout:.0f}s: see {layout.log('kafka')}"
                )
            await asyncio.sleep(_POLL)

    with _quiet_aiokafka():
        _run_coroutine(poll)


def _wait_scram_logins(
    layout: _Layout,
    pid: int,
    listeners: Mapping[str, int],
    users: Mapping[str, str],
    deadline: float,
    grace: float,
) -> None:
    """Ready for SASL means every user logs in with every mechanism on every SASL listener
    (over TLS trusting only `ca_file`): the broker's own verdict.

    Runs after `_wait_kafka`, so a login still refused after `grace` is a credential the broker
    does not hold (e.g. a state dir formatted before this user was asked for).
    """

    async def poll() -> None:
        from aiokafka.helpers import create_ssl_context

        for (protocol, port), (name, password), mechanism in itertools.product(
            listeners.items(), users.items(), SCRAM_MECHANISMS
        ):
            options: dict[str, Any] = {
                "bootstrap_servers": f"{HOST}:{port}",
                "security_protocol": protocol,
                "sasl_mechanism": mechanism,
                "sasl_plain_username": name,
                "sasl_plain_password": password,
            }
            if protocol == "SASL_SSL":
                options["ssl_context"] = create_ssl_context(cafile=str(ca_file(layout.root)))
            give_up = min(deadline, time.monotonic() + grace)
            while not await _probe_kafka(options, deadline):
                _check_still_running(layout, "kafka", pid)
                if time.monotonic() >= give_up:
                    raise StackError(
                        f"SCRAM user {name!r} cannot log in ({protocol}, {mechanism}) on "
                        f"{HOST}:{port}: users are stored only when a state dir is first "
                        f"formatted, so {layout.root} may hold none or another password; use "
                        f"a fresh state dir, or `rfm stack down` and delete {layout.kafka_data}"
                    )
                await asyncio.sleep(_POLL)

    with _quiet_aiokafka():
        _run_coroutine(poll)


async def _probe_kafka(options: dict[str, Any], deadline: float) -> bool:
    """One metadata round trip with these client options; False on any connection failure."""
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.errors import KafkaError

    budget = max(0.5, min(5.0, deadline - time.monotonic()))
    admin = AIOKafkaAdminClient(
        **options, client_id="rfm-stack", request_timeout_ms=int(budget * 1000)
    )
    try:
        await asyncio.wait_for(admin.start(), budget)
        cluster = await asyncio.wait_for(admin.describe_cluster(), budget)
        return bool(cluster.get("brokers"))
    except (KafkaError, OSError, TimeoutError):
        return False
    finally:
        with contextlib.suppress(Exception):
            await admin.close()


@contextlib.contextmanager
def _quiet_aiokafka() -> Iterator[None]:
    """aiokafka logs every refused connection at ERROR; while the broker boots that is expected."""
    quiet = logging.getLogger("aiokafka")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        quiet.setLevel(level)


def _run_coroutine(factory: Callable[[], Any]) -> None:
    """asyncio.run, also from code that already runs an event loop (e.g. `rfm demo`)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        asyncio.run(factory())
        return
    with ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(lambda: asyncio.run(factory())).result()
