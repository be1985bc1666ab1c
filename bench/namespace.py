"""One bench run's private slice of the shared Kafka and Redis, and its removal afterwards.

Other people's workers and tests use the same broker and Redis, so every topic, consumer
group and key of a run carries a random tag (topics ``bench<hex>.<part>.``, keys
``bench<hex>:<part>:``), and the run deletes exactly those at the end, whatever happened.

Connection settings come from the caller's ``load_settings()``; scoring settings are the
defaults plus a long refresh interval (``CONFIG``) for every run, so figures from different
days and machines compare. In-process code and child processes read the very same settings:
``settings(part)`` is ``settings_from`` over the environment the children get.
"""

from __future__ import annotations

import os
import secrets
import tomllib
from pathlib import Path

from stream.config import Settings, settings_from
from stream.kafka import delete_topics
from stream.store.redis_store import connect

CONFIG = """\
[scoring]
# Refresh cost is measured on its own (bench.refresh_cost): no refresh may land mid-throughput.
refresh_interval = "1h"
"""


class Run:
    """A random tag, a scratch directory, and the settings and environment of each part."""

    def __init__(self, settings: Settings, scratch: Path) -> None:
        self.tag = f"bench{secrets.token_hex(4)}"
        self.base = settings
        self.scratch = scratch
        self.config = scratch / "rfm-bench.toml"
        self.config.write_text(CONFIG, encoding="utf-8")
        self.parts: set[str] = set()  # every part handed out, for drop_topics

    def env(self, part: str) -> dict[str, str]:
        """The environment of a child process (worker, baseline, import) for ``part``."""
        s = self.base
        self.parts.add(part)
        env = {k: v for k, v in os.environ.items() if not k.startswith("RFM_")}
        env.update(
            {
                "RFM_KAFKA_BOOTSTRAP": s.kafka_bootstrap,
                "RFM_REDIS_URL": s.redis_url,
                "RFM_TOPIC_PREFIX": f"{self.tag}.{part}.",
                "RFM_KEY_PREFIX": f"{self.tag}:{part}:",
                "RFM_GROUP_ID": f"{self.tag}.{part}.scorer",
                "RFM_PARTITIONS": str(s.partitions),
                "RFM_KAFKA_SECURITY_PROTOCOL": s.kafka_security_protocol,
                "RFM_CONFIG": str(self.config),
                "PYTHONUNBUFFERED": "1",
                "XDG_CACHE_HOME": str(self.scratch / "cache"),  # Faust's data dir
            }
        )
        optional = {
            "RFM_KAFKA_SASL_MECHANISM": s.kafka_sasl_mechanism,
            "RFM_KAFKA_SASL_USERNAME": s.kafka_sasl_username,
            "RFM_KAFKA_SASL_PASSWORD": s.kafka_sasl_password,
            "RFM_KAFKA_SSL_CAFILE": s.kafka_ssl_cafile,
            # children run the core the way this process does (stream.native)
            "RFM_NATIVE": os.environ.get("RFM_NATIVE"),
        }
        env.update({k: v for k, v in optional.items() if v})
        return env

    def settings(self, part: str) -> Settings:
        return settings_from(self.env(part), tomllib.loads(CONFIG))

    async def drop_keys(self, part: str | None = None) -> int:
        """Delete the Redis keys of one part (or of the whole run); returns how many."""
        pattern = f"{self.tag}:{part}:*" if part else f"{self.tag}:*"
        client = connect(self.base.redis_url)
        deleted = 0
        try:
            batch: list[bytes] = []
            async for key in client.scan_iter(match=pattern, count=5000):
                batch.append(key)
                if len(batch) >= 5000:
                    deleted += await client.unlink(*batch)
                    batch.clear()
            if batch:
                deleted += await client.unlink(*batch)
        finally:
            await client.aclose()
        return deleted

    async def drop_topics(self, keep: tuple[str, ...] = ()) -> int:
        """Delete every topic of the run (Faust's internal ones included) but those of the
        parts whose topic prefix is in ``keep``; returns how many."""
        if not keep:
            return await delete_topics(self.base, f"{self.tag}.")
        parts = [f"{self.tag}.{part}." for part in sorted(self.parts)]
        return await delete_topics(self.base, *(p for p in parts if p not in keep))
