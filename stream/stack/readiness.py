"""When a started daemon counts as ready: it answered a real round trip, not just a port.

Redis must answer PING (while it loads its AOF it answers LOADING), the broker a metadata
request naming a broker, and on SASL listeners every user must log in. Each wait gives up
at once when the daemon exits, and at the deadline with a message naming its log.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Callable, Coroutine, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from stream.process import wait_until
from stream.stack.daemons import check_running
from stream.stack.errors import StackError
from stream.stack.layout import HOST, Layout
from stream.stack.security import SCRAM_MECHANISMS, ca_file

T = TypeVar("T")


def wait_redis(layout: Layout, pid: int, port: int, deadline: float, timeout: float) -> None:
    """Ready means a PING answered, not merely an open port (AOF loading answers LOADING)."""
    import redis

    client = redis.Redis(host=HOST, port=port, socket_connect_timeout=1.0, socket_timeout=1.0)

    def pong() -> bool:
        with contextlib.suppress(redis.RedisError):
            return bool(client.ping())
        return False

    try:
        if not wait_until(
            pong, deadline=deadline, check=lambda: check_running(layout, "redis", pid)
        ):
            raise StackError(
                f"redis did not answer PING on {HOST}:{port} within {timeout:.0f}s: "
                f"see {layout.log('redis')}"
            )
    finally:
        client.close()


def wait_kafka(layout: Layout, pid: int, port: int, deadline: float, timeout: float) -> None:
    """Ready means a metadata request answered with a registered broker."""
    failure = (
        f"kafka did not answer a metadata request on {HOST}:{port} within "
        f"{timeout:.0f}s: see {layout.log('kafka')}"
    )
    options = {"bootstrap_servers": f"{HOST}:{port}"}
    _wait_broker(layout, pid, options, deadline, give_up=deadline, failure=failure)


def wait_scram_logins(
    layout: Layout,
    pid: int,
    listeners: Mapping[str, int],
    users: Mapping[str, str],
    deadline: float,
    grace: float,
) -> None:
    """Ready for SASL means every user logs in with every mechanism on every SASL listener
    (over TLS trusting only `ca_file`): the broker's own verdict.

    Runs after `wait_kafka`, so a login still refused after `grace` is a credential the broker
    does not hold (e.g. a state dir formatted before this user was asked for).
    """
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
        failure = (
            f"SCRAM user {name!r} cannot log in ({protocol}, {mechanism}) on "
            f"{HOST}:{port}: users are stored only when a state dir is first "
            f"formatted, so {layout.root} may hold none or another password; use "
            f"a fresh state dir, or `rfm stack down` and delete {layout.kafka_data}"
        )
        give_up = min(deadline, time.monotonic() + grace)
        _wait_broker(layout, pid, options, deadline, give_up=give_up, failure=failure)


def _wait_broker(
    layout: Layout,
    pid: int,
    options: dict[str, Any],
    deadline: float,
    *,
    give_up: float,
    failure: str,
) -> None:
    """Metadata round trips with these client options until one answers; StackError(failure)
    if none has by `give_up`, another if the broker exits first."""
    with _quiet_aiokafka():
        answered = wait_until(
            lambda: _run(lambda: _probe_kafka(options, deadline)),
            deadline=give_up,
            check=lambda: check_running(layout, "kafka", pid),
        )
    if not answered:
        raise StackError(failure)


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


def _run(factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """asyncio.run, also from code that already runs an event loop (e.g. `rfm demo`)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(factory())
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(lambda: asyncio.run(factory())).result()
