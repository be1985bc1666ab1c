"""Kafka SASL/SCRAM (issue: security): topic creation, producers and a real `rfm worker` talk to
a SASL_PLAINTEXT listener with SCRAM-SHA-256 on a private stack (the shared one is untouched);
a wrong password is refused at once with a clear error; no secret or payload reaches a log."""

from __future__ import annotations

import asyncio
import logging
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaConnectionError

from stream import stack
from stream.config import Settings, settings_from
from stream.kafka import client_options, ensure_topics
from stream.topics import Topics
from tests.api_support import order
from tests.conftest import Infra, Isolated
from tests.support import WorkerProcess, produce, read_topic, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

SASL_PORT = 29194  # beside kafka 29192, controller 29193, redis 26479: clear of other tests
USER = "rfm-scorer"


def up(state: Path, users: dict[str, str]) -> stack.StackStatus:
    return stack.up(
        state_dir=state,
        libs_dir=stack.default_libs_dir(),  # share the one download with the suite's stack
        echo=lambda _m: None,
        kafka_port=29192,
        controller_port=29193,
        redis_port=26479,
        sasl_port=SASL_PORT,
        sasl_users=users,
    )


@dataclass(frozen=True)
class SaslStack:
    state: Path
    password: str
    infra: Infra  # bootstrap = the SASL listener

    def env(self, iso: Isolated, password: str | None = None) -> dict[str, str]:
        """The deployment's RFM_* settings, pointed at the SASL listener as USER."""
        return {
            **iso.env,
            "RFM_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
            "RFM_KAFKA_SASL_MECHANISM": "SCRAM-SHA-256",
            "RFM_KAFKA_SASL_USERNAME": USER,
            "RFM_KAFKA_SASL_PASSWORD": self.password if password is None else password,
        }

    def settings(self, iso: Isolated, password: str | None = None) -> Settings:
        return settings_from(self.env(iso, password), {})

    def process_env(
        self, iso: Isolated, config: Path, password: str | None = None
    ) -> dict[str, str]:
        return {**iso.process_env(config), **self.env(iso, password)}


@pytest.fixture(scope="module")
def sasl_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SaslStack]:
    state = tmp_path_factory.mktemp("sasl") / "stack"
    password = secrets.token_urlsafe(24)
    try:
        status = up(state, {USER: password})
        yield SaslStack(
            state,
            password,
            Infra(f"127.0.0.1:{SASL_PORT}", f"redis://{status.redis.address}/0", "sasl stack"),
        )
    finally:
        stack.down(state_dir=state, echo=lambda _m: None)


def test_worker_scores_over_sasl_scram_and_logs_no_password_or_payload(
    sasl_stack: SaslStack, tmp_path: Path
) -> None:
    iso = Isolated(sasl_stack.infra, "sasl", tmp_path)
    config = iso.config_file('[scoring]\nclock = "event"\n')
    settings = sasl_stack.settings(iso)
    topics = Topics(settings.topic_prefix)
    asyncio.run(ensure_topics(settings))  # over SASL too
    now = int(time.time() * 1000)
    marker = "4242.17"  # a payload value that must never show up in a log
    orders = [order(n, f"secret-customer-{n}", 424217, now - n * 60_000) for n in range(5)]
    assert all(o["amount"] == marker for o in orders)
    malformed = b'{"customer_id": "secret-customer-bad", "amount": "4242.17"'  # cut short
    messages = [(topics.orders, o["customer_id"].encode(), orjson.dumps(o)) for o in orders]
    messages.append((topics.orders, b"secret-customer-bad", malformed))
    worker = WorkerProcess(sasl_stack.process_env(iso, config), tmp_path / "worker.log").start()
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
    iso = Isolated(sasl_stack.infra, "saslbad", tmp_path)
    wrong = secrets.token_urlsafe(24)

    async def connect() -> None:
        admin = AIOKafkaAdminClient(**client_options(sasl_stack.settings(iso, wrong)))
        try:
            await asyncio.wait_for(admin.start(), 20)
        finally:
            await admin.close()

    with caplog.at_level(logging.ERROR, logger="aiokafka"), pytest.raises(KafkaConnectionError):
        asyncio.run(connect())
    assert "SaslAuthenticationFailed" in caplog.text, caplog.text

    # The worker gives up with the broker's reason instead of waiting forever.
    config = iso.config_file("")
    done = subprocess.run(
        [sys.executable, "-m", "stream.cli", "worker", "--loglevel", "warn"],
        env=sasl_stack.process_env(iso, config, wrong),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    assert "SaslAuthenticationFailed" in output and "invalid credentials" in output, output
    assert wrong not in output and sasl_stack.password not in output


def test_up_again_reuses_the_broker_and_names_a_user_it_does_not_hold(
    sasl_stack: SaslStack,
) -> None:
    again = up(sasl_stack.state, {USER: sasl_stack.password})
    assert again.kafka.running and not again.kafka.started
    # SCRAM users are written when a state dir is formatted: a later user is reported, not
    # silently missing (and the running broker is left alone).
    with pytest.raises(stack.StackError, match="'late-user' cannot log in"):
        up(sasl_stack.state, {"late-user": "x"})
    assert stack.status(state_dir=sasl_stack.state).kafka.pid == again.kafka.pid
