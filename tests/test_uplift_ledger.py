"""The uplift ledger's counting script on a real Redis: each event once per measured rule,
inside the rule's window after the assignment, refunds only of orders it counted.

The expected tallies are worked out by hand in the comments, event by event.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest
import redis.asyncio as aioredis

from consumers.campaigns.ledger import CampaignKeys
from consumers.campaigns.rules import CampaignRule, ChangeTrigger, Webhook
from consumers.campaigns.uplift_ledger import Assignment, UpliftLedger, read_rule
from tests.conftest import Isolated

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

T = 1_800_000_000_000


def measured(rule_id: str, window_s: float) -> CampaignRule:
    return CampaignRule(
        id=rule_id,
        trigger=ChangeTrigger(),
        webhook=Webhook("http://127.0.0.1:9/hook", b"k"),
        holdout=Decimal("0.5"),
        uplift_window_s=window_s,
    )


def test_each_event_counts_once_inside_the_window(isolated: Isolated) -> None:
    async def run() -> None:
        redis = aioredis.Redis.from_url(isolated.infra.redis_url)
        keys = CampaignKeys(f"{isolated.name}:")
        rules = [measured("long", 10.0), measured("short", 1.0), measured("other", 10.0)]
        rules.append(CampaignRule("plain", ChangeTrigger(), rules[0].webhook))  # not measured
        ledger = UpliftLedger(redis, keys, rules, remember_s=60)
        try:
            assert [r.id for r in ledger.rules] == ["long", "short", "other"]
            assert await ledger.assign("long", "c1", Assignment("treated", T, "loyal"), "e0", "o")
            assert await ledger.assign("short", "c1", Assignment("control", T, None), "e0", "o")
            # first assignment wins
            assert not await ledger.assign(
                "long", "c1", Assignment("control", T + 5, "x"), "e9", "o"
            )
            assert await ledger.arm_of("long", "c1") == "treated"
            assert await ledger.arm_of("other", "c1") is None

            async def count(event: str, kind: str, value: str, at: int, order: str = "") -> None:
                await ledger.count("c1", event, kind, value, at, order)

            await count("e0", "c", "500", T + 1, "o0")  # the assigning event: never an outcome
            await count("e1", "c", "1000", T + 10, "o1")  # long, short: o 1, r 1000
            await count("e1", "c", "1000", T + 10, "o1")  # read again: nothing
            await count("e2", "c", "1000", T + 20, "o1")  # o1 re-sent, new event id: nothing
            await count("e3", "c", "250", T - 1, "o2")  # before the assignment: nothing
            await count("e4", "c", "300", T + 5_000, "o3")  # long only: o 2, r 1300
            await count("e5", "r", "400", T + 30, "o1")  # long r 900, short r 600
            await count("e5", "r", "400", T + 30, "o1")  # read again: nothing
            await count("e6", "r", "100", T + 31, "o2")  # refunds an order never counted
            await count("e7", "f", "1000", T + 40, "o1")  # 600 left: long o 1 r 300, short 0 0
            await count("e8", "f", "1000", T + 41, "o1")  # fully refunded already: nothing
            await count("m1", "m", "loyal>at_risk", T + 50)
            await count("m2", "m", "at_risk>lost", T + 5_000)  # after short's window
            await count("e9", "c", "700", T + 10_000, "o4")  # window end excluded
            await ledger.count("c2", "x1", "c", "900", T + 10, "o5")  # not assigned anywhere

            _, _, long_tally = await read_rule(redis, ledger.keys, "long")
            _, _, short_tally = await read_rule(redis, ledger.keys, "short")
            assert long_tally == {
                b"o|c1": b"1",
                b"r|c1": b"300",
                b"m|c1": b"loyal>at_risk;at_risk>lost",
            }
            assert short_tally == {b"o|c1": b"0", b"r|c1": b"0", b"m|c1": b"loyal>at_risk"}
            assert await read_rule(redis, ledger.keys, "other") == ({}, {}, {})

            await ledger.declare()
            declared, assigned, _ = await read_rule(redis, ledger.keys, "long")
            assert declared == {b"holdout": b"0.5", b"window_s": b"10.0"}
            assert set(assigned) == {b"c1"}

            await ledger.forget("c1")  # erasure
            for rule_id in ("long", "short"):
                _, assigned, tally = await read_rule(redis, ledger.keys, rule_id)
                assert assigned == {} and tally == {}
        finally:
            await redis.aclose()

    asyncio.run(run())


def test_an_erasure_leaves_no_trace_in_any_rule_ever_measured(isolated: Isolated) -> None:
    """The marks that keep an event from counting twice are the customer's too (a change's
    event id holds its customer id): they go with the erasure, also in a rule whose hold-out
    was set to 0 since (no longer measured, still reported)."""

    async def run() -> None:
        redis = aioredis.Redis.from_url(isolated.infra.redis_url)
        keys = CampaignKeys(f"{isolated.name}:")
        before = UpliftLedger(redis, keys, [measured("now", 10.0), measured("was", 10.0)], 60)
        try:
            await before.declare()
            for rule_id in ("now", "was"):
                await before.assign(
                    rule_id, "alice", Assignment("treated", T, "loyal"), "alice:1", "m"
                )
            await before.count("alice", "alice:2", "m", "loyal>at_risk", T + 5)
            await before.count("alice", "e1", "c", "1000", T + 6, "o1")
            await before.count("bob", "e2", "c", "1000", T + 6, "o2")  # not assigned: no marks
            ended = CampaignRule("was", ChangeTrigger(), before.rules[0].webhook)  # hold-out 0
            after = UpliftLedger(redis, keys, [measured("now", 10.0), ended], 60)
            await after.forget("alice")
            left = [k async for k in redis.scan_iter(match=f"{isolated.name}:*")]
            assert left, "the rules' declarations stay"
            for key in left:
                kind = await redis.type(key)
                dump = [key]
                if kind == b"hash":
                    dump += list((await redis.hgetall(key)).items())
                assert b"alice" not in repr(dump).encode(), dump
        finally:
            await redis.aclose()

    asyncio.run(run())


def test_a_completion_resent_after_a_full_refund_is_not_a_second_purchase(
    isolated: Isolated,
) -> None:
    """The scorer takes an order id refunded in full as done; so does the tally. And a shop's
    order event id that looks like a change's (``c1:2``) is not taken for that change."""

    async def run() -> None:
        redis = aioredis.Redis.from_url(isolated.infra.redis_url)
        keys = CampaignKeys(f"{isolated.name}:")
        ledger = UpliftLedger(redis, keys, [measured("r", 10.0)], 60)
        try:
            await ledger.assign("r", "c1", Assignment("treated", T, "loyal"), "c1:1", "m")
            await ledger.count("c1", "e1", "c", "1000", T + 1, "o1")  # o 1, r 1000
            await ledger.count("c1", "e2", "f", "1000", T + 2, "o1")  # o 0, r 0
            await ledger.count("c1", "e3", "c", "1000", T + 3, "o1")  # re-sent: nothing
            await ledger.count("c1", "e4", "r", "500", T + 4, "o1")  # nothing left to refund
            await ledger.count("c1", "c1:2", "c", "300", T + 5, "o2")  # o 1, r 300
            await ledger.count("c1", "c1:2", "m", "loyal>at_risk", T + 6)  # a move, counted
            _, _, tally = await read_rule(redis, keys, "r")
            assert tally == {b"o|c1": b"1", b"r|c1": b"300", b"m|c1": b"loyal>at_risk"}
        finally:
            await redis.aclose()

    asyncio.run(run())
