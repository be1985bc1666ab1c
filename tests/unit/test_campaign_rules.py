"""Campaign actions, pure parts: the rule file, matching, variants, signing, the request.

Delivery's retry policy is checked through httpx's own in-memory transport: the real client,
no network, no sleeps (zero backoff).
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import hmac
import tomllib
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from consumers.campaigns.actions import build, idempotency_key
from consumers.campaigns.delivery import Delivered, Failed, deliver
from consumers.campaigns.matching import (
    Malformed,
    Trigger,
    change_triggers,
    conditions_hold,
    decode_change,
    order_triggers,
    segment_matches,
)
from consumers.campaigns.rule_file import check_segments, load_rules, parse_rules
from consumers.campaigns.rules import (
    CampaignRule,
    Condition,
    RuleError,
    RuleSet,
    Variant,
    Webhook,
)
from consumers.campaigns.signing import sign, verify
from consumers.campaigns.variants import by_amount, by_hash, choose, hash_point
from stream.config import StoreSettings
from stream.core.events import parse_order
from stream.schemes import load_scheme

EXAMPLE = Path(__file__).resolve().parents[2] / "consumers" / "campaigns" / "example.toml"
HOOK = {"url": "http://127.0.0.1:9/hook", "secret": "k"}
NOW = 1_800_000_000_000


def doc(*rules: dict[str, Any], webhook: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"webhook": HOOK if webhook is None else webhook, "rule": list(rules)}


def change_rule(**fields: Any) -> dict[str, Any]:
    return {"id": "win_back", "trigger": "segment_change", **fields}


def order_rule(**fields: Any) -> dict[str, Any]:
    return {"id": "coupon", "trigger": "order", **fields}


def one(*rules: dict[str, Any], env: dict[str, str] | None = None) -> CampaignRule:
    return parse_rules(doc(*rules), env or {}).rules[0]


def change_event(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "event_id": "c-1:7",
        "customer_id": "c-1",
        "seq": 7,
        "from": "champions",
        "to": "at_risk",
        "scores": {"r": 2, "f": 5, "m": 5, "i": 1},
        "metrics": {"orders": 12, "monetary": "1234.50", "interactions": 3},
        "cause": "clock",
        "at": "2027-01-15T08:00:00.000Z",  # NOW
    }
    return {**base, **fields}


# -- the rule file ----------------------------------------------------------------------------


def test_the_example_file_loads_and_names_real_segments() -> None:
    rules = load_rules(EXAMPLE, {})
    assert [r.id for r in rules.rules] == [
        "win_back",
        "cant_lose_call",
        "churn_rescue",
        "first_order_coupon",
    ]
    scheme = load_scheme("rfm-classic", 5)
    check_segments(rules, scheme.ids, scheme.id)
    win_back, _, _, coupon = rules.rules
    assert win_back.split == "hash" and coupon.split == "order_value"
    assert win_back.cooldown_s == 30 * 86400
    assert win_back.webhook.backoff_s == 0.5 and win_back.webhook.retries == 5
    assert coupon.variants[0].below == Decimal("500")


def test_yaml_reads_like_toml_and_null_means_no_previous_segment(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(
        """
webhook: {url: "https://hooks.example/rfm", secret_env: HOOK_SECRET}
rule:
  - id: welcome
    trigger: segment_change
    from: null
    to: new_customers
