"""Topics the broker will not create stop start-up with a message naming them and the setting
to check, never a silent return. On the real broker: Kafka treats '.' and '_' in topic names
alike, so once ``<prefix>_orders`` exists it refuses ``<prefix>.orders``, which never appears."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from stream.config import Settings
from stream.kafka import TopicsUnavailable, client_options, ensure_topics
from stream.kafka.topics import Topics
from tests.conftest import Isolated

pytestmark = pytest.mark.integration


async def _admin(
    settings: Settings, create: str | None = None, delete: str | None = None
) -> set[str]:
    """Create or delete one topic; returns the topics listed afterwards."""
    admin = AIOKafkaAdminClient(**client_options(settings))
    await admin.start()
    try:
        if create is not None:
            response = await admin.create_topics([NewTopic(create, 1, 1)])
            assert [code for _topic, code, *_ in response.topic_errors] == [0], response
        if delete is not None:
            await admin.delete_topics([delete])
        return set(await admin.list_topics())
    finally:
        await admin.close()


@pytest.fixture
def refused(isolated: Isolated) -> Iterator[str]:
    """The orders topic of ``isolated``, made impossible to create; the squatter that blocks
    it is not under the test's prefix, so it is deleted here."""
    settings = isolated.settings()
    orders = Topics(settings.topic_prefix).orders
    squatter = orders.replace(".", "_")
    assert squatter != orders
    asyncio.run(_admin(settings, create=squatter))
    try:
        yield orders
    finally:
        asyncio.run(_admin(settings, delete=squatter))


def test_topics_that_never_appear_are_named_with_the_setting(
    isolated: Isolated, refused: str
) -> None:
    settings = isolated.settings()
    with pytest.raises(TopicsUnavailable) as caught:
        asyncio.run(ensure_topics(settings, timeout=2))
    message = str(caught.value)
    assert refused in message, message
    assert "RFM_KAFKA_BOOTSTRAP" in message and settings.kafka_bootstrap in message, message
    assert "collides with existing topic" in message, message  # the broker's own reason
    others = set(Topics(settings.topic_prefix).all) - {refused}
    assert [t for t in others if t in message] == [], message  # only what is missing
    listed = asyncio.run(_admin(settings))
    assert others <= listed and refused not in listed


def test_worker_start_up_stops_with_that_message(isolated: Isolated, refused: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "stream.cli", "worker", "--loglevel", "warn"],
        env=isolated.process_env(),
        capture_output=True,
        text=True,
        timeout=60,  # the worker gives up after ensure_topics' 10 s
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    assert "Traceback" not in output, output
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("Error: "), output
    assert refused in last and "RFM_KAFKA_BOOTSTRAP" in last, output
    assert isolated.settings().kafka_bootstrap in last, output
