"""Redis key layout. One place, so a prefix isolates a deployment (or a test) completely.

Customer ids are untrusted: they are used as raw bytes (Redis keys are binary-safe) and,
where two variable parts meet, the first is length-prefixed so ``"a:b" + "c"`` and
``"a" + "b:c"`` can never collide.

Sharding (``shards > 1``, required on Redis Cluster): each customer belongs to one virtual
shard, ``crc32(id) mod shards``. Every key a commit touches carries that shard's hash tag
(``{7}``), so each script call stays in one cluster slot; the aggregates (counts, indexes,
outbox, ...) exist once per shard and readers merge them. Keys owned by no customer (the
published thresholds, the lease, ...) share the tag ``{g}``. With one shard there are no tags
and the layout is exactly the unsharded one, so existing deployments keep their data.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

DIMS = ("r", "f", "m", "i")

# Clock-index buckets across all shards. One zset holding every customer costs ~104 B a
# member (dict entry, skiplist node, its own copy of the id); at 1,000,000 customers
# 16,384 buckets hold ~61 members each, under Redis's 128-entry listpack limit, at ~23 B a
# member. The sweep only ever asks "who is due before now", never for ranks, so it can
# visit buckets instead of one sorted set (see sweep_due.lua).
DUE_BUCKETS = 16_384


class LayoutMismatch(Exception):
    """The data under this prefix was written with another number of shards."""


@dataclass(frozen=True)
class Keys:
    prefix: str = "rfm:"
    shards: int = 1

    def __post_init__(self) -> None:
        if not 1 <= self.shards <= 1024:
            raise ValueError(f"shards must be 1..1024, got {self.shards}")

    @property
    def sharded(self) -> bool:
        return self.shards > 1

    @property
    def all_shards(self) -> range:
        return range(self.shards)

    def shard_of(self, customer_id: str) -> int:
        if self.shards == 1:
            return 0
        return zlib.crc32(customer_id.encode("utf-8", "surrogatepass")) % self.shards

    def _tag(self, shard: int) -> str:
        return f"{{{shard}}}" if self.sharded else ""

    def _global(self, name: str) -> str:
        return f"{self.prefix}{name}{{g}}" if self.sharded else f"{self.prefix}{name}"

    def _of(self, name: str, customer_id: str) -> str:
        return f"{self.prefix}{name}{self._tag(self.shard_of(customer_id))}:{customer_id}"

    # ---- one customer (all in the customer's shard) ------------------------------------

    def customer(self, customer_id: str) -> str:
        return self._of("c", customer_id)

    @property
    def customer_pattern(self) -> str:
        escaped = "".join("\\" + ch if ch in "*?[]\\" else ch for ch in self.prefix)
        # sharded: "c{" can only start a customer key ("{" never appears in a prefix)
        return f"{escaped}c{{*" if self.sharded else f"{escaped}c:*"

    def customer_id_of(self, key: bytes) -> str:
        rest = key.decode("utf-8", "surrogatepass")[len(self.prefix) + 1 :]
        if self.sharded:
            return rest[rest.index("}") + 2 :]  # past "{<digits>}:"
        return rest[1:]

    def applied(self, customer_id: str) -> str:
        """Zset of the customer's applied event ids, scored by when the mark expires: the
        older layout, still read until it expires. Marks now live in the customer's hash
        (``e:<event id>`` fields, see ``stream.store.codec``): no key or command of their own.
        """
        return self._of("d", customer_id)

    def history(self, customer_id: str) -> str:
        """List of the customer's segment changes, newest first, each the change event as
        published (commit.lua pushes and trims it; ``stream.store.history`` reads it);
        deleted with the customer on erasure."""
        return self._of("h", customer_id)

    # ---- per shard (aggregates kept by the commit script) ------------------------------

    def index(self, dim: str, shard: int = 0) -> str:
        """A score index as one zset: the older layout, drained by commits and by the next
        refresh. Also the name its buckets extend (``index_bucket``)."""
        return f"{self.prefix}ix:{dim}{self._tag(shard)}"

    def index_bucket(self, dim: str, bucket_bound: bytes, shard: int = 0) -> bytes:
        """One bucket of a score index (zset, member = customer id, score = value): the
        members from ``bucket_bound`` up to the next bucket's (``stream.store.buckets``)."""
        return self.index(dim, shard).encode() + b":" + bucket_bound

    def index_directory(self, dim: str, shard: int = 0) -> str:
        """Zset of a score index's bucket bounds, every score 0, so BYLEX is bound order."""
        return f"{self.prefix}ixdir:{dim}{self._tag(shard)}"

    def index_directories(self, shard: int = 0) -> list[str]:
        return [self.index_directory(d, shard) for d in DIMS]

    def index_sizes(self, dim: str, shard: int = 0) -> str:
        """Hash bucket bound -> members, kept with the buckets: a census in one command."""
        return f"{self.prefix}ixn:{dim}{self._tag(shard)}"

    def indexes(self, shard: int = 0) -> list[str]:
        return [self.index(d, shard) for d in DIMS]

    def fence(self, shard: int = 0) -> str:
        """Hash of the thresholds (``v``) and model (``mv``) versions commits are checked
        against. Unsharded it is the thresholds hash itself; sharded, a per-shard mirror
        that only ever rises (see commit.lua)."""
        return f"{self.prefix}fence{self._tag(shard)}" if self.sharded else self.thresholds

    def counts(self, shard: int = 0) -> str:
        return f"{self.prefix}counts{self._tag(shard)}"

    def outbox(self, shard: int = 0) -> str:
        return f"{self.prefix}outbox{self._tag(shard)}"

    def due(self, shard: int = 0) -> str:
        """The clock index as one zset per shard: the older layout. Still swept, and a
        commit moves its customer out of it, so it drains as customers are re-scored."""
        return f"{self.prefix}due{self._tag(shard)}"

    @property
    def due_buckets_per_shard(self) -> int:
        return max(1, DUE_BUCKETS // self.shards)

    def due_of(self, customer_id: str) -> str:
        """The clock-index bucket holding this customer (member = id, score = when the clock
        alone next changes it). Derived from the id alone, so no commit needs to know
        where the customer's previous entry was."""
        h = zlib.crc32(customer_id.encode("utf-8", "surrogatepass"))
        shard = h % self.shards  # = shard_of(customer_id)
        bucket = (h // self.shards) % self.due_buckets_per_shard
        return f"{self.prefix}due:{bucket}{self._tag(shard)}"

    def due_heads(self, shard: int = 0) -> str:
        """Zset of a shard's clock-index buckets (member = bucket key) scored by a lower
        bound of the earliest due time in each: the sweep visits only buckets whose bound
        has passed."""
        return f"{self.prefix}dueheads{self._tag(shard)}"

    def positions(self, shard: int = 0) -> str:
        """Hash ``"<topic>:<partition>"`` -> the next input offset to read: every event
        before it has its commit in this shard (see advance_positions.lua)."""
        return f"{self.prefix}positions{self._tag(shard)}"

    def clock(self, shard: int = 0) -> str:
        return f"{self.prefix}clock{self._tag(shard)}"

    def stats(self, shard: int = 0) -> str:
        return f"{self.prefix}stats{self._tag(shard)}"

    def segment_report(self, shard: int = 0) -> str:
        """Hash ``<segment>|orders``, ``<segment>|monetary``, ``<segment>|ch:<channel>``."""
        return f"{self.prefix}report{self._tag(shard)}"

    def grid(self, shard: int = 0) -> str:
        """Hash ``"<r>:<f>"`` -> customers with those scores."""
        return f"{self.prefix}grid{self._tag(shard)}"

    def transitions(self, hour: int, shard: int = 0) -> str:
        """Hash ``"<from>><to>"`` -> moves in that hour (epoch hours; "" = none / erased)."""
        return f"{self.prefix}tx:{hour}{self._tag(shard)}"

    # ---- global (one per deployment) ---------------------------------------------------

    @property
    def thresholds(self) -> str:
        return self._global("thresholds")

    @property
    def lease(self) -> str:
        return self._global("lease:refresh")

    @property
    def refreshed_at(self) -> str:
        return self._global("refreshed_at")

    @property
    def model_history(self) -> str:
        """List of the last published CLV models, newest first."""
        return self._global("models")

    @property
    def fitted_at(self) -> str:
        """Wall clock (ms) of the last CLV fit attempt, or of the first worker's start."""
        return self._global("fitted_at")

    @property
    def scoring_fingerprint(self) -> str:
        """Digest of the scheme and scoring settings every customer was last classified with."""
        return self._global("fingerprint")

    @property
    def layout(self) -> str:
        """How many shards the data under this prefix was written with. Never tagged, so
        processes configured with different shard counts find the same key."""
        return f"{self.prefix}shards"
