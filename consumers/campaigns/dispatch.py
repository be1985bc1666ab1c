"""One fired rule, end to end: skip if done, held out or cooling down, pick the variant,
record the assignment (measured rules), send, record the outcome.

The order of effects is the whole point. Outcomes are recorded in Redis before the runner
commits Kafka offsets, so a restart skips finished actions; a crash between the HTTP 2xx and
the record re-sends with the same ``Idempotency-Key`` (at-least-once, deduplicable by the
receiver). Failures that exhausted their retries go to the actions dead-letter topic first
and are marked done after, so none is lost. A rule with a hold-out records each customer's
arm before anything is sent, so an order the webhook prompts can never arrive before it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

import httpx
import orjson

from consumers.campaigns.actions import Action, build, idempotency_key
from consumers.campaigns.delivery import Delivered, Failed, deliver
from consumers.campaigns.ledger import Ledger
from consumers.campaigns.matching import Trigger
from consumers.campaigns.rules import CONTROL, TREATED, ChangeTrigger, Variant
from consumers.campaigns.uplift_ledger import Assignment, UpliftLedger
from consumers.campaigns.variants import choose, held_out
from stream.kafka import KafkaPublisher
from stream.redaction import public_url

log = logging.getLogger(__name__)

Result = Literal["delivered", "dead_lettered", "already_done", "cooldown", "held_out"]


def dead_letter_record(action: Action, url: str, failure: Failed) -> bytes:
    """The exact signed body is embedded, so an operator can re-send it unchanged."""
    return orjson.dumps(
        {
            "rule": action.rule_id,
            "variant": action.variant,
            "customer_id": action.customer_id,
            "event_id": action.event_id,
            "idempotency_key": action.key,
            "url": public_url(url),  # no credentials or query: tokens often hide there
            "attempts": failure.attempts,
            "error": failure.reason,
            "body": orjson.Fragment(action.body),
        }
    )


@dataclass
class Dispatcher:
    ledger: Ledger
    http: httpx.AsyncClient
    publisher: KafkaPublisher
    dlq_topic: str
    uplift: UpliftLedger
    segment_of: Callable[[str], Awaitable[str | None]]  # the scorer's segment of a customer

    async def fire(self, trigger: Trigger) -> Result:
        rule = trigger.rule
        key = idempotency_key(rule.id, trigger.event_id)
        if await self.ledger.outcome(key) is not None:
            await self.ledger.count(rule.id, "already_done")
            return "already_done"
        given = await self.uplift.arm_of(rule.id, trigger.customer_id) if rule.measured else None
        if given == CONTROL or (given is None and held_out(rule, trigger.customer_id)):
            if await self._assign(trigger, CONTROL):
                await self.ledger.count(rule.id, "held_out")
            return "held_out"
        if rule.cooldown_s > 0 and await self.ledger.cooling(rule.id, trigger.customer_id):
            await self.ledger.count(rule.id, "cooldown")
            return "cooldown"
        action = build(trigger, await self._variant(trigger, given))
        if rule.measured:
            await self._assign(trigger, action.variant or TREATED)
        outcome = await deliver(self.http, action, rule.webhook)
        if isinstance(outcome, Delivered):
            await self.ledger.record_delivery(action, rule.cooldown_s)
            log.info("rule %s delivered %s (%d attempts)", rule.id, key, outcome.attempts)
            return "delivered"
        record = dead_letter_record(action, rule.webhook.url, outcome)
        await self.publisher.publish([(self.dlq_topic, action.customer_id.encode(), record)])
        await self.ledger.record_dead_letter(action)
        log.warning("rule %s dead-lettered %s: %s", rule.id, key, outcome.reason)
        return "dead_lettered"

    async def _assign(self, trigger: Trigger, arm: str) -> bool:
        """Record the arm (first assignment wins) with the segment now; True if it is new."""
        rule = trigger.rule
        if isinstance(rule.trigger, ChangeTrigger):
            segment = trigger.event.get("to")
        else:
            segment = await self.segment_of(trigger.customer_id)
        # the event's own time: a replay (Redis lost its tail) assigns at the same moment, so
        # orders the first delivery prompted still fall after it
        at = trigger.at_ms if trigger.at_ms is not None else int(time.time() * 1000)
        assignment = Assignment(arm, at, segment if isinstance(segment, str) else None)
        kind = "m" if isinstance(rule.trigger, ChangeTrigger) else "o"
        return await self.uplift.assign(
            rule.id, trigger.customer_id, assignment, trigger.event_id, kind
        )

    async def _variant(self, trigger: Trigger, given: str | None) -> Variant | None:
        """A/B arms are sticky: the recorded arm wins even if weights were edited since."""
        rule = trigger.rule
        if rule.split == "hash":
            if given is None:
                given = await self.ledger.variant_of(rule.id, trigger.customer_id)
            for variant in rule.variants:
                if variant.name == given:
                    return variant
        return choose(rule, trigger.customer_id, trigger.amount)
