"""Dead letters as an operator reads and replays them (`rfm dlq`). Pure: no I/O.

The worker writes each input record it rejects to the dead-letter topic as
``{"topic", "partition", "offset", "error", "payload", "payload_encoding"}``, keyed by the
record's own key, at the time it rejected it (``stream.core.step.DeadLetter``). Here such
records are decoded (``letter``), chosen (``selection``), shown (``display``) and turned back
into the input record they should have been (``replay``); ``stream.kafka.dead_letters`` reads
and writes the topics.
"""

from stream.deadletters.display import human, jsonl
from stream.deadletters.letter import Letter, read_letter
from stream.deadletters.replay import Replay, ReplayRefused, replay_of
from stream.deadletters.selection import Selection, in_time_order, parse_id, parse_moment

__all__ = [
    "Letter",
    "Replay",
    "ReplayRefused",
    "Selection",
    "human",
    "in_time_order",
    "jsonl",
    "parse_id",
    "parse_moment",
    "read_letter",
    "replay_of",
]
