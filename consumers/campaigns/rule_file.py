"""The campaign rule file (TOML or YAML): read once and validated into ``rules.RuleSet``.

A typo in a rule file must stop start-up with the rule and the field named: a campaign that
silently fires for nobody, or for everybody, costs more than a refused start.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson

from consumers.campaigns.rules import (
    CHANGE_METRICS,
    CONTROL,
    DEFAULT_UPLIFT_WINDOW_S,
    NO_SEGMENT,
    ORDER_METRICS,
    TRIGGERS,
    CampaignRule,
    ChangeTrigger,
    Condition,
    OrderTrigger,
    RuleError,
    RuleSet,
    Variant,
    Webhook,
)
from stream.config import ConfigError, parse_duration
from stream.core.changes import CAUSES
from stream.core.events import CHANNELS
from stream.validation import choice, expect_bool, expect_int, expect_table, known_keys

_RULE_ID = re.compile(r"[a-z][a-z0-9_]{0,63}\Z")
_VARIANT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z")
_PATTERN = re.compile(r"[a-z0-9_*?\[\]!-]*\Z")
_CONDITION = re.compile(r"\s*([a-z_]+)\s*(>=|<=|==|!=|>|<)\s*(\"?)([^\"]*)\3\s*\Z")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")

_TOP_FIELDS = ("webhook", "rule")
_COMMON_FIELDS: tuple[str, ...] = ("id", "trigger", "description", "when", "cooldown")
_COMMON_FIELDS += ("max_age", "webhook", "data", "variant", "holdout", "uplift_window")
_CHANGE_FIELDS = ("from", "to", "cause")
_ORDER_FIELDS = ("first_order", "channel")
_WEBHOOK_FIELDS = ("url", "secret", "secret_env", "timeout", "retries", "backoff", "max_backoff")
_VARIANT_FIELDS = ("name", "weight", "below", "data")


def load_rules(path: Path, env: Mapping[str, str]) -> RuleSet:
    """Read and validate a rule file; ``env`` resolves ``secret_env``."""
    suffix = path.suffix.lower()
    if suffix not in (".toml", ".yaml", ".yml"):
        raise RuleError(f"{path}: expected a .toml, .yaml or .yml file")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RuleError(f"{path}: cannot read: {exc}") from None
    if suffix == ".toml":
        try:
            doc: Any = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise RuleError(f"{path}: not valid TOML: {exc}") from None
    else:
        import yaml

        try:
            doc = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise RuleError(f"{path}: not valid YAML: {exc}") from None
    return parse_rules(doc, env, source=str(path))


def parse_rules(doc: Any, env: Mapping[str, str], *, source: str = "<rules>") -> RuleSet:
    """Validate an already-parsed document; the first problem found is raised."""
    if not isinstance(doc, Mapping):
        raise RuleError(f"{source}: expected a table with [[rule]] entries")

    def fail(fld: str, problem: str) -> RuleError:
        return RuleError(f"{source}: {fld}: {problem}")

    known_keys(doc, _TOP_FIELDS, "", fail)
    defaults = expect_table(doc.get("webhook", {}), "webhook", fail)
    known_keys(defaults, _WEBHOOK_FIELDS, "webhook", fail)
    raw_rules = doc.get("rule")
    if not isinstance(raw_rules, list) or not raw_rules:
        raise RuleError(f"{source}: rule: expected at least one [[rule]] table")
    rules: list[CampaignRule] = []
    seen: set[str] = set()
    for n, raw in enumerate(raw_rules, 1):
        rule = _rule(raw, n, defaults, env, source)
        if rule.id in seen:
            raise RuleError(f"{source}: rule {rule.id!r}: id: used by an earlier rule")
        seen.add(rule.id)
        rules.append(rule)
    return RuleSet(tuple(rules), source)


def check_segments(rules: RuleSet, segment_ids: Collection[str], scheme: str) -> None:
    """Refuse ``from``/``to`` patterns that match no segment of the running scheme (typos)."""
    for rule in rules.change_rules:
        assert isinstance(rule.trigger, ChangeTrigger)
        for name, patterns in (
            ("from", rule.trigger.from_patterns),
            ("to", rule.trigger.to_patterns),
        ):
            for pattern in patterns or ():
                if pattern != NO_SEGMENT and not any(fnmatchcase(s, pattern) for s in segment_ids):
                    raise RuleError(
                        f"{rules.source}: rule {rule.id!r}: {name}: {pattern!r} matches no "
                        f"segment of scheme {scheme!r} ({', '.join(segment_ids)})"
                    )


@dataclass(frozen=True)
class _At:
    """Where a problem is, so every message names the file, the rule and the field."""

    source: str
    rule: str

    def error(self, fld: str, problem: str) -> RuleError:
        return RuleError(f"{self.source}: rule {self.rule}: {fld}: {problem}")


def _rule(
    raw: Any, n: int, defaults: Mapping[str, Any], env: Mapping[str, str], source: str
) -> CampaignRule:
    at = _At(source, f"#{n}")
    raw = expect_table(raw, "rule", at.error)
    rule_id = raw.get("id")
    if not isinstance(rule_id, str) or not _RULE_ID.match(rule_id):
        raise at.error("id", f"expected snake_case like 'win_back', got {rule_id!r}")
    at = _At(source, repr(rule_id))
    kind = choice(raw.get("trigger"), TRIGGERS, "trigger", at.error)
    specific = _CHANGE_FIELDS if kind == "segment_change" else _ORDER_FIELDS
    known_keys(raw, _COMMON_FIELDS + specific, "", at.error)
    trigger: ChangeTrigger | OrderTrigger
    if kind == "segment_change":
        trigger = ChangeTrigger(
            from_patterns=_patterns(raw, "from", at),
            to_patterns=_patterns(raw, "to", at),
            causes=_choices(raw, "cause", CAUSES, at),
        )
        metrics = CHANGE_METRICS
    else:
        first = expect_bool(raw.get("first_order", False), "first_order", at.error)
        trigger = OrderTrigger(first, _choices(raw, "channel", CHANNELS, at))
        metrics = ORDER_METRICS
    description = raw.get("description", "")
    if not isinstance(description, str):
        raise at.error("description", "expected a string")
    max_age = _duration(raw["max_age"], "max_age", at) if "max_age" in raw else None
    variants = _variants(raw.get("variant", []), isinstance(trigger, OrderTrigger), at)
    holdout = _holdout(raw.get("holdout", 0), variants, at)
    window = raw.get("uplift_window", DEFAULT_UPLIFT_WINDOW_S)
    return CampaignRule(
        id=rule_id,
        trigger=trigger,
        webhook=_webhook(defaults, raw.get("webhook", {}), env, at),
        when=_conditions(raw.get("when", []), metrics, at),
        cooldown_s=_duration(raw.get("cooldown", 0), "cooldown", at),
        max_age_s=max_age,
        variants=variants,
        data=_data(raw.get("data", {}), "data", at),
        description=description,
        holdout=holdout,
        uplift_window_s=_positive(window, "uplift_window", at),
    )


def _holdout(value: Any, variants: tuple[Variant, ...], at: _At) -> Decimal:
    """The control arm's share: 0 (none) up to, not including, 1 (nobody would be treated)."""
    share = _decimal(value, "holdout", at)
    if not 0 <= share < 1:
        raise at.error("holdout", f"must be at least 0 and less than 1 (0.10 = 10%), got {value!r}")
    if share > 0 and any(v.name == CONTROL for v in variants):
        raise at.error("variant", f"{CONTROL!r} names the hold-out arm: name the variant otherwise")
    return share


