"""The Kafka adapter, plain aiokafka: topic names (``topics``), client options (``options``),
topic administration (``admin``), the batching publisher (``publisher``), and reading the
dead-letter topic and producing replays for `rfm dlq` (``dead_letters``, imported on its own)."""

from stream.kafka.admin import TopicsUnavailable, delete_topics, ensure_topics
from stream.kafka.options import client_options
from stream.kafka.publisher import BatchSender, KafkaPublisher, KeyPartitioner
from stream.kafka.topics import Topics

__all__ = [
    "BatchSender",
    "KafkaPublisher",
    "KeyPartitioner",
    "Topics",
    "TopicsUnavailable",
    "client_options",
    "delete_topics",
    "ensure_topics",
]
