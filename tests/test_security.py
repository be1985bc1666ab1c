"""Least privilege and quiet logs: the scorer runs as a Redis ACL user that can touch only its
own key prefix, and neither the password nor any event payload reaches the worker's log."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Iterator

import orjson
import pytest
import redis

from stream.kafka import ensure_topics
from stream.topics import Topics
from tests.conftest import Isolated
from tests.support import WorkerProcess, produce, rfm, wait_for
from tests.test_pipeline import bad_payloads_sample

pytestmark = pytest.mark.integration


@pytest.fixture
def acl_user(isolated: Isolated) -> Iterator[tuple[str, str]]:
    admin = redis.Redis.from_url(isolated.infra.redis_url)
    user, password = f"{isolated.name}-scorer", secrets.token_hex(16)
    # Only this deployment's keys; no admin or keyspace-wide commands.
    admin.execute_command(
        "ACL",
        "SETUSER",
        user,
        "reset",
        "on",
        f">{password}",
        f"~{isolated.name}:*",
        "+@all",
        "-@admin",
        "-@dangerous",
        "+info",
    )
    try:
        yield user, password
    finally:
        admin.execute_command("ACL", "DELUSER", user)
        admin.close()


def test_worker_runs_as_a_prefix_scoped_acl_user_and_logs_no_secrets_or_payloads(
    isolated: Isolated, acl_user: tuple[str, str]
) -> None:
    user, password = acl_user
    host = isolated.infra.redis_url.split("://", 1)[1]
    url = f"redis://{user}:{password}@{host}"
    config = isolated.config_file('[scoring]\nclock = "event"\n')
    env = {**isolated.process_env(config), "RFM_REDIS_URL": url}
    settings = isolated.settings()
    topics = Topics(settings.topic_prefix)
    asyncio.run(ensure_topics(settings))
    # at debug level, the most talkative: libraries log raw records there unless kept quiet
    worker = WorkerProcess(env, isolated.tmp / "worker.log", loglevel="debug").start()
    now = int(time.time() * 1000)
    marker = "4242.17"  # a payload value that must never show up in a log
    docs = [
        {
            "event_id": f"e{n}",
            "type": "order_completed",
            "order_id": f"o{n}",
            "customer_id": f"secret-customer-{n % 7}",
            "amount": marker,
            "currency": "TWD",
            "occurred_at": now - n * 60_000,
        }
        for n in range(50)
    ]
    messages = [(topics.orders, d["customer_id"].encode(), orjson.dumps(d)) for d in docs]
    messages += [(topics.orders, b"k", p) for p in bad_payloads_sample(now)]
    try:
        produce(settings, messages)
        scoped = redis.Redis.from_url(url)
        try:
            wait_for(
                lambda: int(scoped.hget(f"{isolated.name}:stats", "accepted") or 0) >= 50,
                timeout=90,
                what="the orders applied through the ACL user",
                diagnose=worker.tail,
            )
            with pytest.raises(redis.exceptions.NoPermissionError):
                scoped.get("someone-else:key")  # outside its prefix: refused
        finally:
            scoped.close()
        assert worker.alive, worker.tail()
    finally:
        worker.stop()
    exported = rfm(isolated, config, "export")  # the CLI as the admin user
    assert len(exported.splitlines()) == 7
    log = worker.log.read_text(errors="replace")
    assert password not in log
    assert marker not in log and "secret-customer" not in log
