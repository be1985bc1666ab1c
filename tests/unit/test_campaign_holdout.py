"""Hold-out (control) groups of campaign rules: the rule file's fields and the hash split.

The split is checked against its definition computed here from hashlib directly (the second
8 bytes of SHA-256 over the length-prefixed rule id and customer), and statistically: the
share held out, nesting as the share grows, and independence from the A/B arms.
"""

from __future__ import annotations

import collections
import hashlib
import math
import os
import subprocess
import sys
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consumers.campaigns.rule_file import parse_rules
from consumers.campaigns.rules import (
    DEFAULT_UPLIFT_WINDOW_S,
    CampaignRule,
    ChangeTrigger,
    RuleError,
    Variant,
    Webhook,
)
from consumers.campaigns.variants import by_hash, held_out

HOOK = {"url": "http://127.0.0.1:9/hook", "secret": "k"}
CUSTOMERS = [f"c-{n}" for n in range(20_000)]


def rule(holdout: str, rule_id: str = "win_back", variants: int = 0) -> CampaignRule:
    return CampaignRule(
        id=rule_id,
        trigger=ChangeTrigger(),
        webhook=Webhook("http://127.0.0.1:9/hook", b"k"),
        variants=tuple(Variant(f"v{n}", weight=n + 1) for n in range(variants)),
        holdout=Decimal(holdout),
    )


def oracle(rule_id: str, customer: str, share: Decimal) -> bool:
    digest = hashlib.sha256(f"{len(rule_id)}:{rule_id}:{customer}".encode()).digest()
    return Decimal(int.from_bytes(digest[8:16], "big")) < share * 2**64


def within_binomial(hits: int, n: int, p: float) -> bool:
    """Inside six standard deviations: a deterministic input set, so never a flake."""
    return abs(hits - n * p) <= 6 * math.sqrt(n * p * (1 - p))


@given(st.text(max_size=40), st.text(max_size=40), st.decimals(0, "0.99", places=4))
def test_the_hold_out_is_the_second_point_of_the_digest(
    rule_id: str, customer: str, share: Decimal
) -> None:
    r = rule(str(share), rule_id=rule_id)
    assert held_out(r, customer) == oracle(r.id, customer, share)
    assert held_out(r, customer) == held_out(r, customer)


@pytest.mark.parametrize("share", ["0.1", "0.5", "0.9"])
def test_the_declared_share_is_held_out(share: str) -> None:
    hits = sum(held_out(rule(share), c) for c in CUSTOMERS)
    assert within_binomial(hits, len(CUSTOMERS), float(share))


@given(st.text(max_size=30), st.decimals(0, "0.98", places=3), st.decimals(0, "0.01", places=3))
def test_a_larger_share_only_adds_customers(customer: str, share: Decimal, more: Decimal) -> None:
    if held_out(rule(str(share)), customer):
        assert held_out(rule(str(share + more)), customer)


def test_no_hold_out_holds_nobody() -> None:
    assert not any(held_out(rule("0"), c) for c in CUSTOMERS[:1000])


def test_adding_a_hold_out_keeps_the_arms_relative_shares() -> None:
    """Arms come from the first point, unchanged; among the treated their shares stay 1:2:3,
    and the control takes the same share from each arm (independent points)."""
    r = rule("0.3", variants=3)
    arms = {c: by_hash(r.variants, r.id, c).name for c in CUSTOMERS}
    control = {c for c in CUSTOMERS if held_out(r, c)}
    treated = collections.Counter(arms[c] for c in CUSTOMERS if c not in control)
    n = sum(treated.values())
    for name, weight in (("v0", 1), ("v1", 2), ("v2", 3)):
        assert within_binomial(treated[name], n, weight / 6), treated
        in_arm = [c for c in CUSTOMERS if arms[c] == name]
        assert within_binomial(sum(c in control for c in in_arm), len(in_arm), 0.3)


def test_the_hold_out_is_the_same_in_another_process() -> None:
    """Python's hash() is salted per process; the split must not depend on it."""
    here = [c for c in CUSTOMERS[:500] if held_out(rule("0.5"), c)]
    code = (
        "from decimal import Decimal\n"
        "from tests.unit.test_campaign_holdout import CUSTOMERS, held_out, rule\n"
        "print(','.join(c for c in CUSTOMERS[:500] if held_out(rule('0.5'), c)))\n"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().split(",") == here


# -- the rule file --------------------------------------------------------------------------


def parse(**fields: Any) -> CampaignRule:
    doc = {"webhook": HOOK, "rule": [{"id": "win_back", "trigger": "segment_change", **fields}]}
    return parse_rules(doc, {}).rules[0]


def test_holdout_and_uplift_window_are_read() -> None:
    assert parse(holdout=0.1, uplift_window="14d").holdout == Decimal("0.1")
    assert parse(holdout="0.25").uplift_window_s == DEFAULT_UPLIFT_WINDOW_S
    assert parse(holdout=0.1, uplift_window="14d").uplift_window_s == 14 * 86_400
    plain = parse()
    assert plain.holdout == 0 and not plain.measured
    assert parse(holdout=0.1, variant=[{"name": "a"}, {"name": "b"}]).measured


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"holdout": 1}, "rule 'win_back': holdout: must be at least 0 and less than 1"),
        ({"holdout": -0.1}, "rule 'win_back': holdout: must be at least 0 and less than 1"),
        ({"holdout": "ten"}, "rule 'win_back': holdout: not a decimal number"),
        ({"holdout": True}, "rule 'win_back': holdout: expected a number"),
        ({"uplift_window": "0s"}, "rule 'win_back': uplift_window: must be more than 0"),
        ({"uplift_window": "soon"}, "rule 'win_back': uplift_window: expected a duration"),
        (
            {"holdout": 0.1, "variant": [{"name": "control"}, {"name": "b"}]},
            "rule 'win_back': variant: 'control' names the hold-out arm",
        ),
    ],
)
def test_a_bad_holdout_names_the_rule_and_the_field(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(RuleError, match=message):
        parse(**fields)