def _listed(raw: Mapping[str, Any], name: str, at: _At) -> list[Any] | None:
    """A filter given as one value or a list of them; ``None`` when left out (match any)."""
    if name not in raw:
        return None
    value = raw[name]
    items = value if isinstance(value, list) else [value]
    if not items:
        raise at.error(name, "an empty list matches nothing; leave the field out to match any")
    return items


def _patterns(raw: Mapping[str, Any], name: str, at: _At) -> tuple[str, ...] | None:
    items = _listed(raw, name, at)
    if items is None:
        return None
    out: list[str] = []
    for item in items:
        item = NO_SEGMENT if item is None else item  # YAML null: no segment
        if not isinstance(item, str) or not _PATTERN.match(item):
            raise at.error(
                name,
                f"expected a segment id or a wildcard pattern ('*', 'at_*'), or '' for none; "
                f"got {item!r}",
            )
        out.append(item)
    return tuple(out)


def _choices(
    raw: Mapping[str, Any], name: str, allowed: Collection[str], at: _At
) -> frozenset[str] | None:
    items = _listed(raw, name, at)
    if items is None:
        return None
    for item in items:
        if item not in allowed:
            raise at.error(name, f"must be among {', '.join(sorted(allowed))}; got {item!r}")
    return frozenset(items)


def _decimal(value: Any, name: str, at: _At) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise at.error(name, f"expected a number or a decimal string, got {value!r}")
    try:
        number = Decimal(repr(value) if isinstance(value, float) else str(value).strip())
    except InvalidOperation:
        raise at.error(name, f"not a decimal number: {value!r}") from None
    if not number.is_finite():
        raise at.error(name, f"must be finite, got {value!r}")
    return number


def _conditions(value: Any, metrics: tuple[str, ...], at: _At) -> tuple[Condition, ...]:
    items = value if isinstance(value, list) else [value]
    out: list[Condition] = []
    for n, item in enumerate(items):
        name = f"when[{n}]"
        match = _CONDITION.match(item) if isinstance(item, str) else None
        if match is None:
            raise at.error(name, f"expected 'metric op value' like 'orders >= 3', got {item!r}")
        metric, op, _, number = match.groups()
        if metric not in metrics:
            raise at.error(name, f"unknown metric {metric!r} (known: {', '.join(metrics)})")
        out.append(Condition(metric, op, _decimal(number, name, at)))
    return tuple(out)