""",
        encoding="utf-8",
    )
    [rule] = load_rules(path, {"HOOK_SECRET": "abc"}).rules
    assert rule.webhook.secret == b"abc"
    change = decode_change(orjson.dumps(change_event(**{"from": None, "to": "new_customers"})))
    assert change_triggers([rule], change, NOW)
    moved = decode_change(orjson.dumps(change_event(**{"from": "lost", "to": "new_customers"})))
    assert not change_triggers([rule], moved, NOW)


def test_a_rule_webhook_overrides_single_default_keys() -> None:
    rule = one(change_rule(webhook={"retries": 1, "secret_env": "S"}), env={"S": "from-env"})
    assert rule.webhook.url == HOOK["url"]
    assert rule.webhook.retries == 1
    assert rule.webhook.secret == b"from-env"  # the rule's secret_env replaces the default secret


BAD: list[tuple[Any, str]] = [
    ({"rule": [change_rule()], "hooks": {}}, "hooks: unknown field"),
    ({"webhook": HOOK}, "rule: expected at least one [[rule]]"),
    (doc({"trigger": "order"}), "rule #1: id: expected snake_case"),
    (doc(change_rule(id="Win-Back")), "rule #1: id: expected snake_case"),
    (doc(change_rule(), change_rule()), "rule 'win_back': id: used by an earlier rule"),
    (doc(change_rule(trigger="click")), "rule 'win_back': trigger: must be one of"),
    (doc(change_rule(form="*")), "rule 'win_back': form: unknown field"),
    (doc(order_rule(to="at_risk")), "rule 'coupon': to: unknown field"),
    (doc(change_rule(first_order=True)), "rule 'win_back': first_order: unknown field"),
    (doc(change_rule(to=[])), "rule 'win_back': to: an empty list matches nothing"),
    (doc(change_rule(to="At Risk")), "rule 'win_back': to: expected a segment id"),
    (doc(change_rule(cause=["clock", "tick"])), "rule 'win_back': cause: must be among"),
    (doc(order_rule(channel="telepathy")), "rule 'coupon': channel: must be among"),
    (doc(order_rule(first_order="yes")), "rule 'coupon': first_order: expected true or false"),
    (doc(change_rule(when=["orders => 3"])), "rule 'win_back': when[0]: expected 'metric op"),
    (doc(change_rule(when=["ordres >= 3"])), "rule 'win_back': when[0]: unknown metric 'ordres'"),
    (doc(change_rule(when=["amount > 1"])), "rule 'win_back': when[0]: unknown metric 'amount'"),
    (doc(order_rule(when=["orders > 1"])), "rule 'coupon': when[0]: unknown metric 'orders'"),
    (doc(change_rule(when=["monetary >= 1e999x"])), "rule 'win_back': when[0]: not a decimal"),
    (doc(change_rule(cooldown="soon")), "rule 'win_back': cooldown: expected a duration"),
    (doc(change_rule(max_age=-1)), "rule 'win_back': max_age: must be a finite duration"),
    (doc(change_rule(data=[1])), "rule 'win_back': data: expected a table"),
    (doc(change_rule(), webhook={"secret": "k"}), "rule 'win_back': webhook.url: expected an"),
    (
        doc(change_rule(), webhook={"url": "ftp://x/y", "secret": "k"}),
        "rule 'win_back': webhook.url",
    ),
    (doc(change_rule(), webhook={"url": HOOK["url"]}), "webhook.secret: webhooks are signed"),
    (
        doc(change_rule(webhook={"secret": "a", "secret_env": "B"}), webhook={"url": HOOK["url"]}),
        "webhook.secret: give secret or secret_env, not both",
    ),
    (doc(change_rule(webhook={"secret_env": "UNSET_X"})), "environment variable UNSET_X is not"),
    (doc(change_rule(webhook={"secret_env": "RFM_SECRET"})), "RFM_* names are reserved"),
    (doc(change_rule(webhook={"retries": 99})), "webhook.retries: expected an integer from 0"),
    (doc(change_rule(webhook={"timeout": 0})), "webhook.timeout: must be more than 0"),
    (doc(change_rule(webhook={"verify": False})), "rule 'win_back': webhook.verify: unknown"),
    ({"webhook": {"urll": "x"}, "rule": [change_rule()]}, "webhook.urll: unknown field"),
    (doc(change_rule(variant={"name": "a"})), "rule 'win_back': variant: expected a list"),
    (doc(change_rule(variant=[{"name": "a b"}])), "variant[0].name: expected letters"),
    (
        doc(change_rule(variant=[{"name": "a"}, {"name": "a"}])),
        "variant[1].name: 'a' is declared twice",
    ),
    (doc(change_rule(variant=[{"name": "a", "weight": 0}])), "variant[0].weight: expected an"),
    (doc(change_rule(variant=[{"name": "a", "colour": 1}])), "variant[0].colour: unknown field"),
    (
        doc(change_rule(variant=[{"name": "a", "below": 5}, {"name": "b"}])),
        "variant[0].below: order-value splits need trigger = 'order'",
    ),
    (
        doc(order_rule(variant=[{"name": "a", "below": 5}, {"name": "b", "below": 9}])),
        "rule 'coupon': variant[1].below: the last variant takes every larger amount",
    ),
    (
        doc(
            order_rule(
                variant=[{"name": "a", "below": 9}, {"name": "b", "below": 5}, {"name": "c"}]
            )
        ),
        "rule 'coupon': variant[1].below: below bounds must be strictly ascending",
    ),
    (
        doc(order_rule(variant=[{"name": "a"}, {"name": "b", "below": 5}, {"name": "c"}])),
        "rule 'coupon': variant[0].below: every variant but the last needs below",
    ),
    (
        doc(order_rule(variant=[{"name": "a", "below": 5, "weight": 2}, {"name": "b"}])),
        "rule 'coupon': variant: use weight (A/B by hash) or below",
    ),
    (
        doc(order_rule(variant=[{"name": "a", "below": "-1"}, {"name": "b"}])),
        "variant[0].below: must be more than 0",
    ),
]


@pytest.mark.parametrize(("document", "message"), BAD, ids=[m for _, m in BAD])
def test_a_bad_rule_file_names_the_rule_and_field(document: Any, message: str) -> None:
    with pytest.raises(RuleError) as caught:
        parse_rules(document, {}, source="rules.toml")
    assert message in str(caught.value)
    assert str(caught.value).startswith("rules.toml: ")


def test_unreadable_or_unknown_files_are_refused(tmp_path: Path) -> None:
    bad_toml = tmp_path / "r.toml"
    bad_toml.write_text("[[rule]\n", encoding="utf-8")
    with pytest.raises(RuleError, match="not valid TOML"):
        load_rules(bad_toml, {})
    with pytest.raises(RuleError, match=r"expected a \.toml, \.yaml or \.yml file"):
        load_rules(tmp_path / "r.json", {})


def test_patterns_that_match_no_segment_of_the_scheme_are_typos() -> None:
    scheme = load_scheme("rfm-classic", 5)
    rules = parse_rules(doc(change_rule(to="at_rsk")), {}, source="r.toml")
    with pytest.raises(RuleError, match=r"rule 'win_back': to: 'at_rsk' matches no segment"):
        check_segments(rules, scheme.ids, scheme.id)
    fine = parse_rules(doc(change_rule(**{"from": ["", "cant_*"], "to": "at_risk"})), {})
    check_segments(fine, scheme.ids, scheme.id)


# -- matching ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("segment", "patterns", "expected"),
    [
        (None, None, True),  # field left out: anything, first assignment included
        ("loyal", None, True),
        ("loyal", ("*",), True),
        (None, ("*",), False),  # "*" is any segment, not "no segment"
        (None, ("",), True),
        ("loyal", ("",), False),
        ("at_risk", ("at_*",), True),
        ("about_to_sleep", ("a?out_*",), True),
        ("champions", ("loyal", "champ*"), True),
        ("Champions", ("champions",), False),  # case-sensitive on every platform
    ],
)
def test_segment_patterns(
    segment: str | None, patterns: tuple[str, ...] | None, expected: bool
) -> None:
    assert segment_matches(segment, patterns) is expected


def test_conditions_compare_exact_decimals() -> None:
    at_least = (Condition("monetary", ">=", Decimal("1000.00")),)
    assert conditions_hold(at_least, {"monetary": Decimal("1000.0")})
    assert not conditions_hold(at_least, {"monetary": Decimal("999.99")})
    assert not conditions_hold(at_least, {})  # a missing metric fails its condition
    rule = one(change_rule(when=['monetary >= "1000.00"', "orders > 11", "r <= 2"]))
    assert [str(c) for c in rule.when] == ["monetary >= 1000.00", "orders > 11", "r <= 2"]
    fires = decode_change(orjson.dumps(change_event()))
    assert change_triggers([rule], fires, NOW)
    poorer = change_event(metrics={"orders": 12, "monetary": "999.99", "interactions": 3})
    assert not change_triggers([rule], decode_change(orjson.dumps(poorer)), NOW)


def test_change_rules_filter_on_from_to_cause_and_age() -> None:
    rule = one(change_rule(**{"from": "*", "to": "at_risk", "cause": ["clock"], "max_age": "1h"}))
    assert change_triggers([rule], decode_change(orjson.dumps(change_event())), NOW)
    for other in (
        change_event(cause="order"),
        change_event(to="lost"),
        change_event(**{"from": None}),
        change_event(at="2027-01-15T06:59:59.999Z"),  # more than an hour before NOW
        change_event(at=None),
    ):
        assert not change_triggers([rule], decode_change(orjson.dumps(other)), NOW), other


def test_churn_risk_events_reach_only_rules_that_name_them() -> None:
    churn = {"at_risk": True, "p_alive": 0.49, "threshold": 0.5, "model_version": 3}
    at_risk = change_event(**{"from": "at_risk", "cause": "churn_risk", "churn": churn})
    recovered = {**at_risk, "churn": {**churn, "at_risk": False}}
    any_move = one(change_rule(to="at_risk"))
    assert change_triggers([any_move], decode_change(orjson.dumps(change_event())), NOW)
    assert not change_triggers([any_move], decode_change(orjson.dumps(at_risk)), NOW)
    rescue = one(change_rule(cause=["churn_risk"], when=["churn_risk == 1"]))
    assert change_triggers([rescue], decode_change(orjson.dumps(at_risk)), NOW)
    assert not change_triggers([rescue], decode_change(orjson.dumps(recovered)), NOW)
    assert not change_triggers([rescue], decode_change(orjson.dumps(change_event())), NOW)


def test_a_fired_change_carries_the_event_as_received() -> None:
    rule = one(change_rule())
    event = change_event()
    [trigger] = change_triggers([rule], decode_change(orjson.dumps(event)), NOW)
    assert (trigger.customer_id, trigger.event_id, trigger.event) == ("c-1", "c-1:7", event)


@pytest.mark.parametrize(
    "raw",
    [
        b"{nope",
        b"[1]",
        orjson.dumps({"customer_id": "c", "cause": "clock"}),
        orjson.dumps(change_event(customer_id="")),
        orjson.dumps(change_event(to=5)),
    ],
)
def test_malformed_changes_are_refused(raw: bytes) -> None:
    with pytest.raises(Malformed):
        decode_change(raw)


def _order(amount: str, **fields: Any) -> tuple[Any, dict[str, Any]]:
    event = {
        "event_id": "evt-1",
        "type": "order_completed",
        "order_id": "o-1",
        "customer_id": "c-1",
        "amount": amount,
        "currency": "TWD",
        "occurred_at": NOW - 1000,
        "channel": "online",
        **fields,
    }
    return parse_order(orjson.dumps(event), StoreSettings(), NOW), event


def test_order_rules_fire_on_completions_only_and_first_order_when_first() -> None:
    first_only = one(order_rule(first_order=True))
    any_online = one(order_rule(id="online", channel=["online"], when=["amount >= 100"]))
    rules = [first_only, any_online]
    order, event = _order("120.00")

    def fired(order: Any, first: bool) -> list[str]:
        got = order_triggers(rules, order, event, first=first, decimals=2, now_ms=NOW)
        return [t.rule.id for t in got]

    assert fired(order, True) == ["coupon", "online"]
    assert fired(order, False) == ["online"]
    assert fired(_order("99.99")[0], False) == []
    assert fired(_order("500", channel="pos")[0], True) == ["coupon"]
    refund, _ = _order("10", type="order_refunded")
    assert fired(refund, True) == []
    [trigger] = order_triggers([first_only], order, event, first=True, decimals=2, now_ms=NOW)
    assert trigger.amount == Decimal("120.00")
    assert trigger.at_ms == order.occurred_at  # the assignment's time, the same on a replay


def test_a_change_trigger_carries_the_change_time_not_the_clock() -> None:
    """Assignments are recorded at the trigger's time: read again after a Redis that lost its
    tail, the change fires later, and orders it prompted must still fall after it."""
    rule = one(change_rule())
    change = decode_change(orjson.dumps(change_event(at="2027-01-15T07:59:00.250Z")))
    [trigger] = change_triggers([rule], change, NOW + 3_600_000)
    assert trigger.at_ms == NOW - 59_750


# -- variants ---------------------------------------------------------------------------------


def test_the_hash_is_fixed_forever() -> None:
    """Golden values: changing the hash would silently move customers between arms."""
    assert hash_point("ab_test", "c-0") == int.from_bytes(
        hashlib.sha256(b"7:ab_test:c-0").digest()[:8], "big"
    )
    assert hash_point("win_back", "c-42") == 2256815910019216507
    assert hash_point("a", "bc") != hash_point("ab", "c")


def test_weights_split_customers_in_proportion() -> None:
    variants = (Variant("control", weight=1), Variant("treatment", weight=3))
    counts = collections.Counter(by_hash(variants, "r", f"c-{n}").name for n in range(20_000))
    assert 0.23 < counts["control"] / 20_000 < 0.27


@given(st.text(max_size=40), st.text(max_size=40))
def test_hash_assignment_is_deterministic_and_declared(rule_id: str, customer: str) -> None:
    variants = (Variant("a", weight=2), Variant("b", weight=5), Variant("c", weight=1))
    chosen = by_hash(variants, rule_id, customer)
    assert chosen in variants
    assert by_hash(variants, rule_id, customer) is chosen


MONEY = st.decimals(min_value=0, max_value=10**7, places=2)


@given(MONEY, MONEY)
def test_order_value_bands_are_monotone(low: Decimal, extra: Decimal) -> None:
    bands = (Variant("s", below=Decimal(500)), Variant("m", below=Decimal(2000)), Variant("l"))
    names = [v.name for v in bands]
    assert names.index(by_amount(bands, low).name) <= names.index(
        by_amount(bands, low + extra).name
    )


def test_order_value_band_edges() -> None:
    bands = (Variant("small", below=Decimal("500")), Variant("large"))
    assert by_amount(bands, Decimal("499.99")).name == "small"
    assert by_amount(bands, Decimal("500.00")).name == "large"
    rule = one(order_rule(variant=[{"name": "small", "below": 500}, {"name": "large"}]))
    assert choose(rule, "c-1", Decimal("0")) == rule.variants[0]
    assert choose(one(order_rule()), "c-1", Decimal("1")) is None


# -- the request ------------------------------------------------------------------------------


def test_signature_is_hmac_sha256_of_the_body() -> None:
    body = b"what do ya want for nothing?"  # RFC 4231, test case 2
    expected = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    assert sign(b"Jefe", body) == f"sha256={expected}"
    assert verify(b"Jefe", body, f"sha256={expected}")
    assert not verify(b"Jefe", body + b" ", f"sha256={expected}")
    assert not verify(b"other", body, f"sha256={expected}")


def test_idempotency_keys_are_stable_short_ascii_and_distinct() -> None:
    key = idempotency_key("win_back", "c-42:7")
    assert key == idempotency_key("win_back", "c-42:7")
    assert key.startswith("win_back.") and key.isascii() and len(key) < 64
    assert key != idempotency_key("win_back", "c-42:8")
    assert key != idempotency_key("other", "c-42:7")
    assert idempotency_key("r", "客戶 🎉 {x}:1").isascii()


def test_the_body_is_the_event_plus_the_campaign() -> None:
    rule = one(
        change_rule(
            data={"campaign": "win-back", "discount": "50"},
            variant=[{"name": "big", "data": {"discount": "200"}}],
        )
    )
    event = change_event()
    action = build(Trigger(rule, "c-1", "c-1:7", event), rule.variants[0])
    body = orjson.loads(action.body)
    campaign = body.pop("campaign")
    assert body == event
    assert campaign == {
        "rule": "win_back",
        "variant": "big",
        "data": {"campaign": "win-back", "discount": "200"},  # the variant's data wins
        "idempotency_key": action.key,
    }
    headers = action.headers(b"k")
    assert headers["Idempotency-Key"] == action.key
    expected = hmac.new(b"k", action.body, hashlib.sha256).hexdigest()
    assert headers["X-RFM-Signature"] == f"sha256={expected}"


# -- delivery policy --------------------------------------------------------------------------


def _deliver(answers: list[int | Exception], retries: int = 3) -> tuple[Any, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        answer = answers[min(len(seen), len(answers)) - 1]
        if isinstance(answer, Exception):
            raise answer
        return httpx.Response(answer)

    hook = Webhook("http://hooks.test/x", b"k", retries=retries, backoff_s=0, max_backoff_s=0)
    rule = CampaignRule("r", one(change_rule()).trigger, hook)
    action = build(Trigger(rule, "c", "c:1", {"customer_id": "c"}), None)

    async def run() -> Any:
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
            return await deliver(client, action, hook)

    return asyncio.run(run()), seen


def test_transient_failures_are_retried_with_identical_requests() -> None:
    outcome, seen = _deliver([500, httpx.ConnectError("refused"), 429, 503, 204], retries=4)
    assert outcome == Delivered(attempts=5, status=204)
    assert (
        len({(r.content, r.headers["Idempotency-Key"], r.headers["X-RFM-Signature"]) for r in seen})
        == 1
    )


def test_retries_run_out() -> None:
    outcome, seen = _deliver([500], retries=2)
    assert isinstance(outcome, Failed) and outcome.attempts == 3 == len(seen)
    assert outcome.reason == "HTTP 500 after 3 attempts"


@pytest.mark.parametrize("status", [400, 401, 404, 301])
def test_answers_a_retry_cannot_change_fail_at_once(status: int) -> None:
    outcome, seen = _deliver([status, 200])
    assert isinstance(outcome, Failed) and len(seen) == 1
    assert f"HTTP {status}" in outcome.reason


def test_rule_sets_group_rules_by_trigger() -> None:
    rules = parse_rules(doc(change_rule(), order_rule(first_order=True)), {})
    assert isinstance(rules, RuleSet)
    assert [r.id for r in rules.change_rules] == ["win_back"]
    assert [r.id for r in rules.order_rules] == ["coupon"]
    assert rules.needs_first_order


def test_the_documented_rule_example_is_a_valid_rule_file() -> None:
    page = (EXAMPLE.parents[2] / "docs" / "campaigns.md").read_text(encoding="utf-8")
    block = page.split("```toml\n", 1)[1].split("```", 1)[0]
    rules = parse_rules(
        tomllib.loads(block), {"CAMPAIGN_WEBHOOK_SECRET": "x"}, source="docs/campaigns.md"
    )
    scheme = load_scheme("rfm-classic", 5)
    check_segments(rules, scheme.ids, scheme.id)
    assert [r.split for r in rules.rules] == ["hash", "order_value"]
