"""The `rfm` command group and what every command shares: settings that stop naming the
setting, and one line, no traceback, for unreachable infrastructure."""

from __future__ import annotations

import logging
from typing import Any

import click

from stream.config import ConfigError, Settings, load_settings
from stream.redaction import guard_logs


def settings_or_exit() -> Settings:
    """This process's settings, each checked as the worker checks it: the scheme setting
    too (a preset or a valid scheme file), so no command runs on one the worker refuses."""
    from stream.schemes import SchemeError, load_scheme

    try:
        settings = load_settings()
        load_scheme(settings.scoring.scheme, settings.scoring.buckets)
    except ConfigError as exc:
        raise click.ClickException(f"configuration error: {exc}") from None
    except SchemeError as exc:
        raise click.ClickException(f"configuration error: scoring.scheme: {exc}") from None
    return settings


class _Cli(click.Group):
    """Unreachable infrastructure is an operator's problem, not a bug: one line, no traceback
    (the messages name host and port, never credentials)."""

    def invoke(self, ctx: click.Context) -> Any:
        from aiokafka.errors import KafkaConnectionError
        from redis.exceptions import ConnectionError as RedisConnectionError

        from stream.store.keys import LayoutMismatch

        try:
            return super().invoke(ctx)
        except LayoutMismatch as exc:
            raise click.ClickException(f"configuration error: {exc}") from None
        except RedisConnectionError as exc:
            raise click.ClickException(f"Redis (RFM_REDIS_URL): {exc}") from None
        except KafkaConnectionError as exc:
            raise click.ClickException(f"Kafka (RFM_KAFKA_BOOTSTRAP): {exc}") from None


@click.group(cls=_Cli)
def main() -> None:
    """Streaming RFM/RFIM scorer: Kafka in, Redis state, segment changes out."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    guard_logs()  # no URL credentials, query strings or payloads in any line
