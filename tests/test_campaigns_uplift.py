"""A simulated campaign through the real stack: the uplift report finds a known effect.

The real worker scores first orders and publishes first assignments; the real
`rfm campaigns` runs two rules on them, each holding out half the customers; a real HTTP
receiver gets the webhooks. Rule ``coupon`` works: every customer it reached buys a known
extra amount. Rule ``aa`` is an A/A test: its webhook does nothing. Then every customer,
whatever their arms, makes the same kind of background purchases (a seeded draw).

Checked: the control arm never received a webhook (its customers are the ones the hash
holds out, computed here from hashlib); the report's revenue is exactly what was bought;
coupon's interval on revenue per customer holds the known amount; aa's intervals hold zero.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest

from consumers.campaigns.uplift import ALL_SEGMENTS
from tests.api_support import ApiServer
from tests.conftest import Isolated
from tests.support import wait_for
from tests.test_campaigns import (
    Campaigns,
    Receiver,
    drained,
    order,
    prepare,
    publish,
    receiver,  # noqa: F401 (fixture)
    redis_of,
    start_campaigns,  # noqa: F401 (fixture)
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

CUSTOMERS = [f"u-{n:03d}" for n in range(80)]
EXTRA = Decimal("250.00")  # what the coupon makes a customer buy
HOLDOUT = Decimal("0.5")
FIXED = (
    '[scoring]\nmode = "fixed"\n[scoring.edges]\n'
    "r = [7, 14, 30, 60]\nf = [1, 2, 4, 8]\nm = [100, 500, 1000, 5000]\ni = [1, 2, 4, 8]\n"
)


def held_out(rule_id: str, customer: str) -> bool:
    """The documented split: the second 8 bytes of SHA-256 against the share of 2**64."""
    digest = hashlib.sha256(f"{len(rule_id)}:{rule_id}:{customer}".encode()).digest()
    return Decimal(int.from_bytes(digest[8:16], "big")) < HOLDOUT * 2**64


def reached(got: Receiver, rule_id: str) -> list[str]:
    """Customers each webhook of ``rule_id`` named, one entry per webhook."""
    hits = [h.json() for h in got.delivered()]
    return [h["customer_id"] for h in hits if h["campaign"]["rule"] == rule_id]


def interval(versus: dict[str, Any]) -> tuple[Decimal, Decimal]:
    low, high = versus["revenue_per_customer_interval"]
    return Decimal(low), Decimal(high)


def rows_of(doc: dict[str, Any], rule_id: str) -> dict[str, dict[str, Any]]:
    [rule] = [r for r in doc["rules"] if r["rule"] == rule_id]
    return {r["arm"]: r for r in rule["rows"] if r["segment"] == ALL_SEGMENTS}


def test_the_report_finds_a_known_uplift_and_none_in_an_a_a_split(
    isolated: Isolated,
    receiver: Receiver,  # noqa: F811
    start_campaigns: Callable[..., Campaigns],  # noqa: F811
    start_worker: Callable[..., Any],
) -> None:
    settings, topics = prepare(isolated)
    worker = start_worker(isolated.config_file(FIXED))
    rules = isolated.tmp / "rules.toml"
    rule = """
