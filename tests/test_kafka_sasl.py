"""Kafka SASL/SCRAM (issue: security): topic creation, producers and a real `rfm worker` talk to
a SASL_PLAINTEXT and a SASL_SSL (TLS) listener with SCRAM-SHA-256 on a private stack on free
ports (the shared one is untouched); a wrong password is refused at once with a clear error; no
secret or payload reaches a log."""

from __future__ import annotations

import asyncio
import logging
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import orjson
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaConnectionError

from stream import stack
from stream.config import Settings, settings_from
from stream.kafka import client_options, ensure_topics
from stream.kafka.topics import Topics
from tests.api_support import order
from tests.conftest import Infra, Isolated
from tests.ports import free_ports
from tests.support import WorkerProcess, produce, read_topic, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

USER = "rfm-scorer"


def stack_ports() -> dict[str, int]:
    """stack.up's port arguments: five free loopback ports."""
    kafka, controller, redis_port, sasl, sasl_ssl = free_ports(5)
    return {
        "kafka_port": kafka,
        "controller_port": controller,
        "redis_port": redis_port,
        "sasl_port": sasl,
        "sasl_ssl_port": sasl_ssl,
    }


def up(state: Path, ports: dict[str, int], users: dict[str, str]) -> stack.StackStatus:
    return stack.up(
        state_dir=state,
        libs_dir=stack.default_libs_dir(),  # share the one download with the suite's stack
        echo=lambda _m: None,
        sasl_users=users,
        **ports,
    )


@dataclass(frozen=True)
class SaslStack:
    state: Path
    ports: dict[str, int]
    password: str
    redis_url: str

    def listener(self, protocol: str) -> int:
        return self.ports[{"SASL_PLAINTEXT": "sasl_port", "SASL_SSL": "sasl_ssl_port"}[protocol]]

    def deployment(
        self, protocol: str, name: str, tmp: Path, password: str | None = None
    ) -> Deployment:
        infra = Infra(f"127.0.0.1:{self.listener(protocol)}", self.redis_url, "private stack")
        password = self.password if password is None else password
        return Deployment(Isolated(infra, name, tmp), protocol, password, stack.ca_file(self.state))


@dataclass(frozen=True)
class Deployment:
    """One test's slice of the private stack, reached through one SASL listener as USER."""

    iso: Isolated
    protocol: str  # SASL_PLAINTEXT or SASL_SSL
    password: str
    ca_file: Path | None  # what the client trusts over TLS (None: the system's CAs)

    @property
    def env(self) -> dict[str, str]:
        env = {
            **self.iso.env,
            "RFM_KAFKA_SECURITY_PROTOCOL": self.protocol,
            "RFM_KAFKA_SASL_MECHANISM": "SCRAM-SHA-256",
            "RFM_KAFKA_SASL_USERNAME": USER,
            "RFM_KAFKA_SASL_PASSWORD": self.password,
        }
        if self.protocol == "SASL_SSL" and self.ca_file is not None:
            env["RFM_KAFKA_SSL_CAFILE"] = str(self.ca_file)
        return env

    def settings(self) -> Settings:
        return settings_from(self.env, {})

    def process_env(self, config: Path) -> dict[str, str]:
        return {**self.iso.process_env(config), **self.env}


def refusal(deployment: Deployment, caplog: pytest.LogCaptureFixture) -> str:
    """Connect as ``deployment``, which must fail promptly; what aiokafka logged about why."""

    async def connect() -> None:
        admin = AIOKafkaAdminClient(**client_options(deployment.settings()))
        try:
            await asyncio.wait_for(admin.start(), 20)  # a hang fails the test as TimeoutError
        finally:
            await admin.close()

    with caplog.at_level(logging.ERROR, logger="aiokafka"), pytest.raises(KafkaConnectionError):
        asyncio.run(connect())
    return caplog.text


@pytest.fixture(scope="module")
def sasl_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SaslStack]:
    state = tmp_path_factory.mktemp("sasl") / "stack"
    password = secrets.token_urlsafe(24)
    ports = stack_ports()
    try:
        status = up(state, ports, {USER: password})
        yield SaslStack(state, ports, password, f"redis://{status.redis.address}/0")
    finally:
        stack.down(state_dir=state, echo=lambda _m: None)


