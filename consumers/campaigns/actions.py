"""The exact request a fired rule sends: body bytes, idempotency key and headers.

Built once per firing and reused for every retry, so all attempts carry the same bytes, the
same signature and the same ``Idempotency-Key`` and a receiver can drop the repeats.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field

import orjson

from consumers.campaigns.matching import Trigger
from consumers.campaigns.rules import Variant
from consumers.campaigns.signing import HEADER, sign

USER_AGENT = "rfm-campaigns/1"


def idempotency_key(rule_id: str, event_id: str) -> str:
    """Stable per (rule, triggering event): a re-delivered event yields the same key.

    Event ids are untrusted text of any length; hashing keeps the header short and ASCII.
    """
    digest = hashlib.sha256(f"{len(rule_id)}:{rule_id}:{event_id}".encode()).hexdigest()
    return f"{rule_id}.{digest[:40]}"


@dataclass(frozen=True, slots=True)
class Action:
    rule_id: str
    customer_id: str
    event_id: str
    variant: str | None
    key: str
    body: bytes = field(repr=False)

    def headers(self, secret: bytes) -> Mapping[str, str]:
        return {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            "Idempotency-Key": self.key,
            HEADER: sign(secret, self.body),
        }


def build(trigger: Trigger, variant: Variant | None) -> Action:
    """The triggering event as received, plus a ``campaign`` object naming rule and variant.

    ``data`` is the rule's data overlaid with the variant's (e.g. a coupon value per arm).
    """
    rule = trigger.rule
    key = idempotency_key(rule.id, trigger.event_id)
    campaign = {
        "rule": rule.id,
        "variant": variant.name if variant else None,
        "data": {**rule.data, **(variant.data if variant else {})},
        "idempotency_key": key,
    }
    body = orjson.dumps({**trigger.event, "campaign": campaign})
    return Action(
        rule_id=rule.id,
        customer_id=trigger.customer_id,
        event_id=trigger.event_id,
        variant=variant.name if variant else None,
        key=key,
        body=body,
    )
