"""A customer's segment history as the lookup shows it: why the customer moved, each time.

The commit script pushes every change event, as published, onto the customer's history list
(``Keys.history``) in the same atomic step as the change itself, and trims the list to the
configured length (``store.segment_history``); an erasure deletes it with the customer.
Reading is therefore only picking fields out of events the scorer already wrote: nothing is
encoded twice on the hot path.

Two older layouts are still read, newest first beside the list, until they age out or the
customer is erased: ``h:<seq>`` fields of the customer's hash (``"<from> <to> <cause
letter> <at ms>"``) and list items of five fields. Their entries lack what was not kept then
(trigger event, scores, thresholds version): those read as ``null``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from stream.core.changes import iso_ms

# What an entry shows, in this order; a stored event lacking one shows it as null.
ENTRY_FIELDS = (
    "seq",
    "at",
    "from",
    "to",
    "cause",
    "trigger_event_id",
    "scores_before",
    "scores",
    "thresholds_version",
)

# The one-letter causes of the hash-field layout. Fixed forever: stored entries use them.
_CAUSES_BY_CODE = {
    "o": "order",
    "r": "refund",
    "i": "interaction",
    "t": "threshold_refresh",
    "c": "clock",
    "e": "erasure",
    "s": "reconfigure",
    "p": "churn_risk",
}


def _entry(change: dict[str, Any]) -> dict[str, Any]:
    return {name: change.get(name) for name in ENTRY_FIELDS}


def _from_field(seq: int, value: bytes) -> dict[str, Any]:
    from_segment, to_segment, code, at = value.decode("utf-8").split(" ")
    return _entry(
        {
            "seq": seq,
            "at": iso_ms(int(at)),
            "from": None if from_segment == "-" else from_segment,
            "to": None if to_segment == "-" else to_segment,
            "cause": _CAUSES_BY_CODE.get(code, code),
        }
    )


def segment_history(
    items: Sequence[bytes], fields: dict[bytes, bytes], keep: int
) -> list[dict[str, Any]]:
    """The newest ``keep`` changes, newest first: ``items`` of the history list (change
    events), then any ``h:<seq>`` ``fields`` of the customer's hash for seqs the list
    lacks."""
    by_seq: dict[int, dict[str, Any]] = {}
    for raw in items:
        change = orjson.loads(raw)
        by_seq.setdefault(int(change["seq"]), _entry(change))
    for name, value in fields.items():
        if name[:2] == b"h:":
            seq = int(name[2:])
            if seq not in by_seq:
                by_seq[seq] = _from_field(seq, value)
    return [by_seq[seq] for seq in sorted(by_seq, reverse=True)[:keep]]
