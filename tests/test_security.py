"""Least privilege and quiet logs: the scorer runs as a Redis ACL user that can touch only its
own key prefix, and neither the password nor any event payload reaches the worker's log.
Every route of `rfm api` needs its bearer token except the few named public on purpose."""

from __future__ import annotations

import asyncio
import re
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest
import redis
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from consumers.api.app import create_app
from stream.kafka import ensure_topics
from stream.kafka.topics import Topics
from tests.api_support import ApiServer
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


# Routes anyone may read, each with the reason. Everything else the app serves needs the token.
PUBLIC_ROUTES = {
    "/healthz": "the liveness probe of orchestrators and load balancers; says only ok or not",
    "/": "the dashboard's HTML shell: no data; it asks the operator for the token itself",
    "/static": "the shell's script and style sheet, the same for everyone, no data",
}
PATH_PARAM = re.compile(r"\{[^}]*\}")


def served_paths(isolated: Isolated, token: str) -> dict[str, tuple[str, list[str]]]:
    """Every route of the app `rfm api` runs, as the route's template -> (a concrete path
    to request, its methods). A path parameter gets a customer id; a mount is probed with
    each file it serves (a static directory) or one sub-path."""
    app = create_app(isolated.settings(), token=token)
    out: dict[str, tuple[str, list[str]]] = {}
    for route in app.routes:
        if isinstance(route, Route):
            methods = sorted(route.methods or {"GET"})
            out[route.path] = (PATH_PARAM.sub("c-001", route.path), methods)
        elif isinstance(route, Mount):
            inner = route.app
            if isinstance(inner, StaticFiles) and inner.directory is not None:
                for f in sorted(Path(inner.directory).iterdir()):
                    out[f"{route.path}/{f.name}"] = (f"{route.path}/{f.name}", ["GET", "HEAD"])
            else:
                out[route.path] = (f"{route.path}/probe", ["GET"])
        else:
            raise AssertionError(f"a route of a kind this test cannot probe: {route!r}")
    return out


def exempt(template: str) -> bool:
    return any(template == p or template.startswith(p + "/") for p in PUBLIC_ROUTES)


def test_every_route_but_the_named_public_ones_needs_the_token(isolated: Isolated) -> None:
    token = "sec-" + secrets.token_hex(16)
    paths = served_paths(isolated, token)
    assert "/api/model" in paths and "/api/customers/{customer_id:path}" in paths
    # every exemption still names something the app serves
    for name in PUBLIC_ROUTES:
        assert any(t == name or t.startswith(name + "/") for t in paths), name
    guarded = {t: v for t, v in paths.items() if not exempt(t)}
    public = {t: v for t, v in paths.items() if exempt(t)}
    assert len(guarded) >= 13, sorted(guarded)  # the data routes there are today

    wrong_headers: list[dict[str, str]] = [
        {},
        {"Authorization": f"Bearer {token}x"},
        {"Authorization": f"Bearer {token[:-1]}"},
        {"Authorization": token},
        {"Authorization": f"Basic {token}"},
        {"Authorization": "Bearer x"},
    ]
    with (
        ApiServer(isolated.process_env(), isolated.tmp / "api.log", token) as api,
        httpx.Client(base_url=api.url, timeout=30) as anon,
        api.client() as authed,
    ):
        refused: list[str] = []
        for template, (path, methods) in guarded.items():
            for method in methods:
                for headers in wrong_headers:
                    with anon.stream(method, path, headers=headers) as r:
                        if r.status_code != 401:
                            refused.append(f"{method} {path} {headers}: {r.status_code}")
                        elif method != "HEAD":
                            assert r.headers["www-authenticate"].startswith("Bearer")
            # with the token the same request reaches the handler (the probe is a real path)
            with authed.stream("GET", path) as r:
                assert r.status_code != 401, (template, r.status_code)
        assert not refused, "answered without the right token:\n" + "\n".join(refused)
        for template, (path, _) in public.items():
            with anon.stream("GET", path) as r:
                assert r.status_code == 200, (template, r.status_code)
