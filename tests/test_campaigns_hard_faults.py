"""The campaign consumer when its Redis loses the tail of its writes (issue: nothing lost when
Redis or the broker dies hard).

The consumer runs as deployed (``rfm campaigns``) against the shared broker and a Redis of
this test's own (``appendonly yes``, ``appendfsync everysec``, on a free port), which is made
to lose its last writes deterministically: its data directory is copied mid-stream, the
stream goes on, and Redis is SIGKILLed and restarted from the copy. Kafka's committed offsets
are then past deliveries, cooldowns and positions the ledger no longer holds. The rule fires
once per customer (a cooldown of an hour): the first move to ``at_risk`` fires it, a later
one is suppressed. After the rollback every customer whose first move was forgotten moves to
``at_risk`` again. A consumer that trusted Kafka's offsets would fire that second move under
a new key; the receiver must instead see only first moves, each at least once, and every
repeat under the key of the first delivery. Then Redis is SIGKILLed once more while the
consumer delivers (the receiver answers slowly, so a batch is under way), and comes back
from its own files: the consumer rides through, and the same holds.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from tests.conftest import Isolated
from tests.rollback import OwnRedis, own_redis  # noqa: F401 (a fixture)
from tests.support import wait_for
from tests.test_campaigns import (
    Campaigns,
    Receiver,
    change,
    drained,
    prepare,
    publish,
    rules_file,
    start_campaigns,  # noqa: F401
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

RULES = """
[[rule]]
id = "win_back"
trigger = "segment_change"
to = "at_risk"
cooldown = "1h"
"""

PER_PHASE = 24
LAST = 150  # customers of the last phase, sent while Redis is killed once more
SLOW_S = 0.02  # the receiver's time per request


class SlowReceiver(Receiver):
    """Answers every request after ``SLOW_S``: a marketing tool's real latency, which keeps
    the consumer's batch under way when Redis is killed."""

    def answer(self, path: str, key: str) -> int:
        time.sleep(SLOW_S)
        return super().answer(path, key)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = SlowReceiver()
    yield r
    r.close()


def _moves(prefix: str, seq: int, frm: str, to: str) -> list[dict[str, object]]:
    return [change(f"{prefix}-{n}", seq, frm, to) for n in range(PER_PHASE)]


@pytest.mark.parametrize("consumer", ["running", "restarted"])
def test_redis_rolled_back_mid_stream_loses_no_webhook_and_repeats_share_the_key(
    consumer: str,
    isolated: Isolated,
    receiver: Receiver,
    start_campaigns: Callable[..., Campaigns],  # noqa: F811
    own_redis: OwnRedis,  # noqa: F811
    tmp_path: Path,
) -> None:
    settings, topics = prepare(isolated)
    rules = rules_file(isolated, receiver, RULES)
    env = {"RFM_REDIS_URL": own_redis.url}
    proc = start_campaigns(rules, env)

    def settled(what: str, customers: int) -> None:
        """Every record committed and ``customers`` first moves delivered."""
        wait_for(
            lambda: drained(settings) and len({h.key for h in receiver.delivered()}) >= customers,
            timeout=90,
            what=what,
            diagnose=lambda: proc.tail() + own_redis.tail(),
        )

    # Before the copy: positions exist, so the one taken next holds some.
    publish(settings, topics.changes, _moves("a", 1, "loyal", "at_risk"))
    settled("the first customers' webhooks", PER_PHASE)
    client = redis.Redis.from_url(own_redis.url)
    try:
        assert client.hlen(f"{isolated.name}:cmp:positions") > 0
    finally:
        client.close()

    copy = tmp_path / "redis-copy"
    own_redis.copy_data(copy)
    publish(settings, topics.changes, _moves("b", 1, "loyal", "at_risk"))
    settled("the next customers' webhooks", 2 * PER_PHASE)

    # Redis dies and comes back without the b customers' deliveries and cooldowns: Kafka's
    # committed offsets are past them.
    if consumer == "restarted":
        proc.stop(signal.SIGKILL)
    own_redis.kill()
    own_redis.restore(copy)
    own_redis.start()
    client = redis.Redis.from_url(own_redis.url)
    try:
        assert client.get(f"{isolated.name}:cmp:cool:win_back:b-0") is None  # forgotten
    finally:
        client.close()
    if consumer == "restarted":
        proc = start_campaigns(rules, env)

    # The b customers move away and back, inside their cooldown: nothing may fire for it;
    # new customers' first moves fire.
    publish(settings, topics.changes, _moves("b", 2, "at_risk", "need_attention"))
    publish(settings, topics.changes, _moves("b", 3, "need_attention", "at_risk"))
    publish(settings, topics.changes, _moves("c", 1, "loyal", "at_risk"))
    settled("the last customers' webhooks", 3 * PER_PHASE)
    assert proc.alive, proc.tail()

    def first_keys() -> dict[str, list[str]]:
        """Per customer, the keys it received; only first moves may fire."""
        keys: dict[str, list[str]] = {}
        for hit in receiver.all():
            doc = hit.json()
            assert hit.ok
            assert doc["seq"] == 1, f"{doc['event_id']} fired inside its customer's cooldown"
            assert doc["campaign"]["idempotency_key"] == hit.key
            keys.setdefault(doc["customer_id"], []).append(hit.key)
        assert all(len(set(k)) == 1 for k in keys.values()), keys  # repeats under one key
        return keys

    keys = first_keys()
    customers = {f"{p}-{n}" for p in "abc" for n in range(PER_PHASE)}
    assert set(keys) == customers  # every first move reached the receiver
    # the deliveries Redis forgot were made again (once more each), the others not
    assert {c: len(k) for c, k in keys.items()} == {c: 2 if c[0] == "b" else 1 for c in customers}
    assert "reading it again" in proc.tail(400)

    # Killed again while the consumer delivers, and kept down until the consumer has met the
    # outage (more changes arrive meanwhile, so it must ask Redis); then back from its own
    # files (up to a second of writes lost, appendfsync everysec).
    def last(numbers: range) -> list[dict[str, object]]:
        return [change(f"d-{n}", 1, "loyal", "at_risk") for n in numbers]

    publish(settings, topics.changes, last(range(LAST)))
    wait_for(
        lambda: sum(h.json()["customer_id"].startswith("d-") for h in receiver.all()) >= 20,
        timeout=60,
        what="the last customers' webhooks under way",
        diagnose=proc.tail,
    )
    own_redis.kill()
    publish(settings, topics.changes, last(range(LAST, LAST + PER_PHASE)))
    wait_for(
        lambda: "redis failed mid-batch" in proc.tail(2000) or not proc.alive,
        timeout=60,
        what="the consumer meeting the outage",
        diagnose=proc.tail,
    )
    assert proc.alive, proc.tail()
    own_redis.start()
    settled("every last customer's webhook", 4 * PER_PHASE + LAST)
    assert proc.alive, proc.tail()
    keys = first_keys()
    assert set(keys) == customers | {f"d-{n}" for n in range(LAST + PER_PHASE)}
