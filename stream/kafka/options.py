"""Connection options every aiokafka client of ours is built with (SASL and TLS included)."""

from __future__ import annotations

from typing import Any

from stream.config import Settings


def client_options(settings: Settings) -> dict[str, Any]:
    """Connection options shared by every aiokafka client we build (SASL/TLS included)."""
    opts: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap,
        "security_protocol": settings.kafka_security_protocol,
    }
    if settings.kafka_sasl_mechanism:
        opts["sasl_mechanism"] = settings.kafka_sasl_mechanism
        opts["sasl_plain_username"] = settings.kafka_sasl_username
        opts["sasl_plain_password"] = settings.kafka_sasl_password
    if settings.kafka_security_protocol in ("SSL", "SASL_SSL"):
        from aiokafka.helpers import create_ssl_context

        opts["ssl_context"] = create_ssl_context(cafile=settings.kafka_ssl_cafile)
    return opts