def _duration(value: Any, name: str, at: _At) -> float:
    try:
        return parse_duration(name, value)
    except ConfigError as exc:
        raise at.error(name, str(exc).removeprefix(f"{name}: ")) from None


def _data(value: Any, name: str, at: _At) -> dict[str, Any]:
    value = expect_table(value, name, at.error)
    try:
        orjson.dumps(value)
    except TypeError as exc:
        raise at.error(name, f"not representable as JSON: {exc}") from None
    return dict(value)


def _webhook(defaults: Mapping[str, Any], own: Any, env: Mapping[str, str], at: _At) -> Webhook:
    own = expect_table(own, "webhook", at.error)
    known_keys(own, _WEBHOOK_FIELDS, "webhook", at.error)
    if "secret" in own or "secret_env" in own:  # the rule's own secret replaces the default
        defaults = {k: v for k, v in defaults.items() if k not in ("secret", "secret_env")}
    merged = {**defaults, **own}
    url = merged.get("url")
    parts = urlsplit(url) if isinstance(url, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise at.error(
            "webhook.url", f"expected an http(s) URL (here or in [webhook]), got {url!r}"
        )
    return Webhook(
        url=str(url),
        secret=_secret(merged, env, at),
        timeout_s=_positive(merged.get("timeout", "10s"), "webhook.timeout", at),
        retries=expect_int(merged.get("retries", 5), "webhook.retries", at.error, 0, 50),
        backoff_s=_duration(merged.get("backoff", "500ms"), "webhook.backoff", at),
        max_backoff_s=_duration(merged.get("max_backoff", "60s"), "webhook.max_backoff", at),
    )


def _positive(value: Any, name: str, at: _At) -> float:
    seconds = _duration(value, name, at)
    if seconds <= 0:
        raise at.error(name, f"must be more than 0, got {value!r}")
    return seconds


def _secret(merged: Mapping[str, Any], env: Mapping[str, str], at: _At) -> bytes:
    if "secret" in merged and "secret_env" in merged:
        raise at.error("webhook.secret", "give secret or secret_env, not both")
    if "secret_env" in merged:
        name = merged["secret_env"]
        if not isinstance(name, str) or not _ENV_NAME.match(name):
            raise at.error(
                "webhook.secret_env", f"expected an environment variable name, got {name!r}"
            )
        if name.startswith("RFM_"):
            raise at.error("webhook.secret_env", f"RFM_* names are reserved for settings: {name}")
        if not env.get(name):
            raise at.error("webhook.secret_env", f"environment variable {name} is not set")
        return env[name].encode("utf-8")
    secret = merged.get("secret")
    if not isinstance(secret, str) or not secret:
        raise at.error(
            "webhook.secret", "webhooks are signed: set secret or secret_env (here or in [webhook])"
        )
    return secret.encode("utf-8")


def _variants(value: Any, on_orders: bool, at: _At) -> tuple[Variant, ...]:
    if not isinstance(value, list):
        raise at.error("variant", "expected a list of [[rule.variant]] tables")
    out: list[Variant] = []
    for n, raw in enumerate(value):
        name = f"variant[{n}]"
        raw = expect_table(raw, name, at.error)
        known_keys(raw, _VARIANT_FIELDS, name, at.error)
        label = raw.get("name")
        if not isinstance(label, str) or not _VARIANT.match(label):
            raise at.error(
                f"{name}.name", f"expected letters, digits, '_', '.', '-'; got {label!r}"
            )
        if any(v.name == label for v in out):
            raise at.error(f"{name}.name", f"{label!r} is declared twice")
        below = _decimal(raw["below"], f"{name}.below", at) if "below" in raw else None
        if below is not None and below <= 0:
            raise at.error(f"{name}.below", f"must be more than 0, got {raw['below']!r}")
        out.append(
            Variant(
                name=label,
                weight=expect_int(raw.get("weight", 1), f"{name}.weight", at.error, 1, 1_000_000),
                below=below,
                data=_data(raw.get("data", {}), f"{name}.data", at),
            )
        )
    if any(v.below is not None for v in out):
        _check_bands(value, out, on_orders, at)
    return tuple(out)


def _check_bands(raw: list[Any], variants: list[Variant], on_orders: bool, at: _At) -> None:
    """An order-value split: ascending ``below`` bounds and a last, unbounded variant."""
    if not on_orders:
        raise at.error("variant[0].below", "order-value splits need trigger = 'order'")
    if any("weight" in r for r in raw):
        raise at.error("variant", "use weight (A/B by hash) or below (by order value), not both")
    *bounded, last = variants
    if last.below is not None:
        raise at.error(
            f"variant[{len(variants) - 1}].below",
            "the last variant takes every larger amount: leave its below out",
        )
    previous: Decimal | None = None
    for n, v in enumerate(bounded):
        if v.below is None:
            raise at.error(f"variant[{n}].below", "every variant but the last needs below")
        if previous is not None and v.below <= previous:
            raise at.error(f"variant[{n}].below", "below bounds must be strictly ascending")
        previous = v.below
