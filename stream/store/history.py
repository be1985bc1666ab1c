"""A customer's segment history: why the customer moved, each time, as the lookup shows it.

The commit script pushes one entry per change onto the customer's history list
(``Keys.history``) in the same atomic step as the change and its outbox entry, and trims
the list to the configured length (``store.segment_history``); an erasure deletes it with
the customer. An entry is one line of text, not the change event itself: the published event
also carries the customer id twice, the metrics and the scheme, and kept whole it nearly
doubled the bytes per customer (676 -> 1,288 B in the quick bench). The line is
``"<seq> <at ms> <from> <to> <cause> <thresholds version> <scores before> <scores>"`` then,
when an input event triggered the change, ``" <its id>"`` (last, so any id reads back
whole); ``-`` stands for no segment or no scores, scores are ``r,f,m,i`` with an empty
place for none, and the cause is one letter (the codes below, fixed forever).

Two older layouts are still read beside the list, until they age out or the customer is
erased: ``h:<seq>`` fields of the customer's hash (``"<from> <to> <cause letter> <at ms>"``)
and JSON list items. Fields an older entry lacks read as ``null``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from stream.core.changes import SegmentChange, iso_ms

# What an entry shows, in this order.
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
_DIMS = ("r", "f", "m", "i")

_CAUSE_CODES = {
    "order": "o",
    "refund": "r",
    "interaction": "i",
    "threshold_refresh": "t",
    "clock": "c",
    "erasure": "e",
    "reconfigure": "s",
    "churn_risk": "p",
}
_CAUSES_BY_CODE = {code: cause for cause, code in _CAUSE_CODES.items()}


def _scores_text(scores: dict[str, int | None] | None) -> str:
    if scores is None:
        return "-"
    return ",".join("" if scores.get(d) is None else str(scores[d]) for d in _DIMS)


def _scores(text: str) -> dict[str, int | None] | None:
    if text == "-":
        return None
    return {d: int(v) if v else None for d, v in zip(_DIMS, text.split(","), strict=True)}


def history_entry(change: SegmentChange) -> str:
    """The line the commit script pushes for ``change``."""
    line = (
        f"{change.seq} {change.at} {change.from_segment or '-'} {change.to_segment or '-'} "
        f"{_CAUSE_CODES.get(change.cause, change.cause)} {change.thresholds_version} "
        f"{_scores_text(change.scores_before)} {_scores_text(change.scores)}"
    )
    trigger = change.trigger_event_id
    return line if trigger is None else f"{line} {trigger}"


def _from_line(text: str) -> dict[str, Any]:
    seq, at, from_segment, to_segment, cause, version, before, after, *trigger = text.split(" ", 8)
    return {
        "seq": int(seq),
        "at": iso_ms(int(at)),
        "from": None if from_segment == "-" else from_segment,
        "to": None if to_segment == "-" else to_segment,
        "cause": _CAUSES_BY_CODE.get(cause, cause),
        "trigger_event_id": trigger[0] if trigger else None,
        "scores_before": _scores(before),
        "scores": _scores(after),
        "thresholds_version": int(version),
    }


def _from_json(raw: bytes) -> dict[str, Any]:
    change = orjson.loads(raw)
    return {name: change.get(name) for name in ENTRY_FIELDS}


def _from_field(seq: int, value: bytes) -> dict[str, Any]:
    from_segment, to_segment, code, at = value.decode("utf-8").split(" ")
    return {
        **dict.fromkeys(ENTRY_FIELDS),
        "seq": seq,
        "at": iso_ms(int(at)),
        "from": None if from_segment == "-" else from_segment,
        "to": None if to_segment == "-" else to_segment,
        "cause": _CAUSES_BY_CODE.get(code, code),
    }


def segment_history(
    items: Sequence[bytes], fields: dict[bytes, bytes], keep: int
) -> list[dict[str, Any]]:
    """The newest ``keep`` changes, newest first: ``items`` of the history list, then any
    ``h:<seq>`` ``fields`` of the customer's hash for seqs the list lacks."""
    by_seq: dict[int, dict[str, Any]] = {}
    for raw in items:
        entry = _from_json(raw) if raw[:1] == b"{" else _from_line(raw.decode("utf-8"))
        by_seq.setdefault(int(entry["seq"]), entry)
    for name, value in fields.items():
        if name[:2] == b"h:":
            seq = int(name[2:])
            if seq not in by_seq:
                by_seq[seq] = _from_field(seq, value)
    return [by_seq[seq] for seq in sorted(by_seq, reverse=True)[:keep]]
