"""A dead letter turned back into the input record it should have been: its original topic,
keyed by its customer id as every producer keys it, the payload as given (the original, or
a fixed one), checked by the worker's own parser first so that a replay that would only be
dead-lettered again is refused here, with the parser's reason."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from stream.config import StoreSettings
from stream.core.events import Event, Rejected, parse_erasure, parse_interaction, parse_order
from stream.deadletters.letter import Letter
from stream.kafka.topics import Topics


class ReplayRefused(ValueError):
    """The dead letter cannot go back as it is; ``str()`` says why."""


@dataclass(frozen=True)
class Replay:
    letter: Letter
    topic: str
    key: bytes
    value: bytes


def _parsers(topics: Topics) -> dict[str, Callable[[bytes, StoreSettings, int], Event]]:
    return {
        topics.orders: parse_order,
        topics.interactions: parse_interaction,
        topics.erasure: parse_erasure,
    }


def replay_of(
    letter: Letter, payload: bytes | None, topics: Topics, store: StoreSettings, now_ms: int
) -> Replay:
    """The record to produce for ``letter`` (with ``payload`` instead of its own, if given);
    ``ReplayRefused`` if it has no input topic of this deployment or the parser rejects it.
    ``now_ms`` is the wall clock, as the worker's future-skew check uses it."""
    if letter.topic is None:
        raise ReplayRefused(letter.reason)
    parse = _parsers(topics).get(letter.topic)
    if parse is None:
        inputs = ", ".join(topics.inputs)
        raise ReplayRefused(
            f"it came from {letter.topic}, not an input topic of this deployment ({inputs})"
        )
    value = (letter.payload if payload is None else payload).strip()
    try:
        event = parse(value, store, now_ms)
    except Rejected as exc:
        fixed = "the given payload" if payload is not None else "its payload"
        raise ReplayRefused(f"the worker would reject {fixed} again: {exc}") from None
    return Replay(letter, letter.topic, event.customer_id.encode("utf-8"), value)