@pytest.mark.parametrize("protocol", ["SASL_PLAINTEXT", "SASL_SSL"])
def test_worker_scores_over_sasl_scram_and_logs_no_password_or_payload(
    sasl_stack: SaslStack, tmp_path: Path, protocol: str
) -> None:
    deployment = sasl_stack.deployment(protocol, protocol.lower().replace("_", ""), tmp_path)
    config = deployment.iso.config_file('[scoring]\nclock = "event"\n')
    settings = deployment.settings()
    topics = Topics(settings.topic_prefix)
    asyncio.run(ensure_topics(settings))  # over SASL too
    now = int(time.time() * 1000)
    marker = "4242.17"  # a payload value that must never show up in a log
    orders = [order(n, f"secret-customer-{n}", 424217, now - n * 60_000) for n in range(5)]
    assert all(o["amount"] == marker for o in orders)
    malformed = b'{"customer_id": "secret-customer-bad", "amount": "4242.17"'  # cut short
    messages = [(topics.orders, o["customer_id"].encode(), orjson.dumps(o)) for o in orders]
    messages.append((topics.orders, b"secret-customer-bad", malformed))
    worker = WorkerProcess(deployment.process_env(config), tmp_path / "worker.log").start()
    try:
        produce(settings, messages)
        changes = wait_for(
            lambda: found if len(found := read_topic(settings, topics.changes)) >= 5 else None,
            timeout=90,
            what="a segment change per customer, read back over SASL",
            diagnose=worker.tail,
        )
        letters = wait_for(
            lambda: read_topic(settings, topics.dlq),
            timeout=30,
            what="the malformed order in the DLQ",
            diagnose=worker.tail,
        )
        assert worker.alive, worker.tail()
    finally:
        worker.stop()

    assert {c.json()["customer_id"] for c in changes} == {o["customer_id"] for o in orders}
    assert [letter.json()["payload"] for letter in letters] == [malformed.decode()]
    log = worker.log.read_text(errors="replace")
    assert f"Authenticated as {USER} via SCRAM-SHA-256" in log, worker.tail()  # aiokafka, INFO
    assert sasl_stack.password not in log
    assert marker not in log and "secret-customer" not in log
    # The stack itself never wrote the password anywhere either (it salts it before formatting).
    for path in sasl_stack.state.rglob("*"):
        if path.is_file():
            assert sasl_stack.password.encode() not in path.read_bytes(), path


def test_a_wrong_password_is_refused_at_once_with_a_clear_error(
    sasl_stack: SaslStack, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = secrets.token_urlsafe(24)
    deployment = sasl_stack.deployment("SASL_PLAINTEXT", "saslbad", tmp_path, password=wrong)
    reason = refusal(deployment, caplog)
    assert "SaslAuthenticationFailed" in reason, reason

    # The worker gives up with the broker's reason instead of waiting forever.
    done = subprocess.run(
        [sys.executable, "-m", "stream.cli", "worker", "--loglevel", "warn"],
        env=deployment.process_env(deployment.iso.config_file("")),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    assert "SaslAuthenticationFailed" in output and "invalid credentials" in output, output
    assert wrong not in output and sasl_stack.password not in output


def test_tls_refuses_a_client_that_does_not_trust_the_broker_certificate(
    sasl_stack: SaslStack, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    deployment = replace(sasl_stack.deployment("SASL_SSL", "tls", tmp_path), ca_file=None)
    reason = refusal(deployment, caplog)
    assert "CERTIFICATE_VERIFY_FAILED" in reason, reason


def test_up_again_reuses_the_broker_and_names_a_user_it_does_not_hold(
    sasl_stack: SaslStack,
) -> None:
    again = up(sasl_stack.state, sasl_stack.ports, {USER: sasl_stack.password})
    assert again.kafka.running and not again.kafka.started
    # SCRAM users are written when a state dir is formatted: a later user is reported, not
    # silently missing (and the running broker is left alone).
    with pytest.raises(stack.StackError, match="'late-user' cannot log in"):
        up(sasl_stack.state, sasl_stack.ports, {"late-user": "x"})
    assert stack.status(state_dir=sasl_stack.state).kafka.pid == again.kafka.pid
