"""docker-compose.yml and the Dockerfile agree with the code (no Docker needed).

Nothing here starts a container: the files are parsed and compared with what the code reads
(settings, topic names, CLI commands, the Kafka version `rfm stack` runs).
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from stream import stack
from stream.cli import main
from stream.config import Settings, load_settings
from stream.kafka.topics import Topics

ROOT = Path(__file__).resolve().parents[1]


class RecordingEnv(Mapping[str, str]):
    """An environment that remembers every name the settings code looks up."""

    def __init__(self, values: Mapping[str, str]) -> None:
        self.values = dict(values)
        self.read: set[str] = set()

    def __getitem__(self, key: str) -> str:
        self.read.add(key)
        return self.values[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.values)

    def __len__(self) -> int:
        return len(self.values)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def worker_env(compose: dict[str, Any]) -> dict[str, str]:
    env = compose["services"]["worker"]["environment"]
    assert isinstance(env, dict), "worker environment: use the mapping form"
    return {str(k): str(v) for k, v in env.items()}


def _env_of(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):  # KEY=VALUE list form
        env = dict(item.split("=", 1) for item in env)
    return {str(k): str(v) for k, v in env.items()}


def test_services_exist(compose: dict[str, Any]) -> None:
    assert {"kafka", "redis", "worker"} <= set(compose["services"])


def test_every_rfm_variable_is_a_setting_the_code_reads(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        env = {k: v for k, v in _env_of(service).items() if k.startswith("RFM_")}
        if not env:
            continue
        recording = RecordingEnv(env)
        load_settings(recording)  # raises ConfigError on a bad value
        unread = set(env) - recording.read
        assert not unread, f"service {name}: the code never reads {sorted(unread)}"


def _rfm_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        name: service
        for name, service in compose["services"].items()
        if service.get("build") or str(service.get("image", "")).startswith("rfm-stream")
    }


def test_the_rfm_services_are_all_there_and_run_existing_commands(compose: dict[str, Any]) -> None:
    services = _rfm_services(compose)
    assert set(services) == {"worker", "collect", "api", "campaigns"}
    for name, service in services.items():
        assert service["entrypoint"] == ["rfm"], name
        command, *args = service["command"]
        assert command in main.commands, name
        # files mounted into the container are checked at their source in the repository
        mounts = {m.split(":")[1]: str(ROOT / m.split(":")[0]) for m in service.get("volumes", [])}
        args = [mounts.get(a, a) for a in args]
        main.commands[command].make_context(command, args)  # its options parse


def test_http_services_listen_where_they_are_published(compose: dict[str, Any]) -> None:
    for name in ("collect", "api"):
        service = compose["services"][name]
        args = service["command"]
        host, port = args[args.index("--host") + 1], args[args.index("--port") + 1]
        assert host == "0.0.0.0", f"{name}: a container must listen beyond its own loopback"
        assert f"127.0.0.1:{port}:{port}" in service["ports"], name


def test_campaigns_rules_file_is_mounted_from_the_repository(compose: dict[str, Any]) -> None:
    service = compose["services"]["campaigns"]
    rules = service["command"][service["command"].index("--rules") + 1]
    mounts = {m.split(":")[1]: m.split(":")[0] for m in service["volumes"]}
    assert (ROOT / mounts[rules]).is_file()


def test_worker_settings_point_at_the_compose_services(worker_env: dict[str, str]) -> None:
    settings = load_settings(RecordingEnv(worker_env))
    assert settings.kafka_bootstrap == "kafka:9092"
    assert settings.redis_url == "redis://redis:6379/0"
    assert settings.topic_prefix == "rfm."


def test_topic_prefix_is_the_code_default(worker_env: dict[str, str]) -> None:
    assert worker_env["RFM_TOPIC_PREFIX"] == Settings().topic_prefix == Topics().prefix


def test_listed_topics_are_the_topics_the_worker_creates(
    compose: dict[str, Any], worker_env: dict[str, str]
) -> None:
    assert compose["x-rfm-topics"] == Topics(worker_env["RFM_TOPIC_PREFIX"]).all


def test_kafka_image_is_the_version_rfm_stack_runs(compose: dict[str, Any]) -> None:
    image = compose["services"]["kafka"]["image"]
    name, _, tag = image.partition(":")
    assert name == "apache/kafka"
    assert tag == stack.KAFKA_VERSION


def test_kafka_listeners_serve_containers_and_the_host_default(compose: dict[str, Any]) -> None:
    kafka = compose["services"]["kafka"]
    env = _env_of(kafka)
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft, single node
    advertised = {
        name: address
        for name, _, address in (
            item.partition("://") for item in env["KAFKA_ADVERTISED_LISTENERS"].split(",")
        )
    }
    listeners = {
        name: address.rpartition(":")[2]
        for name, _, address in (
            item.partition("://") for item in env["KAFKA_LISTENERS"].split(",")
        )
    }
    # containers: the worker's bootstrap is an advertised listener
    assert "kafka:9092" in advertised.values()
    # host: the code's default bootstrap is advertised, and published on loopback to that listener
    host_default = Settings().kafka_bootstrap
    host_listener = next((n for n, a in advertised.items() if a == host_default), None)
    assert host_listener, f"no listener advertises the code's default bootstrap {host_default}"
    assert f"{host_default}:{listeners[host_listener]}" in kafka["ports"]
    for key in (
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR",
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR",
        "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR",
    ):
        assert env[key] == "1", key
    assert env["KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS"] == "0"
    assert "-Xmx" in env["KAFKA_HEAP_OPTS"]


def test_redis_is_published_at_the_code_default(compose: dict[str, Any]) -> None:
    redis = compose["services"]["redis"]
    assert str(redis["image"]).startswith("redis:7")
    assert "--appendonly" in redis["command"]
    # redis://127.0.0.1:6379/0 -> 127.0.0.1:6379
    host_port = Settings().redis_url.removeprefix("redis://").partition("/")[0]
    assert any(str(p).startswith(f"{host_port}:") for p in redis["ports"])


def test_all_ports_are_loopback_only(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"


def test_worker_waits_for_healthy_dependencies(compose: dict[str, Any]) -> None:
    services = compose["services"]
    depends = services["worker"]["depends_on"]
    for dep in ("kafka", "redis"):
        assert depends[dep]["condition"] == "service_healthy"
        assert services[dep]["healthcheck"]["test"], f"{dep} needs a healthcheck"


def _dockerfile_exec_form(instruction: str) -> list[str]:
    for line in (ROOT / "Dockerfile").read_text(encoding="utf-8").splitlines():
        if line.startswith(f"{instruction} "):
            return json.loads(line.removeprefix(f"{instruction} "))
    raise AssertionError(f"Dockerfile has no {instruction}")


def test_worker_runs_an_existing_rfm_command(compose: dict[str, Any]) -> None:
    worker = compose["services"]["worker"]
    entrypoint = worker.get("entrypoint", _dockerfile_exec_form("ENTRYPOINT"))
    command = worker.get("command", _dockerfile_exec_form("CMD"))
    assert entrypoint == ["rfm"] == _dockerfile_exec_form("ENTRYPOINT")
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"][
        "scripts"
    ]
    assert scripts["rfm"] == "stream.cli:main"
    name, *args = command
    assert name == "worker"
    assert name in main.commands
    main.commands[name].make_context(name, list(args))  # its options parse


def test_dockerfile_default_is_the_worker() -> None:
    assert _dockerfile_exec_form("CMD") == ["worker"]
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert "FROM python:3.11-slim" in text
    assert any(line.startswith("USER ") and "root" not in line for line in text.splitlines())
