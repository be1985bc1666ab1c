"""The batch alternative: recompute every customer's scores and segment from the event log.

This is what a nightly job over the same events would do (decode the JSON, group by
customer, quantile edges, scores, segments), vectorised with numpy like tests/oracle.py's
thresholds. It is the yardstick for the streaming figures: the whole population at once,
but only as fresh as the last run. The workload has completed orders only (no refunds,
duplicates or interactions), which is all this needs to handle.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import orjson

from bench.thresholds import Population, edges
from stream.core.scheme import Profile, Scheme


@dataclass(frozen=True)
class Batch:
    customers: int
    seconds: float
    counts: dict[str, int]  # customers per segment
    edges: dict[str, tuple[int, ...]]


def recompute(values: Sequence[bytes], scheme: Scheme, buckets: int, decimals: int) -> Batch:
    started = time.perf_counter()
    docs = [orjson.loads(v) for v in values]
    names, customer = np.unique([d["customer_id"] for d in docs], return_inverse=True)
    amount = np.rint(np.array([d["amount"] for d in docs], dtype=np.float64) * 10**decimals)
    # occurred_at is RFC 3339 in UTC ("...Z"); numpy parses it once the zone letter is gone.
    at = np.array([d["occurred_at"].rstrip("Z") for d in docs], dtype="datetime64[ms]")
    pop = Population.of(customer, amount.astype(np.int64), at.astype(np.int64))
    cut = {"r": edges(pop.last, buckets), "f": edges(pop.orders, buckets)}
    cut["m"] = edges(pop.monetary, buckets)
    # score = 1 + #{k : value > t_k}, i.e. the left insertion point among the edges
    r = 1 + np.searchsorted(cut["r"], pop.last, side="left")
    f = 1 + np.searchsorted(cut["f"], pop.orders, side="left")
    m = 1 + np.searchsorted(cut["m"], pop.monetary, side="left")
    combos, inverse = np.unique(np.stack([r, f, m, pop.orders]), axis=1, return_inverse=True)
    segment = [
        scheme.classify(
            Profile(
                r=int(cr),
                f=int(cf),
                m=int(cm),
                i=None,
                orders=int(o),
                has_orders=True,
                has_interactions=False,
            )
        ).id
        for cr, cf, cm, o in combos.T
    ]
    counts: Counter[str] = Counter()
    for seg, n in zip(segment, np.bincount(inverse.ravel(), minlength=len(segment)), strict=True):
        counts[seg] += int(n)
    seconds = time.perf_counter() - started
    return Batch(len(names), seconds, dict(counts), cut)
