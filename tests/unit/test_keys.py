"""The key layout: ids of any characters round-trip, shards keep a customer's keys together."""

from __future__ import annotations

import fnmatch
import re

from hypothesis import given
from hypothesis import strategies as st

from stream.store.keys import Keys

ids = st.text(min_size=1, max_size=40)


def _slot_tag(key: str) -> str:
    """The part Redis Cluster hashes: the first non-empty {...}, else the whole key."""
    match = re.search(r"\{([^}]+)\}", key)
    return match.group(1) if match else key


def _glob(pattern: str, key: str) -> bool:
    # Redis globs: backslash escapes; fnmatch has no escapes, so compare unescaped literals
    return fnmatch.fnmatchcase(key, re.sub(r"\\(.)", r"[\1]", pattern))


@given(ids, st.sampled_from([1, 2, 16, 1024]))
def test_customer_ids_round_trip_and_share_their_shards_slot(cid: str, shards: int) -> None:
    keys = Keys("rfm:", shards)
    key = keys.customer(cid)
    assert keys.customer_id_of(key.encode("utf-8", "surrogatepass")) == cid
    assert _glob(keys.customer_pattern, key)
    for other in (keys.applied(cid), keys.history(cid)):
        assert not _glob(keys.customer_pattern, other)
    if shards > 1:
        shard = keys.shard_of(cid)
        tags = {
            _slot_tag(k)
            for k in (
                key,
                keys.applied(cid),
                keys.history(cid),
                keys.counts(shard),
                keys.fence(shard),
                keys.outbox(shard),
                keys.transitions(123, shard),
                *keys.indexes(shard),
            )
        }
        assert tags == {str(shard)}  # one slot: the commit script's keys never cross slots


def test_one_shard_keeps_the_unsharded_layout() -> None:
    keys = Keys("rfm:")
    assert (keys.customer("a"), keys.counts(), keys.fence(), keys.index("r")) == (
        "rfm:c:a",
        "rfm:counts",
        "rfm:thresholds",
        "rfm:ix:r",
    )


def test_shared_keys_are_tagged_together_and_aggregates_miss_the_customer_pattern() -> None:
    keys = Keys("rfm:", 16)
    shared = {keys.thresholds, keys.lease, keys.model_history, keys.scoring_fingerprint}
    assert {_slot_tag(k) for k in shared} == {"g"}  # the lease scripts touch two of them
    for s in keys.all_shards:
        for k in (keys.counts(s), keys.clock(s), keys.stats(s), *keys.indexes(s)):
            assert not _glob(keys.customer_pattern, k)
    spread = {keys.shard_of(f"customer-{n}") for n in range(2_000)}
    assert spread == set(range(16))
