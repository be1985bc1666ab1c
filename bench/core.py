"""CPU per customer of the pure core alone: no Kafka, no Redis, nothing else on the clock.

The end-to-end figures swing ~20% between runs on a shared VM and mix in the broker and
Redis; this one isolates the Python the worker spends per customer, so a change to the core
(or compiling it, see ``stream.native``) shows up as a number that can be compared:

- ``fold``: an order event's bytes -> parsed -> folded into a new customer -> commit.lua's
  document -> its flat script record, as ``Processor.process`` does per customer;
- ``rescore``: a stored customer's standing as standing.lua returns it -> decoded ->
  re-scored against moved thresholds -> commit document -> flat record, as a threshold refresh
  does per candidate.

Each is the best of a few passes (the least disturbed), in microseconds per customer.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import orjson

from bench import BenchError
from bench.thresholds import Population, thresholds_of
from bench.workload import orders
from stream import native
from stream.config import Settings, load_settings
from stream.core.events import OrderEvent, parse_order
from stream.core.rescore import ScoringContext
from stream.core.scoring import Thresholds
from stream.core.step import Record, fold, rescored_standing
from stream.kafka.topics import Topics
from stream.schemes import load_scheme
from stream.shell.processor import wall_ms
from stream.store.commits import (
    STANDING_FIELDS,
    Loaded,
    commit_doc,
    commit_record,
    loaded_from_reply,
    standing_from_reply,
)
from stream.worker.tuning import tune_gc

CUSTOMERS = 5_000
PASSES = 5


@dataclass(frozen=True)
class CoreCost:
    fold_us: float  # per customer with one order event
    rescore_us: float  # per refresh candidate
    moved_share: float  # of the re-scored customers, the share whose segment changed
    compiled: bool  # the core ran as mypyc-compiled modules

    def as_dict(self) -> dict[str, object]:
        return {
            "fold_us": round(self.fold_us, 1),
            "rescore_us": round(self.rescore_us, 1),
            "moved_share": round(self.moved_share, 3),
            "compiled": self.compiled,
        }


def _best_us(passes: int, n: int, run: Callable[[], object]) -> float:
    best = float("inf")
    for _ in range(passes):
        started = time.perf_counter_ns()
        run()
        best = min(best, (time.perf_counter_ns() - started) / 1_000 / n)
    return best


Reply = tuple[list[bytes | None], bytes | None]


def _standing(loaded: Loaded, doc: dict[str, object]) -> Reply:
    """The customer after the commit, as standing.lua returns it: summary fields (its
    index entries among them), then its due score."""
    fields = dict(loaded.before)
    sets = doc["set"]
    assert isinstance(sets, list)
    fields.update(zip(sets[::2], sets[1::2], strict=True))
    for name in doc["del"]:  # type: ignore[attr-defined]
        fields.pop(name, None)
    fields["v"] = str(int(str(doc["v"])) + 1)
    due = doc["due"]
    return (
        [None if f not in fields else fields[f].encode() for f in STANDING_FIELDS],
        due.encode() if isinstance(due, str) else None,
    )


class Workbench:
    """One population's two paths, exactly as the processor runs them per customer."""

    def __init__(self, settings: Settings, customers: int, now: int) -> None:
        scheme = load_scheme(settings.scoring.scheme, settings.scoring.buckets)
        self.settings = settings
        self.now = now
        topic = Topics(settings.topic_prefix).orders
        work = orders(customers, customers, now_ms=now, tag="k")
        settled = thresholds_of(
            Population.of(work.customer, work.amount, work.at), settings.scoring.buckets
        )
        # a refresh that moves every edge: the population's M doubled shifts each M rank
        moved = Thresholds(
            version=settled.version + 1,
            edges={**dict(settled.edges), "m": tuple(2 * e for e in settled.for_dim("m"))},
            population=settled.population,
            computed_at=now,
        )
        self.before, self.after = (
            ScoringContext(settings=settings, thresholds=t, scheme=scheme, now=now, wall=now)
            for t in (settled, moved)
        )
        self.records = [Record(topic, 0, n, k, v) for n, (k, v) in enumerate(work.events)]
        self.ids = [k.decode() for k, _ in work.events]
        self.stored: list[tuple[str, Reply]] = []

    def fold(self, keep: bool = False) -> list[dict[str, object]]:
        """Every customer's first order; ``keep``: remember the results for ``rescore``."""
        docs = []
        for cid, record in zip(self.ids, self.records, strict=True):
            event = parse_order(record.value, self.settings.store, self.now)
            assert isinstance(event, OrderEvent)
            loaded = loaded_from_reply(cid, [], [None], [event.event_id], self.now)
            commit = fold(loaded, [(record, event)], self.before).commit
            assert commit is not None
            doc = commit_doc(commit)
            commit_record(doc)
            if keep:
                docs.append(doc)
                self.stored.append((cid, _standing(loaded, doc)))
        return docs

    def rescore(self, keep: bool = False) -> list[dict[str, object]]:
        """Every stored customer against the moved thresholds (after ``fold(keep=True)``)."""
        docs = []
        for cid, (values, scores) in self.stored:
            standing = standing_from_reply(cid, values, scores)
            assert standing is not None
            out = rescored_standing(self.after, "threshold_refresh", standing)
            assert out is not None
            if out.commit is None:  # its scores did not move: a refresh writes nothing
                continue
            doc = commit_doc(out.commit)
            commit_record(doc)
            if keep:
                docs.append(doc)
        return docs


def documents(settings: Settings, customers: int, now: int) -> list[dict[str, object]]:
    """What both paths send to Redis, in order: the same whichever way the core runs."""
    bench = Workbench(settings, customers, now)
    return bench.fold(keep=True) + bench.rescore(keep=True)


def measure(settings: Settings, customers: int = CUSTOMERS, passes: int = PASSES) -> CoreCost:
    bench = Workbench(settings, customers, wall_ms())
    tune_gc()  # as the worker runs
    bench.fold(keep=True)
    fold_us = _best_us(passes, customers, bench.fold)
    share = sum(1 for doc in bench.rescore(keep=True) if "seg" in doc) / customers
    rescore_us = _best_us(passes, customers, bench.rescore)
    return CoreCost(fold_us, rescore_us, share, native.active())


def compare(env: dict[str, str], customers: int = CUSTOMERS) -> dict[str, CoreCost]:
    """Both modes in the same run, each in a fresh interpreter (the mode is fixed at import):
    ``"plain"`` always, ``"compiled"`` when a current build exists."""
    out: dict[str, CoreCost] = {}
    for mode, flag in (("plain", "0"), ("compiled", "1")):
        proc = subprocess.run(
            [sys.executable, "-m", "bench.core", str(customers)],
            env={**env, native.ENV: flag},
            capture_output=True,
            timeout=600,
        )
        if proc.returncode == 0:
            out[mode] = CoreCost(**orjson.loads(proc.stdout))
        elif mode == "plain":
            raise BenchError(f"bench.core failed: {proc.stderr.decode(errors='replace')[-2000:]}")
    return out


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else CUSTOMERS
    cost = measure(load_settings(), customers=n)
    sys.stdout.buffer.write(orjson.dumps(asdict(cost)))


if __name__ == "__main__":
    main()
