"""Settings from the environment and the TOML file named by ``RFM_CONFIG``.

Every key has a default; an unknown key or a bad value stops start-up with a
``ConfigError`` that names the setting, so a typo never silently runs with defaults.
"""

from __future__ import annotations

import itertools
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stream.config.checks import (
    ConfigError,
    as_choice,
    as_int,
    as_table,
    fail,
    parse_duration,
)
from stream.config.collect import (
    MIN_GUEST_KEY,
    CollectSettings,
    ShopSettings,
    _collect,
    _secret_variables,
    collect_secrets,
    shop_domain,
)
from stream.config.http import ApiSettings, ServerSettings, api_settings
from stream.config.names import (
    COLLECT_PLATFORMS,
    DIMENSIONS,
    INTERACTION_KINDS,
    TRACKED_EVENTS,
)
from stream.validation import known_keys

__all__ = [
    "COLLECT_PLATFORMS",
    "DIMENSIONS",
    "ENV_SETTINGS",
    "INTERACTION_KINDS",
    "MIN_GUEST_KEY",
    "TRACKED_EVENTS",
    "ApiSettings",
    "CollectSettings",
    "ConfigError",
    "PredictionSettings",
    "ScoringSettings",
    "ServerSettings",
    "Settings",
    "ShopSettings",
    "StoreSettings",
    "collect_secrets",
    "load_settings",
    "parse_duration",
    "settings_from",
    "shop_domain",
]


# Every environment variable the project reads; any other RFM_* name is a typo and stops start-up.
ENV_SETTINGS = frozenset(
    {
        "RFM_KAFKA_BOOTSTRAP",
        "RFM_REDIS_URL",
        "RFM_REDIS_CLUSTER",  # 1 = the URL names a node of a Redis Cluster
        "RFM_REDIS_SHARDS",  # virtual shards of the key space (fixed once data exists)
        "RFM_TOPIC_PREFIX",
        "RFM_KEY_PREFIX",
        "RFM_GROUP_ID",
        "RFM_PARTITIONS",
        "RFM_CONFIG",
        "RFM_KAFKA_SECURITY_PROTOCOL",
        "RFM_KAFKA_SASL_MECHANISM",
        "RFM_KAFKA_SASL_USERNAME",
        "RFM_KAFKA_SASL_PASSWORD",
        "RFM_KAFKA_SSL_CAFILE",
        "RFM_API_TOKEN",  # rfm api: bearer token (at least 16 characters; unset: none asked)
        "RFM_COLLECT_TOKEN",  # rfm collect: bearer token of POST /v1/events (unset: route off)
        "RFM_COLLECT_GUEST_KEY",  # rfm collect: key of the guest customers' e-mail hash
        "RFM_COLLECT_WRITE_KEYS",  # rfm collect: tracking API write keys, comma-separated
        "RFM_CAMPAIGNS",  # rfm campaigns: path of the campaign rules file
        "RFM_STACK_DIR",  # rfm stack: where the local Kafka/Redis keep state
        "RFM_KAFKA_LIBS",  # rfm stack: a directory already holding the Kafka jars
        "RFM_NATIVE",  # stream.native: 0 = plain Python, 1 = the compiled core or stop
    }
)


@dataclass(frozen=True)
class StoreSettings:
    currency: str = "TWD"
    currency_decimals: int = 2
    max_amount: int = 10_000_000  # in major units
    max_future_skew_ms: int = 5 * 60_000
    dedupe_window_ms: int = 30 * 86_400_000
    # segment changes kept per customer for the lookup (stream.store.history); the
    # oldest leave as new ones arrive, all leave with the customer on erasure
    segment_history: int = 50


