"""``[collect]``: the settings of `rfm collect`, the HTTP front door (``stream.collect``).

Secrets come from the environment, and only `rfm collect` needs them (``collect_secrets``),
so other processes reading the same file run without them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from stream.config.checks import ConfigError, as_choice, as_int, as_table, fail, parse_duration
from stream.config.http import SERVER_KEYS, ServerSettings, server_settings
from stream.config.names import COLLECT_PLATFORMS, INTERACTION_KINDS, TRACKED_EVENTS
from stream.validation import expect_table


@dataclass(frozen=True)
class ShopSettings:
    """A storefront whose webhooks ``rfm collect`` accepts. ``name`` is part of the event id of
    everything its webhooks map to: renaming a shop turns its redeliveries into new events."""

    name: str
    platform: str  # one of COLLECT_PLATFORMS
    domain: str  # as ``shop_domain`` writes it; matched against the platform's shop header
    secret_env: str  # the environment variable holding the webhook signing secret
    secret: bytes = field(repr=False)  # its value (empty when unset: ``collect_secrets``)


@dataclass(frozen=True)
class CollectSettings:
    """``rfm collect``, the HTTP front door (stream.collect). Secrets come from the environment;
    only `rfm collect` needs them (``collect_secrets``), so other processes reading the same
    file run without them."""

    host: str = "127.0.0.1"
    port: int = 8090
    max_body_bytes: int = 1 << 20
    max_events: int = 500  # items of one /v1/events or /v1/batch request
    # Kafka must acknowledge a request's events within this, else 503: the platforms stop
    # waiting after 5 s, and a late answer is a failed delivery they send again anyway
    ack_timeout_s: float = 3.0
    delivery_window_s: float = 3 * 86_400.0  # how long a webhook delivery id is remembered
    # per source (a shop, a write key, the bearer token), after authentication: requests a
    # second sustained, and at once; far above what a storefront sends (docs/security.md)
    source_rate: int = 200
    source_burst: int = 2_000
    # requests waiting on Redis or Kafka at once; past it 503 at once (during a Kafka outage
    # each waits up to ack_timeout, so without a bound they pile up in memory)
    max_in_flight: int = 256
    token: str | None = field(default=None, repr=False)  # RFM_COLLECT_TOKEN
    guest_key: bytes = field(default=b"", repr=False)  # RFM_COLLECT_GUEST_KEY
    shops: tuple[ShopSettings, ...] = ()
    write_keys: tuple[str, ...] = field(default=(), repr=False)  # RFM_COLLECT_WRITE_KEYS
    tracked_events: Mapping[str, str] = field(default_factory=lambda: dict(TRACKED_EVENTS))
    server: ServerSettings = field(default_factory=ServerSettings)  # timeouts, TLS, exposure


def shop_domain(text: str) -> str:
    """A shop as its platform's header names it, compared case-blind: ``my-shop.myshopify.com``;
    WooCommerce sends the site URL (``https://shop.example/``), so scheme and slash go."""
    text = text.strip().lower()
    for scheme in ("https://", "http://"):
        text = text.removeprefix(scheme)
    return text.rstrip("/")


COLLECT_KEYS = (
    "host",
    "port",
    "max_body_bytes",
    "max_events",
    "ack_timeout",
    "delivery_window",
    "source_rate",
    "source_burst",
    "max_in_flight",
    "shops",
    "tracking",
    *SERVER_KEYS,
)
MIN_GUEST_KEY = 16
_SHOP_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")


def _shops(raw: Any, env: Mapping[str, str]) -> tuple[ShopSettings, ...]:
    shops: dict[tuple[str, str], ShopSettings] = {}
    for name, value in expect_table(raw, "collect.shops", fail).items():
        where = f"collect.shops.{name}"
        if not _SHOP_NAME.fullmatch(name):
            raise ConfigError(f"{where}: a shop name is 1-64 letters, digits, '_' or '-'")
        t = as_table(where, value, ("platform", "domain", "secret_env"))
        for key in ("platform", "domain", "secret_env"):
            if key not in t:
                raise ConfigError(f"{where}.{key}: required")
        platform = as_choice(f"{where}.platform", t["platform"], COLLECT_PLATFORMS)
        domain = t["domain"]
        if not isinstance(domain, str) or not shop_domain(domain) or len(domain) > 255:
            raise ConfigError(f"{where}.domain: expected the shop's domain, got {domain!r}")
        variable = t["secret_env"]
        if not isinstance(variable, str) or not _ENV_NAME.fullmatch(variable):
            raise ConfigError(
                f"{where}.secret_env: expected an environment variable name, got {variable!r}"
            )
        secret = env.get(variable, "").encode("utf-8")
        shop = ShopSettings(name, platform, shop_domain(domain), variable, secret)
        other = shops.setdefault((platform, shop.domain), shop)
        if other is not shop:
            raise ConfigError(f"{where}.domain: {shop.domain} is already shop {other.name}")
    return tuple(shops.values())


def _tracked_events(raw: Any) -> dict[str, str]:
    t = as_table("collect.tracking", raw, ("interactions",))
    if "interactions" not in t:
        return dict(TRACKED_EVENTS)
    out = {}
    for event, kind in expect_table(
        t["interactions"], "collect.tracking.interactions", fail
    ).items():
        where = f"collect.tracking.interactions.{event}"
        if not event or len(event) > 200:
            raise ConfigError(f"{where}: an event name is 1-200 characters")
        out[event] = as_choice(where, kind, INTERACTION_KINDS)
    return out


def _collect(raw: Any, env: Mapping[str, str]) -> CollectSettings:
    t = as_table("collect", raw, COLLECT_KEYS)
    d = CollectSettings()
    host = t.get("host", d.host)
    if not isinstance(host, str) or not host or len(host) > 255 or any(c.isspace() for c in host):
        raise ConfigError(f"collect.host: expected an address such as 127.0.0.1, got {host!r}")
    ack_timeout = parse_duration("collect.ack_timeout", t.get("ack_timeout", "3s"))
    if not 0.1 <= ack_timeout <= 4.5:
        raise ConfigError(
            f"collect.ack_timeout: from 100ms to 4.5s (storefronts wait 5 s), got {ack_timeout}s"
        )
    window = parse_duration("collect.delivery_window", t.get("delivery_window", "3d"))
    if window < 60:
        raise ConfigError(f"collect.delivery_window: at least 1m, got {window}s")
    shops = _shops(t.get("shops", {}), env)
    keys = env.get("RFM_COLLECT_WRITE_KEYS", "").split(",")
    write_keys = tuple(key.strip() for key in keys if key.strip())
    guest_key = env.get("RFM_COLLECT_GUEST_KEY", "")
    if guest_key and len(guest_key) < MIN_GUEST_KEY:
        raise ConfigError(f"RFM_COLLECT_GUEST_KEY: at least {MIN_GUEST_KEY} characters")
    return CollectSettings(
        host=host,
        port=as_int("collect.port", t.get("port", d.port), 1, 65535),
        max_body_bytes=as_int(
            "collect.max_body_bytes", t.get("max_body_bytes", d.max_body_bytes), 1024, 64 << 20
        ),
        max_events=as_int("collect.max_events", t.get("max_events", d.max_events), 1, 10_000),
        ack_timeout_s=ack_timeout,
        delivery_window_s=window,
        source_rate=as_int(
            "collect.source_rate", t.get("source_rate", d.source_rate), 1, 1_000_000
        ),
        source_burst=as_int(
            "collect.source_burst", t.get("source_burst", d.source_burst), 1, 1_000_000
        ),
        max_in_flight=as_int(
            "collect.max_in_flight", t.get("max_in_flight", d.max_in_flight), 1, 100_000
        ),
        token=env.get("RFM_COLLECT_TOKEN") or None,
        guest_key=guest_key.encode("utf-8"),
        shops=shops,
        write_keys=write_keys,
        tracked_events=_tracked_events(t.get("tracking", {})),
        server=server_settings("collect", t),
    )


def collect_secrets(c: CollectSettings) -> None:
    """Raise ConfigError, naming the setting, unless every secret `rfm collect` needs is set:
    each shop's signing secret, and the guest key whenever shops or write keys are."""
    for shop in c.shops:
        if not shop.secret:
            raise ConfigError(
                f"collect.shops.{shop.name}.secret_env: {shop.secret_env} is not set "
                "(the shop's webhook signing secret)"
            )
    if (c.shops or c.write_keys) and not c.guest_key:
        raise ConfigError(
            f"RFM_COLLECT_GUEST_KEY: required (at least {MIN_GUEST_KEY} characters) with "
            "collect.shops or RFM_COLLECT_WRITE_KEYS: guest buyers are keyed by a keyed hash "
            "of their e-mail, and changing the key later splits each of them in two"
        )


def _secret_variables(doc: Mapping[str, Any]) -> set[str]:
    """The environment variables ``[collect.shops.*] secret_env`` name: known settings too."""
    shops = doc.get("collect", {}).get("shops", {}) if isinstance(doc.get("collect"), dict) else {}
    if not isinstance(shops, dict):
        return set()
    return {
        shop["secret_env"]
        for shop in shops.values()
        if isinstance(shop, dict) and isinstance(shop.get("secret_env"), str)
    }
