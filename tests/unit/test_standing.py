"""A refresh re-scores a customer from its standing (summary fields plus index entries).

The oracle is the full path, ``commit_for`` over the customer's whole stored state: for any
customer and any two sets of edges, the standing must give the very same commit document
(less the index and due entries, which it leaves as stored), or nothing when the full path
would write nothing, or refuse when the clock has reached the customer's due time.
"""

from __future__ import annotations

import contextlib
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream.clv.model import BgNbd
from stream.clv.prediction import Model
from stream.config import settings_from
from stream.core.customer import Customer, apply_interaction, apply_order
from stream.core.events import InteractionEvent, OrderEvent, Rejected
from stream.core.rescore import ScoringContext
from stream.core.scoring import DAY_MS, Thresholds
from stream.core.step import commit_for, rescored_standing
from stream.schemes import load_scheme
from stream.store.codec import customer_from_fields, encode_customer, index_text
from stream.store.commits import (
    STANDING_FIELDS,
    Loaded,
    Standing,
    commit_doc,
    standing_from_reply,
)
from stream.store.keys import DIMS

NOW = 1_795_140_900_000
SETTINGS = settings_from({}, {})
SCHEME = load_scheme(SETTINGS.scoring.scheme, SETTINGS.scoring.buckets)
WINDOW = SETTINGS.window_ms


def _edges(lo: int, hi: int) -> st.SearchStrategy[tuple[int, ...]]:
    return st.lists(st.integers(lo, hi), min_size=4, max_size=4).map(lambda e: tuple(sorted(e)))


thresholds = st.builds(
    lambda r, f, m, i: {"r": r, "f": f, "m": m, "i": i},
    _edges(NOW - 500 * DAY_MS, NOW),
    _edges(0, 8),
    _edges(0, 400_000),
    _edges(0, 12),
)
orders = st.lists(
    st.tuples(
        st.integers(0, 500),  # age in days at NOW
        st.integers(0, 100_000),  # amount, minor units
        st.sampled_from([None, "partial", "full"]),  # a refund of it
    ),
    max_size=6,
)
likes = st.lists(st.integers(0, 500), max_size=4)


def _ctx(edges: dict[str, tuple[int, ...]], version: int, now: int) -> ScoringContext:
    return ScoringContext(SETTINGS, Thresholds(version, edges), SCHEME, now, now + 7)


def _stored(
    placed: list[tuple[int, int, str | None]], liked: list[int], edges: dict, flagged: bool
) -> tuple[dict[str, str], dict[str, int | None], int | None]:
    """A customer as a commit against ``edges`` at NOW left it: hash fields, index, due."""
    c = Customer("c-1")
    for n, (age, amount, refund) in enumerate(placed):
        at = NOW - age * DAY_MS - n
        apply_order(c, OrderEvent(f"e{n}", "c-1", f"o{n}", False, amount, at), WINDOW, NOW)
        if refund:
            part = amount // 3 if refund == "partial" else amount
            event = OrderEvent(f"r{n}", "c-1", f"o{n}", True, part, NOW, full=refund == "full")
            with contextlib.suppress(Rejected):  # the order had aged out already
                apply_order(c, event, WINDOW, NOW)
    for n, age in enumerate(liked):
        like = InteractionEvent(f"i{n}", "c-1", "like", NOW - age * DAY_MS)
        apply_interaction(c, like, 1, WINDOW, NOW)
    commit = commit_for(Loaded(c, {}), _ctx(edges, 1, NOW), "order")
    assert commit.index is not None
    c.churn_risk = flagged  # written while churn events were on
    stored = {**encode_customer(c), "v": "3", "x": index_text(commit.index)}
    return stored, commit.index, commit.due


def _reply(stored: dict[str, str], due: int | None) -> tuple[list[bytes | None], bytes | None]:
    values = [None if f not in stored else stored[f].encode() for f in STANDING_FIELDS]
    return values, None if due is None else str(due).encode()