@dataclass(frozen=True)
class ScoringSettings:
    mode: str = "quantile"
    buckets: int = 5
    window_days: int = 365
    clock: str = "wall"
    refresh_interval_s: float = 60.0
    scheme: str = "rfm-classic"
    # fixed mode: B-1 ascending edges per dimension (r in days since last order)
    edges: Mapping[str, tuple[int, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class PredictionSettings:
    """CLV and churn (stream.clv.model): how often to refit, and what the predictions mean."""

    fit_interval_s: float = 86_400.0  # 0 = only on demand (``rfm fit``)
    horizon_months: int = 12
    discount_rate: float = 0.01  # per month
    churn_threshold: float = 0.0  # P(alive) at or below it -> churn_risk event; 0 = off
    min_repeat_buyers: int = 20  # fewer cannot identify the model: do not publish one
    drift_share: float = 0.25  # a refit moving a parameter by more (relative) is flagged


@dataclass(frozen=True)
class Settings:
    kafka_bootstrap: str = "127.0.0.1:9092"
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_cluster: bool = False
    redis_shards: int = 1
    topic_prefix: str = "rfm."
    key_prefix: str = "rfm:"
    group_id: str = "rfm.scorer"
    partitions: int = 6
    kafka_security_protocol: str = "PLAINTEXT"
    kafka_sasl_mechanism: str | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: str | None = field(default=None, repr=False)
    kafka_ssl_cafile: str | None = None
    store: StoreSettings = field(default_factory=StoreSettings)
    scoring: ScoringSettings = field(default_factory=ScoringSettings)
    prediction: PredictionSettings = field(default_factory=PredictionSettings)
    collect: CollectSettings = field(default_factory=CollectSettings)
    api: ApiSettings = field(default_factory=ApiSettings)
    interaction_weights: Mapping[str, int] = field(
        default_factory=lambda: dict.fromkeys(INTERACTION_KINDS, 1)
    )

    @property
    def window_ms(self) -> int:
        """0 means lifetime."""
        return self.scoring.window_days * 86_400_000


SECTIONS = ("store", "scoring", "prediction", "interactions", "collect", "api")


def _store(raw: dict[str, Any]) -> StoreSettings:
    t = as_table(
        "store",
        raw,
        (
            "currency",
            "currency_decimals",
            "max_amount",
            "max_future_skew",
            "dedupe_window",
            "segment_history",
        ),
    )
    d = StoreSettings()
    currency = t.get("currency", d.currency)
    if not isinstance(currency, str) or not re.fullmatch(r"[A-Z]{3}", currency):
        raise ConfigError(f"store.currency: expected an ISO 4217 code like 'TWD', got {currency!r}")
    return StoreSettings(
        currency=currency,
        currency_decimals=as_int(
            "store.currency_decimals", t.get("currency_decimals", d.currency_decimals), 0, 4
        ),
        max_amount=as_int("store.max_amount", t.get("max_amount", d.max_amount), 1, 10**12),
        max_future_skew_ms=int(
            1000 * parse_duration("store.max_future_skew", t.get("max_future_skew", "5m"))
        ),
        dedupe_window_ms=int(
            1000 * parse_duration("store.dedupe_window", t.get("dedupe_window", "30d"))
        ),
        segment_history=as_int(
            "store.segment_history", t.get("segment_history", d.segment_history), 1, 1000
        ),
    )


def _edges(raw: Any, buckets: int) -> dict[str, tuple[int, ...]]:
    t = as_table("scoring.edges", raw, DIMENSIONS)
    out: dict[str, tuple[int, ...]] = {}
    for dim in DIMENSIONS:
        name = f"scoring.edges.{dim}"
        if dim not in t:
            raise ConfigError(f"{name}: fixed mode needs {buckets - 1} ascending edges")
        edges = t[dim]
        if (
            not isinstance(edges, list)
            or len(edges) != buckets - 1
            or not all(isinstance(e, int) and not isinstance(e, bool) and e >= 0 for e in edges)
        ):
            raise ConfigError(
                f"{name}: expected {buckets - 1} non-negative integers, got {edges!r}"
            )
        if any(a >= b for a, b in itertools.pairwise(edges)):
            raise ConfigError(f"{name}: edges must be strictly ascending, got {edges!r}")
        out[dim] = tuple(edges)
    return out


def _scoring(raw: dict[str, Any]) -> ScoringSettings:
    t = as_table(
        "scoring",
        raw,
        ("mode", "buckets", "window_days", "clock", "refresh_interval", "scheme", "edges"),
    )
    d = ScoringSettings()
    mode = as_choice("scoring.mode", t.get("mode", d.mode), ("quantile", "fixed"))
    buckets = as_int("scoring.buckets", t.get("buckets", d.buckets), 3, 10)
    edges: dict[str, tuple[int, ...]] = {}
    if mode == "fixed":
        edges = _edges(t.get("edges", {}), buckets)
    elif "edges" in t:
        raise ConfigError("scoring.edges: only used when scoring.mode = 'fixed'")
    interval = parse_duration("scoring.refresh_interval", t.get("refresh_interval", "60s"))
    if interval < 0.1:
        raise ConfigError(f"scoring.refresh_interval: must be at least 100ms, got {interval}s")
    scheme = t.get("scheme", d.scheme)
    if not isinstance(scheme, str) or not scheme:
        raise ConfigError(f"scoring.scheme: expected a preset name or a path, got {scheme!r}")
    return ScoringSettings(
        mode=mode,
        buckets=buckets,
        window_days=as_int("scoring.window_days", t.get("window_days", d.window_days), 0, 36500),
        clock=as_choice("scoring.clock", t.get("clock", d.clock), ("wall", "event")),
        refresh_interval_s=interval,
        scheme=scheme,
        edges=edges,
    )


def _fraction(name: str, value: Any, hi: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{name}: expected a number, got {value!r}")
    if not 0 <= value < hi:
        raise ConfigError(f"{name}: expected 0 <= value < {hi}, got {value}")
    return float(value)


def _prediction(raw: dict[str, Any]) -> PredictionSettings:
    t = as_table(
        "prediction",
        raw,
        (
            "fit_interval",
            "horizon_months",
            "discount_rate",
            "churn_threshold",
            "min_repeat_buyers",
            "drift_share",
        ),
    )
    d = PredictionSettings()
    interval = parse_duration("prediction.fit_interval", t.get("fit_interval", "24h"))
    if 0 < interval < 1:
        raise ConfigError(f"prediction.fit_interval: 0 (off) or at least 1s, got {interval}s")
    return PredictionSettings(
        fit_interval_s=interval,
        horizon_months=as_int(
            "prediction.horizon_months", t.get("horizon_months", d.horizon_months), 1, 600
        ),
        discount_rate=_fraction(
            "prediction.discount_rate", t.get("discount_rate", d.discount_rate), 1.0
        ),
        churn_threshold=_fraction(
            "prediction.churn_threshold", t.get("churn_threshold", d.churn_threshold), 1.0
        ),
        min_repeat_buyers=as_int(
            "prediction.min_repeat_buyers",
            t.get("min_repeat_buyers", d.min_repeat_buyers),
            3,
            10_000_000,
        ),
        drift_share=_share("prediction.drift_share", t.get("drift_share", d.drift_share)),
    )


def _share(name: str, value: Any) -> float:
    """A relative change: 0.25 = a quarter of the previous value; above 0, at most 100."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{name}: expected a number such as 0.25, got {value!r}")
    if not 0 < value <= 100:
        raise ConfigError(f"{name}: expected 0 < value <= 100 (0.25 = 25%), got {value}")
    return float(value)


def _weights(raw: Any) -> dict[str, int]:
    t = as_table("interactions", raw, ("weights",))
    weights = as_table("interactions.weights", t.get("weights", {}), INTERACTION_KINDS)
    out = dict.fromkeys(INTERACTION_KINDS, 1)
    for kind, w in weights.items():
        out[kind] = as_int(f"interactions.weights.{kind}", w, 0, 1000)
    return out


def _host_port(text: str) -> bool:
    match = re.fullmatch(r"(\[[0-9A-Fa-f:.]+\]|[^\s:\[\]]+):(\d{1,5})", text.strip())
    return match is not None and 0 < int(match.group(2)) < 65536


def settings_from(
    env: Mapping[str, str] | None = None, toml: Mapping[str, Any] | None = None
) -> Settings:
    """Build settings from an environment mapping and an already-parsed TOML document."""
    env = os.environ if env is None else env
    doc = dict(toml or {})
    known = ENV_SETTINGS | _secret_variables(doc)
    unknown = sorted(k for k in env if k.startswith("RFM_") and k not in known)
    if unknown:
        raise ConfigError(
            f"{unknown[0]}: unknown setting (known: {', '.join(sorted(ENV_SETTINGS))})"
        )
    known_keys(doc, SECTIONS, "", fail, kind="section")
    prefix = env.get("RFM_TOPIC_PREFIX", "rfm.")
    if not re.fullmatch(r"[A-Za-z0-9._-]{0,100}", prefix):
        raise ConfigError(
            f"RFM_TOPIC_PREFIX: only letters, digits, '.', '_' and '-'; got {prefix!r}"
        )
    key_prefix = env.get("RFM_KEY_PREFIX", "rfm:")
    if not re.fullmatch(r"[A-Za-z0-9._:-]{1,100}", key_prefix):
        raise ConfigError(
            f"RFM_KEY_PREFIX: 1-100 letters, digits, '.', '_', ':' or '-'; got {key_prefix!r}"
        )
    partitions = env.get("RFM_PARTITIONS", "6")
    if not partitions.isdigit() or not 1 <= int(partitions) <= 1000:
        raise ConfigError(f"RFM_PARTITIONS: expected an integer 1..1000, got {partitions!r}")
    protocol = as_choice(
        "RFM_KAFKA_SECURITY_PROTOCOL",
        env.get("RFM_KAFKA_SECURITY_PROTOCOL", "PLAINTEXT"),
        ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"),
    )
    mechanism = env.get("RFM_KAFKA_SASL_MECHANISM")
    if mechanism is not None:
        as_choice(
            "RFM_KAFKA_SASL_MECHANISM", mechanism, ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
        )
        if not protocol.startswith("SASL_"):
            raise ConfigError(
                "RFM_KAFKA_SASL_MECHANISM: needs RFM_KAFKA_SECURITY_PROTOCOL=SASL_SSL or "
                f"SASL_PLAINTEXT, got {protocol}"
            )
        for name in ("RFM_KAFKA_SASL_USERNAME", "RFM_KAFKA_SASL_PASSWORD"):
            if not env.get(name):
                raise ConfigError(f"{name}: required when RFM_KAFKA_SASL_MECHANISM is set")
    elif protocol.startswith("SASL_"):
        raise ConfigError(f"RFM_KAFKA_SASL_MECHANISM: required with security protocol {protocol}")
    redis_url = env.get("RFM_REDIS_URL", "redis://127.0.0.1:6379/0")
    if not redis_url.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError(
            f"RFM_REDIS_URL: expected redis://, rediss:// or unix://, got {redis_url!r}"
        )
    cluster = as_choice("RFM_REDIS_CLUSTER", env.get("RFM_REDIS_CLUSTER", "0"), ("0", "1")) == "1"
    shards = env.get("RFM_REDIS_SHARDS", "16" if cluster else "1")
    if not shards.isdigit() or not 1 <= int(shards) <= 1024:
        # every merged read touches each shard: more than this buys nothing but round trips
        raise ConfigError(f"RFM_REDIS_SHARDS: expected an integer 1..1024, got {shards!r}")
    if cluster and int(shards) < 2:
        raise ConfigError(
            "RFM_REDIS_SHARDS: a Redis Cluster needs at least 2 shards (each shard's keys share "
            f"one hash slot), got {shards}"
        )
    bootstrap = env.get("RFM_KAFKA_BOOTSTRAP", "127.0.0.1:9092")
    if not all(_host_port(h) for h in bootstrap.split(",")):
        raise ConfigError(f"RFM_KAFKA_BOOTSTRAP: expected host:port[,host:port], got {bootstrap!r}")
    return Settings(
        kafka_bootstrap=bootstrap,
        redis_url=redis_url,
        redis_cluster=cluster,
        redis_shards=int(shards),
        topic_prefix=prefix,
        key_prefix=key_prefix,
        group_id=env.get("RFM_GROUP_ID", f"{prefix}scorer"),
        partitions=int(partitions),
        kafka_security_protocol=protocol,
        kafka_sasl_mechanism=mechanism,
        kafka_sasl_username=env.get("RFM_KAFKA_SASL_USERNAME"),
        kafka_sasl_password=env.get("RFM_KAFKA_SASL_PASSWORD"),
        kafka_ssl_cafile=env.get("RFM_KAFKA_SSL_CAFILE"),
        store=_store(doc.get("store", {})),
        scoring=_scoring(doc.get("scoring", {})),
        prediction=_prediction(doc.get("prediction", {})),
        collect=_collect(doc.get("collect", {}), env),
        api=api_settings(doc.get("api", {}), env),
        interaction_weights=_weights(doc.get("interactions", {})),
    )


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Settings for this process: environment plus the TOML file at ``RFM_CONFIG``, if set."""
    env = os.environ if env is None else env
    doc: dict[str, Any] = {}
    path = env.get("RFM_CONFIG")
    if path:
        try:
            doc = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"RFM_CONFIG: file not found: {path}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"RFM_CONFIG: {path} is not valid TOML: {exc}") from None
    return settings_from(env, doc)
