"""The ``[collect]`` settings of `rfm collect`: defaults, secrets from the environment, and
errors that name the setting."""

from __future__ import annotations

from typing import Any

import pytest

from stream.config import (
    TRACKED_EVENTS,
    CollectSettings,
    ConfigError,
    collect_secrets,
    settings_from,
    shop_domain,
)

GUEST_KEY = "g" * 16
SHOP = {"platform": "shopify", "domain": "Lanyu-Tea.myshopify.com", "secret_env": "SHOP_SECRET"}


def collect(table: dict[str, Any] | None = None, env: dict[str, str] | None = None) -> Any:
    return settings_from(env or {}, {"collect": table or {}}).collect


def test_defaults() -> None:
    c = settings_from({}, {}).collect
    assert (c.host, c.port) == ("127.0.0.1", 8090)
    assert (c.max_body_bytes, c.max_events) == (1 << 20, 500)
    assert c.ack_timeout_s == 3.0
    assert c.delivery_window_s == 3 * 86_400
    assert (c.source_rate, c.source_burst, c.max_in_flight) == (200, 2_000, 256)
    assert c.token is None and c.guest_key == b"" and c.write_keys == () and c.shops == ()
    assert dict(c.tracked_events) == TRACKED_EVENTS


def test_values_and_secrets_from_the_environment() -> None:
    env = {
        "RFM_COLLECT_TOKEN": "t0k",
        "RFM_COLLECT_GUEST_KEY": GUEST_KEY,
        "RFM_COLLECT_WRITE_KEYS": " wk1 ,wk2,, ",
        "SHOP_SECRET": "s3cret",
        "RFM_SHOP_B": "other",  # an RFM_* name a shop refers to is a known setting
    }
    table = {
        "host": "0.0.0.0",
        "port": 9000,
        "max_body_bytes": 4096,
        "max_events": 10,
        "ack_timeout": "2500ms",
        "delivery_window": "1d",
        "source_rate": 5,
        "source_burst": 7,
        "max_in_flight": 9,
        "shops": {
            "lanyu": SHOP,
            "b": {
                "platform": "woocommerce",
                "domain": "https://Shop.Example/",
                "secret_env": "RFM_SHOP_B",
            },
        },
        "tracking": {"interactions": {"Product Clicked": "click"}},
    }
    c = collect(table, env)
    assert (c.host, c.port, c.max_body_bytes, c.max_events) == ("0.0.0.0", 9000, 4096, 10)
    assert (c.ack_timeout_s, c.delivery_window_s) == (2.5, 86_400)
    assert (c.source_rate, c.source_burst, c.max_in_flight) == (5, 7, 9)
    assert c.token == "t0k" and c.guest_key == GUEST_KEY.encode()
    assert c.write_keys == ("wk1", "wk2")
    assert [(s.name, s.platform, s.domain, s.secret) for s in c.shops] == [
        ("lanyu", "shopify", "lanyu-tea.myshopify.com", b"s3cret"),
        ("b", "woocommerce", "shop.example", b"other"),
    ]
    assert dict(c.tracked_events) == {"Product Clicked": "click"}  # replaces the defaults
    assert "s3cret" not in repr(c) and GUEST_KEY not in repr(c) and "wk1" not in repr(c)


def test_shop_domain_is_what_the_headers_carry() -> None:
    assert shop_domain(" Lanyu-Tea.MyShopify.com ") == "lanyu-tea.myshopify.com"
    assert shop_domain("https://shop.example/") == shop_domain("shop.example")


@pytest.mark.parametrize(
    ("table", "env", "setting"),
    [
        ({"prot": 1}, {}, "collect.prot"),
        ({"port": 0}, {}, "collect.port"),
        ({"port": "8090"}, {}, "collect.port"),
        ({"host": ""}, {}, "collect.host"),
        ({"host": "a b"}, {}, "collect.host"),
        ({"max_body_bytes": 10}, {}, "collect.max_body_bytes"),
        ({"max_events": 0}, {}, "collect.max_events"),
        ({"ack_timeout": "5s"}, {}, "collect.ack_timeout"),
        ({"ack_timeout": "soon"}, {}, "collect.ack_timeout"),
        ({"delivery_window": "10s"}, {}, "collect.delivery_window"),
        ({"source_rate": 0}, {}, "collect.source_rate"),
        ({"source_rate": 1.5}, {}, "collect.source_rate"),
        ({"source_burst": 0}, {}, "collect.source_burst"),
        ({"max_in_flight": 0}, {}, "collect.max_in_flight"),
        ({"shops": []}, {}, "collect.shops"),
        ({"shops": {"a b": SHOP}}, {}, "collect.shops.a b"),
        ({"shops": {"a": {**SHOP, "platform": "magento"}}}, {}, "collect.shops.a.platform"),
        ({"shops": {"a": {**SHOP, "colour": 1}}}, {}, "collect.shops.a.colour"),
        (
            {"shops": {"a": {"platform": "shopify", "secret_env": "S"}}},
            {},
            "collect.shops.a.domain",
        ),
        ({"shops": {"a": {**SHOP, "domain": "/"}}}, {}, "collect.shops.a.domain"),
        ({"shops": {"a": {**SHOP, "secret_env": "no such"}}}, {}, "collect.shops.a.secret_env"),
        ({}, {"RFM_COLLECT_GUEST_KEY": "short"}, "RFM_COLLECT_GUEST_KEY"),
        ({"tracking": {"names": {}}}, {}, "collect.tracking.names"),
        (
            {"tracking": {"interactions": {"Product Viewed": "view"}}},
            {},
            "collect.tracking.interactions.Product Viewed",
        ),
        ({}, {"RFM_COLLECT_TOKN": "x"}, "RFM_COLLECT_TOKN"),
    ],
)
def test_bad_values_name_the_setting(
    table: dict[str, Any], env: dict[str, str], setting: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        collect(table, env)
    assert str(caught.value).startswith(f"{setting}:"), caught.value


def test_one_shop_per_platform_and_domain() -> None:
    env = {"RFM_COLLECT_GUEST_KEY": GUEST_KEY, "SHOP_SECRET": "s"}
    twice = {"a": SHOP, "b": {**SHOP, "domain": "lanyu-tea.myshopify.com/"}}
    with pytest.raises(ConfigError, match=r"^collect\.shops\.b\.domain: .* is already shop a"):
        collect({"shops": twice}, env)
    elsewhere = {"a": SHOP, "b": {**SHOP, "platform": "shopline"}}
    assert len(collect({"shops": elsewhere}, env).shops) == 2


def test_only_rfm_collect_needs_the_secrets() -> None:
    """Other processes read the same file without the shops' secrets or the guest key;
    ``collect_secrets`` (run as `rfm collect` starts) refuses to run without them."""
    no_secrets = collect({"shops": {"a": SHOP}})
    assert no_secrets.shops[0].secret == b""
    with pytest.raises(ConfigError) as caught:
        collect_secrets(no_secrets)
    assert str(caught.value).startswith("collect.shops.a.secret_env: SHOP_SECRET is not set")

    for table, env in [
        ({"shops": {"a": SHOP}}, {"SHOP_SECRET": "s"}),
        ({}, {"RFM_COLLECT_WRITE_KEYS": "wk"}),
    ]:
        with pytest.raises(ConfigError, match=r"^RFM_COLLECT_GUEST_KEY: required"):
            collect_secrets(collect(table, env))
        collect_secrets(collect(table, {**env, "RFM_COLLECT_GUEST_KEY": GUEST_KEY}))
    collect_secrets(CollectSettings())  # nothing configured: nothing needed
