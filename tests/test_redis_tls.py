"""Redis over TLS with an ACL user: the scorer needs nothing but a ``rediss://`` URL.

The test starts its own TLS-only redis-server (Debian's build speaks TLS) with a certificate
made here by openssl, and a worker that reaches it with ``rediss://user:pass@...`` and the
CA file in the URL; Kafka is the shared test broker.
"""

from __future__ import annotations

import asyncio
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest
import redis

from stream.kafka import ensure_topics
from stream.kafka.topics import Topics
from stream.process import Child
from tests.api_support import free_port
from tests.conftest import Isolated
from tests.support import WorkerProcess, produce, read_topic, wait_for

pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class TlsRedis:
    port: int
    ca_file: Path

    def url(self, user: str, password: str, *, trusted: bool = True) -> str:
        query = f"?ssl_ca_certs={self.ca_file}" if trusted else ""
        return f"rediss://{user}:{password}@127.0.0.1:{self.port}/0{query}"

    def admin(self) -> redis.Redis:
        return redis.Redis.from_url(
            f"rediss://127.0.0.1:{self.port}/0", ssl_ca_certs=str(self.ca_file)
        )


@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[TlsRedis]:
    if shutil.which("openssl") is None or shutil.which("redis-server") is None:
        pytest.fail("openssl and redis-server are needed (scripts/bootstrap installs redis)")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
            "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )  # fmt: skip
    port = free_port()
    server = TlsRedis(port, cert)
    admin = server.admin()
    proc = Child(
        "TLS redis-server",
        [
            "redis-server", "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
            "--tls-cert-file", str(cert), "--tls-key-file", str(key),
            "--tls-ca-cert-file", str(cert), "--tls-auth-clients", "no",
            "--save", "", "--appendonly", "no", "--dir", str(tmp_path),
        ],
        None,
        tmp_path / "redis.log",
    ).start()  # fmt: skip
    try:
        proc.wait_ready(lambda: _pings(admin), timeout=30, what="PONG over TLS")
        yield server
    finally:
        admin.close()
        proc.stop()


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False


def test_the_worker_scores_over_tls_as_an_acl_user_and_an_untrusted_server_is_refused(
    isolated: Isolated, tls_redis: TlsRedis
) -> None:
    user, password = "scorer", secrets.token_hex(16)
    admin = tls_redis.admin()
    admin.execute_command(
        "ACL", "SETUSER", user, "reset", "on", f">{password}", f"~{isolated.name}:*",
        "+@all", "-@admin", "-@dangerous", "+info",
    )  # fmt: skip
    admin.close()
    url = tls_redis.url(user, password)
    config = isolated.config_file('[scoring]\nclock = "event"\n')
    env = {**isolated.process_env(config), "RFM_REDIS_URL": url}
    settings = isolated.settings()
    topics = Topics(settings.topic_prefix)
    asyncio.run(ensure_topics(settings))
    worker = WorkerProcess(env, isolated.tmp / "worker.log").start()
    try:
        marker = f"tls-{secrets.token_hex(4)}"
        orders = [
            {
                "event_id": f"{marker}-{n}",
                "type": "order_completed",
                "order_id": f"o{n}",
                "customer_id": f"c{n % 3}",
                "amount": "250.00",
                "currency": "TWD",
                "occurred_at": 1_790_000_000_000 + n,
            }
            for n in range(9)
        ]
        produce(
            settings, [(topics.orders, o["customer_id"].encode(), orjson.dumps(o)) for o in orders]
        )
        client = redis.Redis.from_url(url)
        try:
            wait_for(
                lambda: int(client.hget(f"{isolated.name}:stats", "accepted") or 0) == 9,
                timeout=90,
                what="9 orders applied over TLS",
                diagnose=worker.tail,
            )
            counts = {
                k.decode(): int(v) for k, v in client.hgetall(f"{isolated.name}:counts").items()
            }
        finally:
            client.close()
        assert sum(counts.values()) == 3
        changes = wait_for(
            lambda: found if len(found := read_topic(settings, topics.changes)) >= 3 else None,
            timeout=30,
            what="the first segment changes",
        )
        assert {c.json()["customer_id"] for c in changes} == {"c0", "c1", "c2"}
    finally:
        worker.stop()
    log = (isolated.tmp / "worker.log").read_text(errors="replace")
    assert password not in log and marker not in log

    # Without the CA the certificate is not trusted: a clear refusal, not a silent plain retry.
    untrusted = {
        **isolated.process_env(config),
        "RFM_REDIS_URL": tls_redis.url(user, password, trusted=False),
    }
    done = subprocess.run(
        [sys.executable, "-m", "stream.cli", "export"],
        env=untrusted,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0
    assert "CERTIFICATE_VERIFY_FAILED" in done.stderr and "RFM_REDIS_URL" in done.stderr
    assert "Traceback" not in done.stderr  # an operator's problem, said in one line
    assert password not in done.stdout + done.stderr
