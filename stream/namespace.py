"""A namespace: one deployment's slice of a shared Kafka and Redis, named by one word.

Namespace ``NAME`` is topic prefix ``NAME.`` and key prefix ``NAME:``; its consumer groups
(the workers' ``NAME.scorer``, the campaign consumer's ``NAME.campaigns``) and Faust's
internal topics carry the topic prefix too. The default deployment is namespace ``rfm``;
the demo runs in ``demo``. A name holds no ``.`` or ``:``, so no namespace's prefix is
the start of another's (``demo`` never reaches into ``demo.x``).

``reset`` removes a namespace: its Redis keys (SCAN by prefix, on every primary of a
cluster), its topics and its consumer groups. It refuses while a consumer group of the
namespace has members, since a running worker would write its state straight back.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.protocol.admin import DeleteGroupsRequest

from stream.config import Settings
from stream.kafka.options import client_options
from stream.store.redis_store import connect

NAME = re.compile(r"[A-Za-z0-9_-]{1,60}")
_PAGE = 1000  # keys per SCAN page and per UNLINK


class NamespaceError(ValueError):
    """A bad name, or a namespace that cannot be removed now; the message says why."""


@dataclass(frozen=True)
class Namespace:
    name: str

    def __post_init__(self) -> None:
        if not NAME.fullmatch(self.name):
            raise NamespaceError(
                f"namespace: 1-60 letters, digits, '_' or '-' (no '.' or ':', which end its "
                f"prefixes); got {self.name!r}"
            )

    @property
    def topic_prefix(self) -> str:
        return f"{self.name}."

    @property
    def key_prefix(self) -> str:
        return f"{self.name}:"

    @property
    def env(self) -> dict[str, str]:
        """What points a process (and every `rfm` command) at this namespace."""
        return {
            "RFM_TOPIC_PREFIX": self.topic_prefix,
            "RFM_KEY_PREFIX": self.key_prefix,
            "RFM_GROUP_ID": f"{self.topic_prefix}scorer",
        }

    def settings(self, base: Settings) -> Settings:
        """``base`` (connections, scoring) moved into this namespace."""
        return replace(
            base,
            topic_prefix=self.topic_prefix,
            key_prefix=self.key_prefix,
            group_id=f"{self.topic_prefix}scorer",
        )

    def holds(self, settings: Settings) -> bool:
        """``settings`` write into this namespace (by either prefix)."""
        return settings.topic_prefix == self.topic_prefix or settings.key_prefix == self.key_prefix


@dataclass(frozen=True)
class Contents:
    """What a namespace holds right now."""

    keys: int
    topics: tuple[str, ...]
    groups: tuple[str, ...]
    active: dict[str, int]  # group -> members, for the groups that have any

    @property
    def empty(self) -> bool:
        return not (self.keys or self.topics or self.groups)


def _glob(prefix: str) -> str:
    return "".join("\\" + ch if ch in "*?[]\\" else ch for ch in prefix) + "*"


def _redis(settings: Settings) -> Any:
    return connect(settings.redis_url, cluster=settings.redis_cluster)


async def _count_keys(settings: Settings, ns: Namespace) -> int:
    client = _redis(settings)
    try:
        n = 0
        async for _ in client.scan_iter(match=_glob(ns.key_prefix), count=_PAGE):
            n += 1
        return n
    finally:
        await client.aclose()


async def _drop_keys(settings: Settings, ns: Namespace) -> int:
    """UNLINK every key under the prefix; a cluster client splits each batch by slot."""
    client = _redis(settings)
    deleted = 0
    try:
        batch: list[bytes] = []
        async for key in client.scan_iter(match=_glob(ns.key_prefix), count=_PAGE):
            batch.append(key)
            if len(batch) >= _PAGE:
                deleted += await client.unlink(*batch)
                batch.clear()
        if batch:
            deleted += await client.unlink(*batch)
        return deleted
    finally:
        await client.aclose()


async def _groups(admin: AIOKafkaAdminClient, ns: Namespace) -> tuple[list[str], dict[str, int]]:
    """The namespace's consumer groups, and the members of those that have any."""
    names = sorted(
        {g[0] for g in await admin.list_consumer_groups() if g[0].startswith(ns.topic_prefix)}
    )
    active: dict[str, int] = {}
    for name in names:
        for response in await admin.describe_consumer_groups([name]):
            for group in response.groups:
                # (error_code, group_id, state, protocol_type, protocol, members, ...)
                if group[1] == name and group[5]:
                    active[name] = len(group[5])
    return names, active


async def survey(settings: Settings, ns: Namespace) -> Contents:
    admin = AIOKafkaAdminClient(**client_options(settings))
    await admin.start()
    try:
        topics = sorted(t for t in await admin.list_topics() if t.startswith(ns.topic_prefix))
        groups, active = await _groups(admin, ns)
    finally:
        await admin.close()
    return Contents(await _count_keys(settings, ns), tuple(topics), tuple(groups), active)


async def _delete_groups(admin: AIOKafkaAdminClient, groups: list[str]) -> None:
    """DeleteGroups to each group's coordinator: aiokafka 0.14's admin client has the
    request type but no method for it. An empty group only keeps committed offsets, so a
    refusal here is not worth failing the reset for."""
    for name in groups:
        node = await admin.find_coordinator(name)
        await admin._send_request(DeleteGroupsRequest([name]), node)


async def reset(settings: Settings, ns: Namespace) -> Contents:
    """Remove the namespace's keys, topics and consumer groups; returns what was removed.
    Raises ``NamespaceError`` (and removes nothing) while any of its groups has members."""
    admin = AIOKafkaAdminClient(**client_options(settings))
    await admin.start()
    try:
        groups, active = await _groups(admin, ns)
        if active:
            busy = ", ".join(f"{g} ({n} member{'s' if n > 1 else ''})" for g, n in active.items())
            raise NamespaceError(
                f"namespace {ns.name!r} is in use: consumer group {busy} still running; "
                "stop its workers (and the demo or campaign consumer) first"
            )
        topics = sorted(t for t in await admin.list_topics() if t.startswith(ns.topic_prefix))
        for start in range(0, len(topics), 50):
            await admin.delete_topics(topics[start : start + 50])
        await _delete_groups(admin, groups)
    finally:
        await admin.close()
    keys = await _drop_keys(settings, ns)
    return Contents(keys, tuple(topics), tuple(groups), {})
