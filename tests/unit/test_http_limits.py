"""The limits of the HTTP services without a server: their settings (errors naming the
setting), the exposure rule, allowed Host names, the shared live-counts poller and the
health probe's cache."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from consumers.api.guard import allowed_hosts
from consumers.api.live import LiveCounts
from stream.config import ConfigError, ServerSettings, settings_from
from stream.http_server import exposure_problem, is_loopback
from stream.probe_cache import CachedProbe


def test_defaults() -> None:
    s = settings_from({}, {})
    for server in (s.api.server, s.collect.server):
        assert server == ServerSettings()
        assert (server.header_timeout_s, server.body_timeout_s) == (10.0, 10.0)
        assert server.max_connections == 1000 and server.tls_certfile is None
        assert server.allow_unauthenticated is False
    assert s.api.token is None
    assert (s.api.redis_connections, s.api.redis_wait_s, s.api.heavy_requests) == (50, 5.0, 2)


def test_values() -> None:
    table = {
        "header_timeout": "3s",
        "body_timeout": "1m",
        "max_connections": 200,
        "tls_certfile": "/c.pem",
        "tls_keyfile": "/k.pem",
        "allow_unauthenticated": True,
    }
    s = settings_from(
        {"RFM_API_TOKEN": "x" * 16},
        {"api": {**table, "redis_connections": 8, "redis_wait": "2s", "heavy_requests": 5}},
    )
    assert s.api.server == ServerSettings(3.0, 60.0, 200, "/c.pem", "/k.pem", True)
    assert (s.api.token, s.api.redis_connections, s.api.redis_wait_s) == ("x" * 16, 8, 2.0)
    assert s.api.heavy_requests == 5
    assert settings_from({}, {"collect": table}).collect.server == s.api.server


@pytest.mark.parametrize(
    ("env", "toml", "setting"),
    [
        ({"RFM_API_TOKEN": "x" * 15}, {}, "RFM_API_TOKEN"),
        ({"RFM_API_TOKEN": " " + "x" * 20}, {}, "RFM_API_TOKEN"),
        ({}, {"api": {"header_timeout": "100ms"}}, "api.header_timeout"),
        ({}, {"api": {"body_timeout": "1h"}}, "api.body_timeout"),
        ({}, {"api": {"max_connections": 5}}, "api.max_connections"),
        ({}, {"api": {"tls_certfile": "/c.pem"}}, "api.tls_keyfile"),
        ({}, {"api": {"tls_keyfile": "/k.pem"}}, "api.tls_certfile"),
        ({}, {"api": {"tls_certfile": 3, "tls_keyfile": "/k"}}, "api.tls_certfile"),
        ({}, {"api": {"allow_unauthenticated": "yes"}}, "api.allow_unauthenticated"),
        ({}, {"api": {"redis_connections": 1}}, "api.redis_connections"),
        ({}, {"api": {"redis_wait": "soon"}}, "api.redis_wait"),
        ({}, {"api": {"heavy_requests": 0}}, "api.heavy_requests"),
        ({}, {"api": {"port": 1}}, "api.port"),
        ({}, {"collect": {"header_timeout": "0s"}}, "collect.header_timeout"),
        ({}, {"collect": {"allow_unauthenticated": 1}}, "collect.allow_unauthenticated"),
    ],
)
def test_bad_values_name_the_setting(
    env: dict[str, str], toml: dict[str, Any], setting: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        settings_from(env, toml)
    assert str(caught.value).startswith(f"{setting}:"), caught.value


def test_loopback_is_127_slash_8_the_ipv6_one_and_localhost() -> None:
    for host in ("127.0.0.1", "127.0.0.2", "127.255.0.9", "::1", "[::1]", "localhost"):
        assert is_loopback(host), host
    for host in ("0.0.0.0", "::", "10.0.0.5", "192.168.1.1", "127.example", "myhost", ""):
        assert not is_loopback(host), host


def test_exposure_needs_credentials_or_a_knowing_opt_out() -> None:
    closed, opened = ServerSettings(), ServerSettings(allow_unauthenticated=True)
    problem = exposure_problem("0.0.0.0", "api", closed, "RFM_API_TOKEN")
    assert problem is not None and problem.startswith("RFM_API_TOKEN: required")
    assert "api.allow_unauthenticated" in problem
    assert exposure_problem("0.0.0.0", "api", opened, "RFM_API_TOKEN") is None
    assert exposure_problem("0.0.0.0", "api", closed, None) is None
    assert exposure_problem("127.0.0.2", "api", closed, "RFM_API_TOKEN") is None


def test_the_bound_loopback_address_is_an_allowed_host() -> None:
    assert allowed_hosts("127.0.0.2") == {"127.0.0.1", "localhost", "::1", "127.0.0.2"}
    assert allowed_hosts("[::1]") == {"127.0.0.1", "localhost", "::1"}
    assert allowed_hosts("0.0.0.0") is None


class FakeCounts:
    """Counts a test changes at will; every read is counted; ``fail`` makes reads raise."""

    def __init__(self) -> None:
        self.counts = {"champions": 1}
        self.reads = 0
        self.fail = False

    async def read(self) -> dict[str, int]:
        self.reads += 1
        if self.fail:
            raise ConnectionError("Redis is gone")
        return dict(self.counts)


async def _first(stream: Any, n: int) -> list[bytes]:
    return [await anext(stream) for _ in range(n)]


def test_one_read_per_tick_however_many_streams() -> None:
    async def run() -> tuple[int, int, list[list[bytes]]]:
        source = FakeCounts()
        live = LiveCounts(source.read, interval=0.02)
        streams = [live.stream() for _ in range(100)]
        firsts = await asyncio.gather(*(_first(s, 2) for s in streams))
        reads_before = source.reads
        # wait for ten more reads (polling, with a deadline): one poller reads once a tick,
        # while a read per stream would jump by a hundred at once
        deadline = asyncio.get_running_loop().time() + 10
        while source.reads - reads_before < 10:
            assert asyncio.get_running_loop().time() < deadline, "the poller stopped reading"
            await asyncio.sleep(0.002)  # poll
        ticks = source.reads - reads_before
        source.counts = {"champions": 2}
        seconds = await asyncio.gather(*(_first(s, 1) for s in streams))
        for s in streams:
            await s.aclose()
        await live.aclose()
        return ticks, live.subscribers, [f + s for f, s in zip(firsts, seconds, strict=True)]

    ticks, left, seen = asyncio.run(run())
    assert 10 <= ticks <= 12, ticks  # per tick, not per stream (100 streams: a hundred a tick)
    assert left == 0
    for events in seen:
        assert events[0] == b"retry: 1000\n\n"
        assert b'"champions":1' in events[1] and b'"champions":2' in events[2]


def test_a_failed_read_ends_every_stream_with_one_log_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def run() -> list[list[bytes]]:
        source = FakeCounts()
        live = LiveCounts(source.read, interval=0.02)
        streams = [live.stream() for _ in range(50)]
        await asyncio.gather(*(_first(s, 2) for s in streams))
        source.fail = True

        async def rest(stream: Any) -> list[bytes]:
            return [chunk async for chunk in stream]

        async with asyncio.timeout(5):
            return list(await asyncio.gather(*(rest(s) for s in streams)))

    with caplog.at_level(logging.WARNING, logger="rfm.api"):
        rests = asyncio.run(run())
    assert all(r == [] for r in rests), rests[:3]
    lines = [r for r in caplog.records if "live counts" in r.getMessage()]
    assert len(lines) == 1 and "ConnectionError" in lines[0].getMessage()
    assert lines[0].exc_info is None


def test_the_health_ping_is_shared_and_kept_for_its_ttl() -> None:
    now = [100.0]
    pings = [0]

    async def ping() -> None:
        pings[0] += 1
        await asyncio.sleep(0.01)

    async def run() -> list[str | None]:
        cached = CachedProbe(ping, ttl=1.0, clock=lambda: now[0])
        answers = list(await asyncio.gather(*(cached.problem() for _ in range(300))))
        now[0] += 0.5
        answers.append(await cached.problem())
        assert pings[0] == 1
        now[0] += 0.6
        answers.append(await cached.problem())
        return answers

    answers = asyncio.run(run())
    assert answers == [None] * 302 and pings[0] == 2


def test_the_health_ping_names_the_failure_class_only() -> None:
    async def ping() -> None:
        raise ConnectionError("redis://user:secret@host refused")

    assert asyncio.run(CachedProbe(ping).problem()) == "ConnectionError"


def test_every_503_of_the_api_says_when_to_retry() -> None:
    """Redis unreachable: the health probe and a data route both answer 503 with Retry-After."""
    import httpx

    from consumers.api.app import create_app

    token = "t" * 24
    settings = settings_from({"RFM_REDIS_URL": "redis://127.0.0.1:1/0"}, {})
    app = create_app(settings, token=token)

    async def run() -> tuple[httpx.Response, httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c:
            health = await c.get("/healthz")
            data = await c.get("/api/segments", headers={"authorization": f"Bearer {token}"})
        return health, data

    health, data = asyncio.run(run())
    assert (health.status_code, data.status_code) == (503, 503), (health.text, data.text)
    assert health.headers.get("retry-after") == data.headers.get("retry-after") == "2"