@settings(max_examples=300, deadline=None)
@given(orders, likes, thresholds, thresholds, st.integers(0, 400), st.booleans())
def test_a_standing_rescore_commits_what_the_full_state_would(
    placed: list[tuple[int, int, str | None]],
    liked: list[int],
    before: dict,
    after: dict,
    days_later: int,
    flagged: bool,
) -> None:
    stored, index, due = _stored(placed, liked, before, flagged)
    now = NOW + days_later * DAY_MS
    ctx = _ctx(after, 2, now)

    full_state = customer_from_fields("c-1", stored)
    full = commit_doc(
        commit_for(Loaded(full_state, {k: v for k, v in stored.items() if k != "v"}), ctx, "t")
    )
    standing = standing_from_reply("c-1", *_reply(stored, due))
    assert standing is not None
    out = rescored_standing(ctx, "t", standing)

    if due is not None and due <= now:
        assert out is None  # orders left the window since: only the full state knows
        return
    assert out is not None
    if not full_state.exists:
        assert out.commit is None
        return
    # the full path rewrites the index and due entries unchanged ...
    assert full["ix"] == {d: False if index[d] is None else str(index[d]) for d in DIMS}
    assert full["due"] == (False if due is None else str(due))
    assert full["ix_old"] == [index[d] for d in DIMS]  # read back from the hash's "x"
    rest = {k: v for k, v in full.items() if k not in ("ix", "ix_old", "due")}
    if out.commit is None:  # ... and nothing else, when the standing commits nothing
        assert rest == {"id": "c-1", "v": "3", "set": [], "del": []}
    else:
        assert out.commit.index is None
        assert commit_doc(out.commit) == rest


def _standing(**changed: bytes | None) -> Standing | None:
    stored, _, due = _stored([(3, 5_000, None)], [4], {d: (1, 2, 3, 4) for d in DIMS}, False)
    entries = stored["x"].split(",")
    for name, raw in changed.items():
        if name == "due":
            due = None if raw is None else int(raw)
        else:
            entries[list(DIMS).index(name)] = "" if raw is None else raw.decode()
    return standing_from_reply("c-1", *_reply({**stored, "x": ",".join(entries)}, due))


def test_a_standing_the_index_does_not_account_for_is_refused() -> None:
    assert _standing() is not None
    assert _standing(f=None) is None  # orders in the hash, none in the index
    assert _standing(i=None) is None
    assert _standing(r=b"1") is None  # last order differs from the hash's
    assert _standing(m=b"1.5e+20") is None  # beyond integer precision: not ours
    stored, _, due = _stored([(3, 5_000, None)], [4], {d: (1, 2, 3, 4) for d in DIMS}, False)
    del stored["x"]  # stored before the indexes were bucketed: its entries sit elsewhere
    assert standing_from_reply("c-1", *_reply(stored, due)) is None


@pytest.mark.parametrize("kind", ["fixed", "churn"])
def test_a_standing_does_not_serve_a_context_that_scores_by_more(kind: str) -> None:
    standing = _standing()
    assert standing is not None
    ctx = _ctx({d: (1, 2, 3, 4) for d in DIMS}, 2, NOW)
    if kind == "fixed":  # recency is then days before now: it moves with the clock
        edges = {"r": [7, 30, 90, 180], "f": [1, 2, 4, 8], "m": [1, 5, 10, 50], "i": [1, 2, 3, 4]}
        fixed = settings_from({}, {"scoring": {"mode": "fixed", "edges": edges}})
        ctx = replace(ctx, settings=fixed)
    else:  # the churn flag depends on the orders themselves
        churny = settings_from({}, {"prediction": {"churn_threshold": 0.5}})
        model = Model(1, NOW, NOW, 10, 5, BgNbd(1.0, 1.0, 1.0, 1.0), None)
        ctx = replace(ctx, settings=churny, model=model)
    assert rescored_standing(ctx, "t", standing) is None
