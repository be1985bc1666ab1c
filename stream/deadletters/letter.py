"""One record of the dead-letter topic, decoded: where it sits, when the worker rejected it,
and the rejected record (its topic, partition, offset, payload) with the reason."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

import orjson


@dataclass(frozen=True)
class Letter:
    """``partition``/``offset``: its place in the dead-letter topic (its id, ``"P:O"``);
    ``topic``/``source_partition``/``source_offset``: the rejected record's. ``topic`` is None
    when the record is not one the worker writes (then ``reason`` says what is wrong)."""

    partition: int
    offset: int
    timestamp: int  # epoch ms: when the worker dead-lettered it
    key: bytes | None
    topic: str | None
    source_partition: int | None
    source_offset: int | None
    reason: str
    payload: bytes
    encoding: str  # how the record carried the payload: "utf-8" or "base64"

    @property
    def id(self) -> str:
        return f"{self.partition}:{self.offset}"


def _int(doc: dict[str, object], name: str) -> int | None:
    value = doc.get(name)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def read_letter(
    partition: int, offset: int, timestamp: int, key: bytes | None, value: bytes | None
) -> Letter:
    """Decode one dead-letter record; one that is not shaped as the worker writes them is
    kept (``topic`` None, the raw value as payload) so that nothing in the topic is hidden."""

    def foreign(why: str) -> Letter:
        return Letter(partition, offset, timestamp, key, None, None, None, why, value or b"", "")

    try:
        doc = orjson.loads(value or b"")
    except orjson.JSONDecodeError:
        return foreign("not a dead-letter record: not JSON")
    if not isinstance(doc, dict):
        return foreign("not a dead-letter record: not a JSON object")
    topic, error, payload = doc.get("topic"), doc.get("error"), doc.get("payload")
    encoding = doc.get("payload_encoding", "utf-8")
    if not isinstance(topic, str) or not isinstance(error, str) or not isinstance(payload, str):
        return foreign("not a dead-letter record: no topic, error or payload")
    if encoding == "base64":
        try:
            raw = base64.b64decode(payload, validate=True)
        except binascii.Error:
            return foreign("not a dead-letter record: payload is not base64")
    elif encoding == "utf-8":
        raw = payload.encode("utf-8")
    else:
        return foreign(f"not a dead-letter record: payload_encoding {str(encoding)[:20]!r}")
    return Letter(
        partition,
        offset,
        timestamp,
        key,
        topic,
        _int(doc, "partition"),
        _int(doc, "offset"),
        error,
        raw,
        encoding,
    )