[[rule]]
id = "{id}"
trigger = "segment_change"
from = ""
holdout = {share}
uplift_window = "1h"
webhook = {{ url = "{url}" }}
"""
    rules.write_text(
        '[webhook]\nsecret = "s"\nretries = 1\nbackoff = "50ms"\n'
        + rule.format(id="coupon", share=HOLDOUT, url=receiver.url("/coupon"))
        + rule.format(id="aa", share=HOLDOUT, url=receiver.url("/nothing")),  # the A/A test
        encoding="utf-8",
    )
    proc = start_campaigns(rules)
    publish(settings, topics.orders, [order(c, f"first-{c}", "80.00") for c in CUSTOMERS])

    def assigned() -> bool:
        with redis_of(isolated) as client:
            return all(
                client.hlen(f"{isolated.name}:cmp:assign:{rule}") == len(CUSTOMERS)
                for rule in ("coupon", "aa")
            )

    wait_for(assigned, timeout=40, what="every customer assigned in both rules", diagnose=proc.tail)
    wait_for(lambda: drained(settings), timeout=30, what="the first assignments acted on")

    coupon_hits = reached(receiver, "coupon")
    treated = {c for c in CUSTOMERS if not held_out("coupon", c)}
    control = set(CUSTOMERS) - treated
    assert set(coupon_hits) == treated and len(coupon_hits) == len(treated)  # one each
    a_treated = {c for c in CUSTOMERS if not held_out("aa", c)}
    assert not control & set(coupon_hits)
    assert sorted(reached(receiver, "aa")) == sorted(a_treated)
    assert 25 < len(control) < 55  # the draw of this seed: both arms well filled

    # The coupon works: each customer it reached buys EXTRA more. Then everybody makes the
    # same kind of background purchases, refunds included.
    draw = random.Random(20261206)
    spend = {c: Decimal(0) for c in CUSTOMERS}
    later: list[dict[str, Any]] = []
    for c in coupon_hits:
        later.append(order(c, f"extra-{c}", str(EXTRA)))
        spend[c] += EXTRA
    for c in CUSTOMERS:
        for k in range(draw.choice([0, 0, 1, 2])):
            amount = Decimal(draw.randrange(1_000, 40_000)) / 100
            later.append(order(c, f"bg-{c}-{k}", str(amount)))
            spend[c] += amount
            if draw.random() < 0.2:
                back = (amount / 2).quantize(Decimal("0.01"))
                refund = order(c, f"bg-{c}-{k}", str(back), f"refund-{c}-{k}")
                later.append({**refund, "type": "order_refunded"})
                spend[c] -= back
    publish(settings, topics.orders, later)
    wait_for(lambda: drained(settings), timeout=30, what="the later orders counted")
    assert proc.alive and worker.alive, proc.tail()

    with ApiServer(isolated.process_env(), isolated.tmp / "api.log") as api, api.client() as http:
        doc = http.get("/api/uplift").json()
        csv_lines = http.get("/api/uplift.csv", params={"rule": "coupon"}).text.splitlines()
        assert http.get("/api/uplift", params={"rule": "nope"}).status_code == 404

    def total(customers: set[str]) -> str:
        return str(sum((spend[c] for c in customers), Decimal("0.00")))

    coupon = rows_of(doc, "coupon")
    assert set(coupon) == {"control", "treated"}
    assert (coupon["treated"]["customers"], coupon["control"]["customers"]) == (
        len(treated),
        len(control),
    )
    assert coupon["treated"]["revenue"] == total(treated)  # exact money, refunds taken off
    assert coupon["control"]["revenue"] == total(control)
    assert coupon["treated"]["repurchasers"] == len(treated)  # everyone bought the extra
    versus = coupon["treated"]["vs_control"]
    low, high = interval(versus)
    assert low <= EXTRA <= high, versus
    assert low > 0  # and the effect is seen, not merely allowed
    assert versus["repurchase_rate_interval"][0] > 0

    aa = rows_of(doc, "aa")
    assert aa["treated"]["revenue"] == total(a_treated)
    assert aa["control"]["revenue"] == total(set(CUSTOMERS) - a_treated)
    versus = aa["treated"]["vs_control"]
    low, high = interval(versus)
    assert low <= 0 <= high, versus
    low_rate, high_rate = versus["repurchase_rate_interval"]
    assert low_rate <= 0 <= high_rate, versus

    # the CSV: a header and one line per row of the JSON report's coupon rule
    [coupon_rule] = [r for r in doc["rules"] if r["rule"] == "coupon"]
    assert csv_lines[0].startswith("rule,arm,segment,customers")
    assert len(csv_lines) == 1 + len(coupon_rule["rows"])
