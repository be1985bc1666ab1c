"""A customer's trip through the store, as data: what a load returns and what a commit sends.

Pure (no I/O), so the hot per-customer work around a script call (decoding what load.lua
returned, building commit.lua's document) is testable and compilable on its own; the
Redis adapter only moves these through scripts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from stream.core.changes import SegmentChange
from stream.core.customer import Customer, Metrics
from stream.core.scoring import Scores
from stream.store.buckets import bound
from stream.store.codec import (
    RESCORED,
    customer_from_fields,
    diff,
    encode_customer,
    index_text,
    report_share,
    rescored_fields,
    stored_index,
)
from stream.store.history import history_entry
from stream.store.keys import DIMS

# Records made per customer write their own ``__init__`` so that mypyc compiles it (see
# stream.core.customer).


@dataclass(init=False)
class Loaded:
    customer: Customer
    before: dict[str, str]

    def __init__(self, customer: Customer, before: dict[str, str]) -> None:
        self.customer = customer
        self.before = before


@dataclass(init=False)
class Standing:
    """A stored customer as a re-score against new thresholds sees it: its summary fields
    (no orders, no interactions) and its metrics as the population indexes hold them."""

    customer: Customer
    before: dict[str, str]
    metrics: Metrics
    due: int | None  # until then the indexed metrics are exact

    def __init__(
        self, customer: Customer, before: dict[str, str], metrics: Metrics, due: int | None
    ) -> None:
        self.customer = customer
        self.before = before
        self.metrics = metrics
        self.due = due


@dataclass(init=False)
class Commit:
    customer: Customer
    before: dict[str, str]
    segment_before: str | None
    thresholds_version: int
    index: dict[str, int | None] | None  # None: index and due entries stay as stored
    due: int | None
    changes: list[SegmentChange]  # segment move, then churn flag
    clock: int | None
    erase: bool
    forget: bool  # an erasure happened: drop the dedupe marks too
    accepted: int  # input events this commit applies, counted atomically with it
    check_thresholds: bool
    model_version: int | None  # fence the CLV model too (the churn flag depends on it)
    bodies: list[bytes] = field(init=False)  # the changes as published: encoded once

    def __init__(
        self,
        customer: Customer,
        before: dict[str, str],
        segment_before: str | None,
        thresholds_version: int,
        index: dict[str, int | None] | None,
        due: int | None,
        changes: list[SegmentChange] | None = None,
        clock: int | None = None,
        erase: bool = False,
        forget: bool = False,
        accepted: int = 0,
        check_thresholds: bool = True,
        model_version: int | None = None,
    ) -> None:
        self.customer = customer
        self.before = before
        self.segment_before = segment_before
        self.thresholds_version = thresholds_version
        self.index = index
        self.due = due
        self.changes = [] if changes is None else changes
        self.clock = clock
        self.erase = erase
        self.forget = forget
        self.accepted = accepted
        self.check_thresholds = check_thresholds
        self.model_version = model_version
        self.bodies = [ch.encode() for ch in self.changes]


@dataclass(init=False)
class CommitResult:
    ok: bool
    reason: str
    outbox_id: bytes | None  # the entry holding its changes (shared by its call)

    def __init__(self, ok: bool, reason: str = "", outbox_id: bytes | None = None) -> None:
        self.ok = ok
        self.reason = reason
        self.outbox_id = outbox_id


def _share_deltas(
    share: list[object] | None, sign: int, agg: dict[str, int], grid: dict[str, int]
) -> None:
    if share is None:
        return
    segment, orders, monetary, channels, cell = share
    agg[f"{segment}|orders"] = agg.get(f"{segment}|orders", 0) + sign * int(str(orders))
    agg[f"{segment}|monetary"] = agg.get(f"{segment}|monetary", 0) + sign * int(str(monetary))
    assert isinstance(channels, list)
    for ch in channels:
        agg[f"{segment}|ch:{ch}"] = agg.get(f"{segment}|ch:{ch}", 0) + sign
    if cell:
        grid[str(cell)] = grid.get(str(cell), 0) + sign


def _rescored_diff(
    c: Commit, share_before: list[object] | None
) -> tuple[list[str], list[str], list[object] | None]:
    """(HSET pairs, HDEL fields, report share after) of a re-score from the standing,
    which changes at most the ``RESCORED`` fields: the same as encoding the whole customer
    and diffing, for a fraction of the work (a refresh makes one per candidate)."""
    before = c.before
    after = rescored_fields(c.customer)
    sets: list[str] = []
    for name, value in after.items():
        if before.get(name) != value:
            sets.extend((name, value))
    dels = [name for name in RESCORED if name in before and name not in after]
    if before.get("sc") == after.get("sc") and before.get("sg") == after.get("sg"):
        return sets, dels, share_before  # same segment and R x F cell: no deltas
    merged = {k: v for k, v in before.items() if k not in dels}
    merged.update(after)
    return sets, dels, report_share(merged)


def commit_doc(c: Commit) -> dict[str, Any]:
    """One customer's part of a commit script call (see commit.lua for the fields)."""
    cust = c.customer
    share_before = report_share(c.before)
    if c.index is None and not c.erase:  # a re-score from the standing
        sets, dels, share_after = _rescored_diff(c, share_before)
    else:
        after = {} if c.erase else encode_customer(cust)
        if c.index is not None and not c.erase:
            after["x"] = index_text(c.index)
        sets, dels = diff(c.before, after)
        share_after = report_share(after)
    doc: dict[str, Any] = {
        "id": cust.customer_id,
        "v": str(cust.version),
        "set": sets,
        "del": dels,
    }
    if c.index is not None:
        index = c.index
        doc["ix"] = {d: (False if index.get(d) is None else str(index[d])) for d in DIMS}
        doc["ix_old"] = stored_index(c.before.get("x"))
        doc["due"] = False if c.due is None else str(c.due)
    seg_after = None if c.erase else cust.segment
    if seg_after != c.segment_before:
        doc["seg"] = [c.segment_before or "", seg_after or ""]
    if c.changes:
        doc["out"] = c.bodies
        if not c.erase:
            # after an erasure in the batch, only the new customer's changes: the erasure's
            # own change is published but not kept, and what came before it goes with it
            start = 0
            for n, ch in enumerate(c.changes):
                if ch.cause == "erasure":
                    start = n + 1
            doc["hist"] = [history_entry(ch) for ch in c.changes[start:]]
        moves: dict[str, int] = {}
        for ch in c.changes:  # each move, not the commit's net one (A->B, B->C: not A->C)
            if ch.from_segment != ch.to_segment:
                move = f"{ch.from_segment or ''}>{ch.to_segment or ''}"
                moves[move] = moves.get(move, 0) + 1
        if moves:
            doc["moves"] = {m: str(n) for m, n in moves.items()}
    if c.clock is not None:
        doc["clock"] = str(c.clock)
    if c.erase:
        doc["erase"] = True
    if c.erase or c.forget:
        doc["forget"] = True
    if c.accepted:
        doc["acc"] = str(c.accepted)
    if share_before != share_after:
        agg: dict[str, int] = {}
        grid: dict[str, int] = {}
        _share_deltas(share_before, -1, agg, grid)
        _share_deltas(share_after, 1, agg, grid)
        if deltas := {f: str(n) for f, n in agg.items() if n}:
            doc["agg"] = deltas
        if cells := {f: str(n) for f, n in grid.items() if n}:
            doc["grid"] = cells
    return doc


