"""`rfm import` puts each key where aiokafka's `send` (and so the Java client) would.

The importer builds one batch per partition itself instead of calling `send` per record, so it
picks partitions itself: these tests pin that choice to the partition aiokafka's own send path
(`AIOKafkaProducer._partition` with the project's producer settings) picks for thousands of
varied keys, and to reference values from Kafka's Java client. No broker needed.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from stream.config import Settings
from stream.importer import publish_records
from stream.kafka import BatchSender, KafkaPublisher, KeyPartitioner

PARTITION_COUNTS = (1, 2, 3, 6, 7, 12, 31, 100, 1000)


def varied_keys() -> list[bytes]:
    rng = random.Random(20261123)
    texts = [
        "",
        " ",
        "0",
        "00042",
        "c000001",
        "customer-1",
        "CUSTOMER-1",
        "顧客-王小明",
        "客戶🙂",
        "e\u0301",  # combining accent
        "\u00e9",
        "\x00",
        "\x00 ",
        "tab\there",
        "line\nbreak",
        '"quoted"',
        "a" * 1000,
        "長" * 4000,
    ]
    texts += [f"{n:06d}" for n in range(500)]
    texts += [f"c{rng.randrange(10**9)}" for _ in range(1000)]
    alphabet = "abcXYZ019-_. 中文台灣ñßøΩж🙂🚀\u200b"
    texts += ["".join(rng.choices(alphabet, k=rng.randrange(1, 40))) for _ in range(1000)]
    keys = [t.encode("utf-8") for t in texts]
    # every tail length of murmur2 (len % 4) and raw bytes, not only UTF-8
    keys += [bytes(rng.randrange(256) for _ in range(n)) for n in range(64) for _ in range(8)]
    keys += [rng.randbytes(rng.randrange(100, 5000)) for _ in range(50)]
    assert len(set(keys)) > 3000
    return keys


async def aiokafka_send_partitions(keys: list[bytes], count: int) -> list[int]:
    """Where the project's aiokafka producer's `send` would put each key, given `count`
    partitions (`send` calls `_partition` with the topic's metadata; only that is stubbed)."""
    publisher = KafkaPublisher(Settings())  # never started: no connection is made
    producer = publisher.producer
    partitions = set(range(count))
    producer._metadata.partitions_for_topic = lambda topic: partitions
    producer._metadata.available_partitions_for_topic = lambda topic: partitions
    try:
        return [producer._partition("t", None, key, b"v", key, b"v") for key in keys]
    finally:
        await producer.stop()


@pytest.mark.parametrize("count", PARTITION_COUNTS)
def test_every_key_goes_where_aiokafka_send_puts_it(count: int) -> None:
    keys = varied_keys()
    expected = asyncio.run(aiokafka_send_partitions(keys, count))
    partition_of = KeyPartitioner(range(count))
    assert [partition_of(k) for k in keys] == expected
    # asked again (remembered now), the answer is the same
    assert [partition_of(k) for k in reversed(keys)] == expected[::-1]


def test_forgetting_keys_past_the_bound_changes_nothing() -> None:
    keys = varied_keys()
    expected = asyncio.run(aiokafka_send_partitions(keys, 6))
    partition_of = KeyPartitioner(range(6), remember=17)
    for _ in range(2):
        assert [partition_of(k) for k in keys] == expected


def test_partitions_equal_the_java_clients() -> None:
    # Kafka's Java DefaultPartitioner over 1000 partitions (the vectors kafka-python pins)
    java = {b"": 681, b"a": 524, b"ab": 434, b"abc": 107, b"123456789": 566, b"\x00 ": 742}
    partition_of = KeyPartitioner(range(1000))
    assert {k: partition_of(k) for k in java} == java


def test_a_partition_list_is_sorted_as_aiokafka_sorts_it() -> None:
    keys = varied_keys()[:500]
    assert [KeyPartitioner([5, 3, 1, 0, 4, 2])(k) for k in keys] == [
        KeyPartitioner(range(6))(k) for k in keys
    ]


def test_records_without_a_key_go_to_some_partition() -> None:
    partition_of = KeyPartitioner(range(6))
    assert {partition_of(None) for _ in range(500)} == set(range(6))


class FakeBatch:
    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.records: list[tuple[bytes | None, bytes]] = []

    def append(self, *, key: bytes | None, value: bytes, timestamp: None) -> object | None:
        if len(self.records) >= self.capacity:
            return None
        self.records.append((key, value))
        return object()

    def record_count(self) -> int:
        return len(self.records)


class FakeProducer:
    """Records each submitted batch; ``answer`` makes the broker's error (None: acknowledged)."""

    def __init__(
        self, partitions: int, capacity: int, answer: Callable[[], Exception] | None = None
    ) -> None:
        self.partitions = partitions
        self.capacity = capacity
        self.answer = answer
        self.sent: list[tuple[str, int, FakeBatch]] = []

    async def partitions_for(self, topic: str) -> set[int]:
        return set(range(self.partitions))

    def create_batch(self) -> FakeBatch:
        return FakeBatch(self.capacity)

    async def send_batch(self, batch: FakeBatch, topic: str, *, partition: int) -> Any:
        self.sent.append((topic, partition, batch))
        future = asyncio.get_running_loop().create_future()
        if self.answer is None:
            future.set_result(None)
        else:
            future.set_exception(self.answer())
        return future


def records(n: int) -> Iterator[tuple[bytes | None, bytes, int]]:
    rng = random.Random(7)
    for i in range(n):
        if i % 97 == 0:
            yield None, b"", 1  # a blank line
        key = None if i % 89 == 0 else f"c{rng.randrange(300)}".encode()
        yield key, f"v{i}".encode(), 10


def publish(producer: FakeProducer, n: int, progress: list[int] | None = None) -> int:
    # all publish_records uses of a KafkaPublisher
    publisher: Any = SimpleNamespace(sender=lambda remember: BatchSender(producer, {}, remember))
    report = progress.append if progress is not None else (lambda _n: None)
    return asyncio.run(publish_records(publisher, "orders", records(n), report, chunk=100))


def test_every_record_is_sent_once_in_order_per_key_to_its_partition() -> None:
    producer = FakeProducer(partitions=6, capacity=13)
    progress: list[int] = []
    assert publish(producer, 2000, progress) == 2000
    want = [(k, v) for k, v, _ in records(2000) if v]
    assert sum(progress) == sum(n for _, _, n in records(2000))
    partition_of = KeyPartitioner(range(6))
    got = []
    for topic, partition, batch in producer.sent:
        assert topic == "orders"
        assert 0 < batch.record_count() <= 13
        for key, value in batch.records:
            if key is not None:
                assert partition == partition_of(key)
            got.append((partition, key, value))
    assert sorted((k or b"", v) for _, k, v in got) == sorted((k or b"", v) for k, v in want)
    for key in {k for k, _ in want if k is not None}:
        assert [v for _, k, v in got if k == key] == [v for k, v in want if k == key]


def test_a_batch_the_broker_rejects_fails_the_import() -> None:
    class Rejected(Exception):
        pass

    with pytest.raises(Rejected):
        publish(FakeProducer(partitions=3, capacity=50, answer=Rejected), 1000)
