"""``rfm campaigns``: the Kafka consumer loop around the dispatcher (the imperative shell).

Own consumer group, manual commits: a batch's offsets are committed only after every action
it fired is recorded in Redis, so a crash redelivers the batch and the ledger skips what was
done. Partitions of a batch are handled concurrently, the records of one partition (one
customer's events, in order) one after another.

Kafka's committed offsets outlive a Redis that loses the tail of its writes (``appendfsync
everysec``, a lagging replica promoted): the ledger would forget deliveries, cooldowns,
first-order claims and erasures that Kafka says were done. So the input positions are kept
in Redis with the ledger too, checked before each batch and raised after its ledger writes
(``stream.worker.replay``, as the worker does); a partition found behind is read again from
there, without a restart. Actions redone carry the same ``Idempotency-Key``. A Redis
error mid-batch commits nothing: the batch is read again once Redis answers.

Rules with a hold-out are measured here too: every order and segment move of a customer
assigned in one is counted against the assignment (``uplift_ledger``), once per event id.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
import orjson
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError
from redis.exceptions import RedisError

from consumers.campaigns.dispatch import Dispatcher
from consumers.campaigns.ledger import CampaignKeys, Ledger, LedgerPositions
from consumers.campaigns.matching import (
    Malformed,
    change_triggers,
    decode_change,
    order_triggers,
)
from consumers.campaigns.rule_file import check_segments, load_rules
from consumers.campaigns.rules import RuleSet
from consumers.campaigns.uplift_ledger import UpliftLedger, move_text
from stream.config import Settings
from stream.core.events import Rejected, parse_erasure, parse_order
from stream.kafka import KafkaPublisher, client_options, ensure_topics
from stream.kafka.topics import Topics
from stream.schemes import SchemeError, load_scheme
from stream.store.keys import Keys
from stream.store.redis_store import connect
from stream.worker.replay import Replay, Rewinds

log = logging.getLogger("rfm.campaigns")

REDIS_RETRY_S = 1.0  # between attempts at a batch while Redis does not answer


def group_id(settings: Settings) -> str:
    return f"{settings.topic_prefix}campaigns"


def run_campaigns(settings: Settings, rules_path: Path) -> None:
    """Load and check the rules (``RuleError`` names the problem), then consume until a signal."""
    rules = load_rules(Path(rules_path), os.environ)
    try:
        scheme = load_scheme(settings.scoring.scheme, settings.scoring.buckets)
    except SchemeError:
        scheme = None  # the worker reports a bad scheme; patterns just go unchecked here
    if scheme is not None:
        check_segments(rules, scheme.ids, scheme.id)
    asyncio.run(_until_signalled(settings, rules))


async def _until_signalled(settings: Settings, rules: RuleSet) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await consume(settings, rules, stop)


@dataclass
class _Records:
    """Routes each record to the pure matching code and fires what matched."""

    settings: Settings
    rules: RuleSet
    topics: Topics
    ledger: Ledger
    dispatcher: Dispatcher
    uplift: UpliftLedger

    @property
    def ab_rules(self) -> list[str]:
        """Rules whose A/B arms are measured by the moves of the customers given them."""
        return [r.id for r in self.rules.rules if r.split == "hash"]

    async def partition(self, records: Sequence[ConsumerRecord[bytes, bytes]]) -> None:
        for record in records:
            if record.value is None:
                continue
            if record.topic == self.topics.changes:
                await self._change(record)
            elif record.topic == self.topics.orders:
                await self._order(record.value)
            elif record.topic == self.topics.erasure:
                await self._erasure(record.value)

    async def _change(self, record: ConsumerRecord[bytes, bytes]) -> None:
        assert record.value is not None
        try:
            change = decode_change(record.value)
        except Malformed as exc:
            log.warning(
                "skipping malformed change %s[%d]@%d: %s",
                record.topic,
                record.partition,
                record.offset,
                exc,
            )
            return
        await self.ledger.record_moves(
            self.ab_rules, change.customer_id, change.from_segment, change.to_segment
        )
        now = int(time.time() * 1000)
        if change.from_segment != change.to_segment and change.to_segment is not None:
            await self.uplift.count(
                change.customer_id,
                change.event_id,
                "m",
                move_text(change.from_segment, change.to_segment),
                now if change.at_ms is None else change.at_ms,
            )
        for trigger in change_triggers(self.rules.change_rules, change, now):
            await self.dispatcher.fire(trigger)
        if change.to_segment is None:
            # The erasure's own change event follows the request, usually after the request
            # was handled: what its deliveries recorded (cooldown, arm, recent) goes too.
            await self.ledger.forget(change.customer_id, [r.id for r in self.rules.rules])
            await self.uplift.forget(change.customer_id)

    async def _order(self, raw: bytes) -> None:
        now = int(time.time() * 1000)
        try:
            order = parse_order(raw, self.settings.store, now)
        except Rejected:
            return  # the scorer dead-letters bad input; acting on it here would be wrong
        kind = ("f" if order.full else "r") if order.refund else "c"
        await self.uplift.count(
            order.customer_id,
            order.event_id,
            kind,
            str(order.amount),
            order.occurred_at,
            order.order_id,
        )
        if order.refund:
            return
        # every completion claims the marker, also with no first-order rule configured yet,
        # so adding such a rule later does not take a regular for a newcomer
        first = await self.ledger.claim_first_order(order.customer_id, order.event_id)
        fired = order_triggers(
            self.rules.order_rules,
            order,
            orjson.loads(raw),
            first=first,
            decimals=self.settings.store.currency_decimals,
            now_ms=now,
        )
        for trigger in fired:
            await self.dispatcher.fire(trigger)

    async def _erasure(self, raw: bytes) -> None:
        try:
            request = parse_erasure(raw, self.settings.store, int(time.time() * 1000))
        except Rejected:
            return
        await self.ledger.forget(request.customer_id, [r.id for r in self.rules.rules])
        await self.uplift.forget(request.customer_id)


Batch = dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]


class _Forget(ConsumerRebalanceListener):  # type: ignore[misc]
    """After a rebalance each partition is checked afresh against the positions in Redis."""

    def __init__(self, replay: Replay) -> None:
        self.replay = replay

    async def on_partitions_revoked(self, revoked: object) -> None:
        self.replay.forget()

    async def on_partitions_assigned(self, assigned: object) -> None:
        self.replay.forget()


def _seek(consumer: AIOKafkaConsumer, rewinds: Rewinds) -> None:
    assigned = consumer.assignment()  # one revoked meanwhile is its new owner's to check
    for (topic, partition), offset in rewinds.items():
        log.warning(
            "redis holds %s[%d] only up to offset %d (it lost writes): reading it again",
            topic,
            partition,
            offset,
        )
        tp = TopicPartition(topic, partition)
        if tp in assigned:
            consumer.seek(tp, offset)


def _read_again(consumer: AIOKafkaConsumer, batch: Batch) -> None:
    """Seek every partition of ``batch`` back to its first record: none is committed."""
    assigned = consumer.assignment()
    for tp, rs in batch.items():
        if rs and tp in assigned:
            consumer.seek(tp, rs[0].offset)


async def apply_batch(
    consumer: AIOKafkaConsumer, replay: Replay, records: _Records, batch: Batch
) -> None:
    """Check the positions, act on the partitions that are not behind, raise the positions.
    A partition behind is sought back (its records here are dropped, none acted on)."""
    rewinds = await replay.before([r for rs in batch.values() for r in rs])
    _seek(consumer, rewinds)
    kept = [rs for tp, rs in batch.items() if (tp.topic, tp.partition) not in rewinds]
    # every partition's work ends before a failure is raised: none may still run when the
    # batch is read again
    done = await asyncio.gather(*(records.partition(rs) for rs in kept), return_exceptions=True)
    for outcome in done:
        if isinstance(outcome, BaseException):
            raise outcome
    if kept:
        _seek(consumer, await replay.after([r for rs in kept for r in rs]))


async def consume(settings: Settings, rules: RuleSet, stop: asyncio.Event) -> None:
    """Consume changes, orders and erasures until ``stop`` is set; commit after each batch."""
    topics = Topics(settings.topic_prefix)
    await ensure_topics(settings)
    redis = connect(settings.redis_url)
    ledger = Ledger(
        redis, CampaignKeys(settings.key_prefix), settings.store.dedupe_window_ms / 1000
    )
    replay = Replay(LedgerPositions(redis, ledger.keys))
    consumer = AIOKafkaConsumer(
        group_id=group_id(settings),
        enable_auto_commit=False,
        auto_offset_reset="earliest",  # a new group misses nothing; max_age skips stale events
        session_timeout_ms=10_000,
        **client_options(settings),
    )
    consumer.subscribe([topics.changes, topics.orders, topics.erasure], listener=_Forget(replay))
    try:
        async with (
            httpx.AsyncClient(follow_redirects=False) as http,
            KafkaPublisher(settings) as publisher,
        ):
            uplift = UpliftLedger(
                redis, ledger.keys, rules.rules, settings.store.dedupe_window_ms / 1000
            )
            scorer_keys = Keys(settings.key_prefix, settings.redis_shards)

            async def segment_of(customer_id: str) -> str | None:
                raw = await redis.hget(scorer_keys.customer(customer_id), "sg")
                return raw.decode() if raw else None

            dispatcher = Dispatcher(ledger, http, publisher, topics.actions_dlq, uplift, segment_of)
            records = _Records(settings, rules, topics, ledger, dispatcher, uplift)
            await consumer.start()
            log.info(
                "campaigns: %d rules from %s; group %s",
                len(rules.rules),
                rules.source,
                group_id(settings),
            )
            try:
                while not stop.is_set():
                    batch = await consumer.getmany(timeout_ms=500, max_records=500)
                    if not batch:
                        continue
                    try:
                        await uplift.declare()
                        await apply_batch(consumer, replay, records, batch)
                    except RedisError as exc:
                        # Redis restarting or failing over: act on the batch again once it
                        # answers (the ledger skips what was recorded; what was sent and not
                        # recorded is sent again under its key; the positions say what the
                        # restarted server lost)
                        log.warning("redis failed mid-batch (%s); reading it again", exc)
                        _read_again(consumer, batch)
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(stop.wait(), REDIS_RETRY_S)
                        continue
                    try:
                        await consumer.commit()
                    except CommitFailedError as exc:  # rebalanced: the new owner skips done work
                        log.warning("offset commit failed (%s); batch will be redelivered", exc)
            finally:
                await consumer.stop()
    finally:
        await redis.aclose()