def commit_record(doc: dict[str, Any]) -> list[Any]:
    """A document as commit.lua takes it: one flat record of its ARGV (see its header).
    Flat because Lua's JSON decoder cost a quarter of the script; Redis hands the script
    each value as a ready string."""
    sets: list[str] = doc["set"]
    dels: list[str] = doc["del"]
    out: list[bytes] = doc.get("out") or []
    hist: list[str] = doc.get("hist") or []
    agg: dict[str, str] = doc.get("agg") or {}
    grid: dict[str, str] = doc.get("grid") or {}
    moves: dict[str, str] = doc.get("moves") or {}
    ix: dict[str, Any] | None = doc.get("ix")
    seg: list[str] | None = doc.get("seg")
    flags = ("x" if ix is not None else "") + ("s" if seg is not None else "")
    if doc.get("erase"):
        flags += "e"
    if doc.get("forget"):
        flags += "f"
    record: list[Any] = [
        doc["id"],
        doc["v"],
        flags,
        len(sets),
        len(dels),
        len(out),
        2 * len(agg),
        2 * len(grid),
        "" if seg is None else seg[0],
        "" if seg is None else seg[1],
        doc.get("clock", ""),
        doc.get("acc", ""),
        len(hist),
        2 * len(moves),
    ]
    if ix is not None:
        member = doc["id"].encode("utf-8", "surrogatepass")
        old: list[int | None] = doc.get("ix_old") or [None] * len(DIMS)
        for d, was in zip(DIMS, old, strict=True):
            score = ix[d]
            record.append(b"" if was is None else bound(was, member))
            if score is False:
                record += ("", b"")
            else:
                record += (score, bound(int(score), member))
        due = doc["due"]
        record.append(due if due is not False else "")
    record += sets
    record += dels
    record += out
    record += hist
    for pair in agg.items():
        record += pair
    for pair in grid.items():
        record += pair
    for pair in moves.items():
        record += pair
    return record


