"""Configuration (SPEC section 8): defaults, and errors that name the setting."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from stream.config import (
    INTERACTION_KINDS,
    ConfigError,
    Settings,
    load_settings,
    parse_duration,
    settings_from,
)

SPEC_TOML = """
[store]
currency = "TWD"
currency_decimals = 2
[scoring]
mode = "quantile"          # or "fixed" (then [scoring.edges] r/f/m/i lists)
buckets = 5
window_days = 365          # 0 = lifetime
clock = "wall"             # or "event"
refresh_interval = "60s"
scheme = "rfm-classic"     # preset name or path to a scheme file
[interactions.weights]
comment = 1
"""

FIXED_EDGES = {"r": [7, 30, 90, 180], "f": [1, 2, 4, 8], "m": [100, 500, 1000, 5000]}
FIXED_EDGES["i"] = [1, 5, 10, 20]


def assert_defaults(s: Settings) -> None:
    assert s.kafka_bootstrap == "127.0.0.1:9092"
    assert s.redis_url == "redis://127.0.0.1:6379/0"
    assert s.topic_prefix == "rfm."
    assert s.store.currency == "TWD"
    assert s.store.currency_decimals == 2
    assert s.store.max_amount == 10_000_000
    assert s.store.max_future_skew_ms == 5 * 60 * 1000
    assert s.store.dedupe_window_ms == 30 * 86_400_000
    assert s.store.segment_history == 50
    assert s.scoring.mode == "quantile"
    assert s.scoring.buckets == 5
    assert s.scoring.window_days == 365
    assert s.window_ms == 365 * 86_400_000
    assert s.scoring.clock == "wall"
    assert s.scoring.refresh_interval_s == 60.0
    assert s.scoring.scheme == "rfm-classic"
    assert dict(s.interaction_weights) == dict.fromkeys(INTERACTION_KINDS, 1)


def test_defaults_from_empty_environment() -> None:
    assert_defaults(settings_from({}, {}))
    assert_defaults(settings_from({}, None))
    assert_defaults(load_settings({}))


def test_dataclass_defaults_match_spec() -> None:
    assert_defaults(Settings())


def test_spec_example_file_gives_defaults(tmp_path: Path) -> None:
    path = tmp_path / "rfm.toml"
    path.write_text(SPEC_TOML, encoding="utf-8")
    assert_defaults(load_settings({"RFM_CONFIG": str(path)}))


def test_environment_overrides() -> None:
    s = settings_from(
        {
            "RFM_KAFKA_BOOTSTRAP": "broker-1:9092,broker-2:9093",
            "RFM_REDIS_URL": "rediss://cache:6380/2",
            "RFM_TOPIC_PREFIX": "shop_a.",
        },
        {},
    )
    assert s.kafka_bootstrap == "broker-1:9092,broker-2:9093"
    assert s.redis_url == "rediss://cache:6380/2"
    assert s.topic_prefix == "shop_a."


def test_a_cluster_is_sharded_by_default() -> None:
    assert (settings_from({}, {}).redis_shards, settings_from({}, {}).redis_cluster) == (1, False)
    on = settings_from({"RFM_REDIS_CLUSTER": "1"}, {})
    assert (on.redis_cluster, on.redis_shards) == (True, 16)


def test_every_key_set() -> None:
    s = settings_from(
        {},
        {
            "store": {
                "currency": "HKD",
                "currency_decimals": 1,
                "max_amount": 500,
                "max_future_skew": "30s",
                "dedupe_window": "7d",
                "segment_history": 3,
            },
            "scoring": {
                "mode": "fixed",
                "buckets": 5,
                "window_days": 0,
                "clock": "event",
                "refresh_interval": "250ms",
                "scheme": "rfim",
                "edges": FIXED_EDGES,
            },
            "interactions": {"weights": {"comment": 3, "like": 0, "live_view": 5}},
        },
    )
    assert s.store.currency == "HKD" and s.store.currency_decimals == 1
    assert s.store.max_amount == 500
    assert s.store.max_future_skew_ms == 30_000
    assert s.store.dedupe_window_ms == 7 * 86_400_000
    assert s.store.segment_history == 3
    assert s.scoring.mode == "fixed" and s.scoring.clock == "event"
    assert s.scoring.window_days == 0 and s.window_ms == 0  # 0 = lifetime
    assert s.scoring.refresh_interval_s == pytest.approx(0.25)
    assert s.scoring.scheme == "rfim"
    assert {k: list(v) for k, v in s.scoring.edges.items()} == FIXED_EDGES
    assert s.interaction_weights["comment"] == 3
    assert s.interaction_weights["like"] == 0
    assert s.interaction_weights["live_view"] == 5
    assert s.interaction_weights["share"] == 1


@pytest.mark.parametrize("buckets", [3, 10])
def test_bucket_bounds_allowed(buckets: int) -> None:
    assert settings_from({}, {"scoring": {"buckets": buckets}}).scoring.buckets == buckets


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("60s", 60), ("5m", 300), ("30d", 2_592_000), ("250ms", 0.25), ("2h", 7200), (60, 60)],
)
def test_parse_duration(text: Any, seconds: float) -> None:
    assert parse_duration("x", text) == pytest.approx(seconds)


# -- unknown keys and bad values name the setting --------------------------------------------


@pytest.mark.parametrize(
    ("toml", "setting"),
    [
        ({"scoring": {"bucket": 5}}, "scoring.bucket"),
        ({"scoring": {"Buckets": 5}}, "scoring.Buckets"),
        ({"store": {"curency": "TWD"}}, "store.curency"),
        ({"interactions": {"weight": {}}}, "interactions.weight"),
        ({"interactions": {"weights": {"poke": 2}}}, "interactions.weights.poke"),
        ({"scoring": {"mode": "fixed", "edges": {**FIXED_EDGES, "x": [1]}}}, "scoring.edges.x"),
        ({"scorer": {}}, "scorer"),
        ({"rfm": {"buckets": 5}}, "rfm"),
    ],
)
def test_unknown_key_named(toml: dict[str, Any], setting: str) -> None:
    with pytest.raises(ConfigError) as info:
        settings_from({}, toml)
    msg = str(info.value)
    assert msg.startswith(setting), msg
    assert "unknown" in msg


@pytest.mark.parametrize(
    ("toml", "setting"),
    [
        ({"scoring": {"buckets": 2}}, "scoring.buckets"),
        ({"scoring": {"buckets": 11}}, "scoring.buckets"),
        ({"scoring": {"buckets": "5"}}, "scoring.buckets"),
        ({"scoring": {"buckets": 5.0}}, "scoring.buckets"),
        ({"scoring": {"buckets": True}}, "scoring.buckets"),
        ({"scoring": {"mode": "median"}}, "scoring.mode"),
        ({"scoring": {"window_days": -1}}, "scoring.window_days"),
        ({"scoring": {"window_days": "365"}}, "scoring.window_days"),
        ({"scoring": {"clock": "lamport"}}, "scoring.clock"),
        ({"scoring": {"refresh_interval": "soon"}}, "scoring.refresh_interval"),
        ({"scoring": {"refresh_interval": "0s"}}, "scoring.refresh_interval"),
        ({"scoring": {"refresh_interval": -1}}, "scoring.refresh_interval"),
        ({"scoring": {"refresh_interval": True}}, "scoring.refresh_interval"),
        ({"scoring": {"scheme": ""}}, "scoring.scheme"),
        ({"scoring": {"scheme": 5}}, "scoring.scheme"),
        ({"scoring": {"mode": "fixed"}}, "scoring.edges"),
        ({"scoring": {"mode": "fixed", "edges": {**FIXED_EDGES, "r": [1, 2]}}}, "scoring.edges.r"),
        (
            {"scoring": {"mode": "fixed", "edges": {**FIXED_EDGES, "f": [1, 3, 2, 4]}}},
            "scoring.edges.f",
        ),
        (
            {"scoring": {"mode": "fixed", "edges": {**FIXED_EDGES, "m": [1, 1, 2, 3]}}},
            "scoring.edges.m",
        ),
        (
            {"scoring": {"mode": "fixed", "edges": {**FIXED_EDGES, "i": [-1, 1, 2, 3]}}},
            "scoring.edges.i",
        ),
        (
            {
                "scoring": {
                    "mode": "fixed",
                    "edges": {k: v for k, v in FIXED_EDGES.items() if k != "i"},
                }
            },
            "scoring.edges.i",
        ),
        ({"scoring": {"edges": FIXED_EDGES}}, "scoring.edges"),
        ({"scoring": []}, "scoring"),
        ({"store": {"currency": "twd"}}, "store.currency"),
        ({"store": {"currency": "NT$"}}, "store.currency"),
        ({"store": {"currency_decimals": 5}}, "store.currency_decimals"),
        ({"store": {"currency_decimals": -1}}, "store.currency_decimals"),
        ({"store": {"max_amount": 0}}, "store.max_amount"),
        ({"store": {"max_future_skew": "5 minutes"}}, "store.max_future_skew"),
        ({"store": {"dedupe_window": -1}}, "store.dedupe_window"),
        ({"store": {"segment_history": 0}}, "store.segment_history"),
        ({"store": {"segment_history": 1001}}, "store.segment_history"),
        ({"store": {"segment_history": "50"}}, "store.segment_history"),
        ({"interactions": {"weights": {"like": -1}}}, "interactions.weights.like"),
        ({"interactions": {"weights": {"like": "heavy"}}}, "interactions.weights.like"),
        ({"interactions": {"weights": []}}, "interactions.weights"),
    ],
)
def test_bad_value_named(toml: dict[str, Any], setting: str) -> None:
    with pytest.raises(ConfigError) as info:
        settings_from({}, toml)
    msg = str(info.value)
    assert msg.startswith(setting), msg
    assert "\n" not in msg


@pytest.mark.parametrize(
    ("env", "setting"),
    [
        ({"RFM_KAFKA_BOOTSTRAP": "localhost"}, "RFM_KAFKA_BOOTSTRAP"),
        ({"RFM_KAFKA_BOOTSTRAP": "a:1, b"}, "RFM_KAFKA_BOOTSTRAP"),
        ({"RFM_REDIS_URL": "http://127.0.0.1:6379"}, "RFM_REDIS_URL"),
        ({"RFM_TOPIC_PREFIX": "rfm orders"}, "RFM_TOPIC_PREFIX"),
        ({"RFM_TOPIC_PREFIX": "rfm/"}, "RFM_TOPIC_PREFIX"),
        ({"RFM_KAFKA_SECURITY_PROTOCOL": "TLS"}, "RFM_KAFKA_SECURITY_PROTOCOL"),
        ({"RFM_KAFKA_SASL_MECHANISM": "GSSAPI"}, "RFM_KAFKA_SASL_MECHANISM"),
        ({"RFM_REDIS_CLUSTER": "yes"}, "RFM_REDIS_CLUSTER"),
        ({"RFM_REDIS_SHARDS": "0"}, "RFM_REDIS_SHARDS"),
        ({"RFM_REDIS_SHARDS": "1025"}, "RFM_REDIS_SHARDS"),
        ({"RFM_REDIS_CLUSTER": "1", "RFM_REDIS_SHARDS": "1"}, "RFM_REDIS_SHARDS"),
    ],
)
def test_bad_environment_named(env: dict[str, str], setting: str) -> None:
    with pytest.raises(ConfigError) as info:
        settings_from(env, {})
    assert str(info.value).startswith(setting)


def test_config_file_missing_or_invalid(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="RFM_CONFIG"):
        load_settings({"RFM_CONFIG": str(tmp_path / "nope.toml")})
    bad = tmp_path / "bad.toml"
    bad.write_text("[scoring\nbuckets = 5\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="RFM_CONFIG"):
        load_settings({"RFM_CONFIG": str(bad)})


def test_config_file_bad_value_named(tmp_path: Path) -> None:
    path = tmp_path / "rfm.toml"
    path.write_text("[scoring]\nbuckets = 12\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"^scoring\.buckets"):
        load_settings({"RFM_CONFIG": str(path)})


@pytest.mark.parametrize(
    ("section", "key"),
    [
        ("scoring", "refresh_interval"),
        ("store", "max_future_skew"),
        ("store", "dedupe_window"),
    ],
)
@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_non_finite_durations_named(section: str, key: str, value: float) -> None:
    with pytest.raises(ConfigError, match=rf"^{section}\.{key}"):
        settings_from({}, {section: {key: value}})