def loaded_from_reply(
    customer_id: str,
    flat: Sequence[bytes],
    marks: Sequence[bytes | None],
    wanted: Sequence[str],
    now: int,
) -> Loaded:
    """One customer of a load.lua reply: its hash fields (flat name/value list, dedupe
    marks among them) and, per wanted event id, the expiry of its mark in the customer's
    older marks zset (``None`` = none there)."""
    it = iter(flat)
    stored = {k.decode("utf-8"): v.decode("utf-8") for k, v in zip(it, it, strict=True)}
    customer = customer_from_fields(customer_id, stored)
    kept = customer.marks
    if kept:
        for event_id in [e for e, expires in kept.items() if expires <= now]:
            del kept[event_id]  # its field goes with the next commit's diff
        customer.seen_events.update(kept)
    # marks from before they moved into the hash: a zset per customer, expiring whole
    for event_id, expires in zip(wanted, marks, strict=False):
        if expires is not None and int(expires) > now:
            customer.seen_events.add(event_id)
    # as stored, so the commit writes exactly what differs (derived fields too)
    stored.pop("v", None)
    return Loaded(customer, stored)


# standing.lua's fields, in its HMGET order (``standing_from_reply`` reads them by place)
STANDING_FIELDS = ("v", "fo", "lo", "li", "ch", "sc", "sg", "sq", "tl", "lt", "cr", "x")


def _indexed(raw: bytes | None) -> int | None:
    return None if raw is None else int(raw)


def _text(raw: bytes | None) -> str | None:
    return None if raw is None else raw.decode("utf-8")


def _ms(text: str | None) -> int | None:
    return int(text) if text else None


def standing_from_reply(
    customer_id: str, values: Sequence[bytes | None], due_score: bytes | None
) -> Standing | None:
    """One customer of a standing.lua reply: its summary fields (its index entries, ``x``,
    among them) and its due score. ``None`` when the entries do not account for the hash as
    the commit script writes them together (a layout this code never wrote, or entries
    not yet moved out of the older single zsets): re-score it from its full state. An
    absent customer comes back as one that does not exist.

    Positional, not ``customer_from_fields``: its field-by-field dispatch was a fifth of a
    refresh's Python time, and a standing holds the same twelve fields every time."""
    v, fo, lo, li, ch, sc, sg, sq, tl, lt, cr, x = [_text(raw) for raw in values]
    try:
        r, f, m, i = stored_index(x) or (None, None, None, None)
        due = _indexed(due_score)
    except ValueError:  # a score beyond integer precision: not one of ours
        return None
    customer = Customer(customer_id)
    customer.version = int(v) if v else 0
    customer.first_order_at = _ms(fo)
    customer.last_order_at = last_order_at = _ms(lo)
    customer.last_interaction_at = _ms(li)
    has_orders = last_order_at is not None
    has_interactions = customer.last_interaction_at is not None
    if (
        r != last_order_at
        or (f is not None) != has_orders
        or (m is not None) != has_orders
        or (i is not None) != has_interactions
        or ((has_orders or has_interactions) and tl is None)
    ):
        return None
    before: dict[str, str] = {}
    if fo is not None:
        before["fo"] = fo
    if lo is not None:
        before["lo"] = lo
    if li is not None:
        before["li"] = li
    if ch is not None:
        before["ch"] = ch
        if ch:
            customer.channels = set(ch.split(","))
    if sc is not None:
        before["sc"] = sc
        sr, sf, sm, si = sc.split(",")
        customer.scores = Scores(_ms(sr), _ms(sf), _ms(sm), _ms(si))
    if sg is not None:
        before["sg"] = sg
        customer.segment = sg or None
    if sq is not None:
        before["sq"] = sq
        customer.seq = int(sq)
    if tl is not None:
        before["tl"] = tl
        n, monetary = tl.split(",")
        customer.tally = (int(n), int(monetary))
    if lt is not None:
        before["lt"] = lt
        days, spend, first = lt.split(",")
        customer.purchase_days, customer.spend = int(days), int(spend)
        customer.first_day_spend = int(first)
    if cr is not None:
        before["cr"] = cr
        customer.churn_risk = cr == "1"
    if x is not None:
        before["x"] = x
    metrics = Metrics(
        orders=f or 0,
        monetary=m or 0,
        interactions=i or 0,
        first_order_at=customer.first_order_at,
        last_order_at=last_order_at,
        last_interaction_at=customer.last_interaction_at,
    )
    return Standing(customer, before, metrics, due)
