"""`rfm bench --quick` runs against a real broker and Redis and reports SPEC section 10's shape.

Speed is not asserted (CI boxes differ); what is: the JSON has every SPEC key with the right
types, the chart is written beside it, the worker's final segment counts (and those of two
workers sharing the load) equal ``tests.oracle``'s recomputation of the same events,
regenerated here from the generator inputs the JSON names (so the bench timed real work, and
its own numpy yardstick is held to the oracle too), every event `rfm collect` acknowledged is
in its topic, read back here, as are the bare producer's records (the same bytes), and the
run removes every topic and key it made but the collector's, which it was asked to keep.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
from aiokafka.admin import AIOKafkaAdminClient

from bench import baseline, collector, storefront, workload
from stream.collect.outgoing import MappingContext
from stream.collect.signature import verify_base64_hmac
from stream.config import Settings
from stream.core.events import parse_order
from stream.kafka import delete_topics
from stream.schemes import load_scheme
from stream.stack import KAFKA_VERSION
from stream.worker import app as worker
from tests.conftest import Infra
from tests.oracle import recompute
from tests.support import read_topic

SPEC_KEYS = {
    "events_per_s",
    "baseline_events_per_s",
    "latency_ms",
    "refresh",
    "redis_bytes_per_customer",
    "batch_recompute_s",
    "machine",
}


def test_baseline_takes_batches_shaped_like_the_worker() -> None:
    assert baseline.BATCH_MAX == worker.BATCH_MAX


def test_bench_webhooks_are_signed_orders_of_distinct_buyers() -> None:
    store = Settings().store
    traffic = storefront.Traffic(store, b"s" * 32, "token")
    hooks = traffic.webhooks(3)
    assert all(
        verify_base64_hmac(h.body, h.headers["x-shopify-hmac-sha256"], b"s" * 32) for h in hooks
    )
    assert len({h.headers["x-shopify-webhook-id"] for h in hooks}) == 3
    ctx = MappingContext(store.currency, store.currency_decimals, b"g" * 16, storefront.SHOP)
    records = storefront.records([*hooks, *traffic.batches(5, 2)], ctx)
    orders = [parse_order(value, store, traffic.now_ms) for _, value in records]
    assert [o.customer_id.encode() for o in orders] == [key for key, _ in records]
    assert len({o.event_id for o in orders}) == len({o.customer_id for o in orders}) == 8
    assert [o.event_id for o in orders[:1]] == [f"shopify:bench:{storefront.ORDER_IDS}:paid"]


def test_collector_samples_are_counted_by_layer(tmp_path: Path) -> None:
    root = "serve (stream/collect/app.py:297);run (uvicorn/main.py:643)"
    folded = tmp_path / "collector.folded"
    folded.write_text(
        f"{root};Runner.run (asyncio/runners.py:118) 4\n"  # the loop itself: not uvicorn's
        "Redis.execute_command (redis/asyncio/client.py:979);"
        "StreamWriter.writelines (asyncio/streams.py:346) 3\n"  # a write for the Redis client
        f"{root};H11Protocol.data_received (uvicorn/protocols/http/h11_impl.py:1) 2\n"
        "wait_for (asyncio/tasks.py:476) 1\n"  # a stack py-spy could not unwind
    )
    shares = {s.layer: s.share for s in collector.layers(folded)}
    assert shares == {
        "event loop (uvloop)": 0.4,
        "Redis client (delivery ids)": 0.3,
        "HTTP server (uvicorn)": 0.2,
        "asyncio, caller not sampled": 0.1,
    }


def number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


@pytest.mark.integration
@pytest.mark.timeout(240)
def test_quick_bench_reports_spec_shape(infra: Infra, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RFM_")}
    env.update({"RFM_KAFKA_BOOTSTRAP": infra.bootstrap, "RFM_REDIS_URL": infra.redis_url})
    out = tmp_path / "b.json"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "stream.cli",
            "bench",
            "--quick",
            "--workers",
            "2",
            "--json",
            str(out),
            "--keep-collector-topics",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=220,
    )
    found = re.search(r"namespace (bench[0-9a-f]+)", done.stderr)
    assert found, done.stderr
    tag = found.group(1)
    try:
        assert done.returncode == 0, f"rfm bench failed:\n{done.stdout}\n{done.stderr}"
        doc = orjson.loads(out.read_bytes())
        # Only the kept topics are left, and they hold every acknowledged event.
        left = {t for t in asyncio.run(topics(infra.bootstrap)) if t.startswith(f"{tag}.")}
        assert left and all(t.startswith((f"{tag}.collect.", f"{tag}.bare.")) for t in left), left
        check_collector(doc, Settings(kafka_bootstrap=infra.bootstrap))
    finally:
        asyncio.run(delete_topics(Settings(kafka_bootstrap=infra.bootstrap), f"{tag}."))
    check_spec_shape(doc, out)

    # Nothing of the run is left behind.
    client = redis.Redis.from_url(infra.redis_url)
    try:
        assert not list(client.scan_iter(match=f"{tag}:*", count=1000))
    finally:
        client.close()
    assert not [t for t in asyncio.run(topics(infra.bootstrap)) if t.startswith(f"{tag}.")]


def check_collector(doc: dict[str, Any], settings: Settings) -> None:
    """The collector's figures, and its topic read back: one record per acknowledged event,
    no event twice; the bare producer's topic: the same records, byte for byte."""
    c = doc["collector"]
    for key in ("webhooks_per_s", "events_per_s", "bare_producer_events_per_s"):
        assert number(c[key]) and c[key] > 0, (key, c)
    for key, rate in (("ack_ms", "at_webhooks_per_s"), ("bare_producer_ack_ms", "at_events_per_s")):
        times = c[key]
        assert set(times) == {"p50", "p95", "p99", rate}, times
        assert all(number(v) and v > 0 for v in times.values()), times
        assert times["p50"] <= times["p95"] <= times["p99"], times
    assert c["ack_ms"]["at_webhooks_per_s"] >= 400, c["ack_ms"]  # the 500/s probe kept pace
    for kind in ("webhooks", "events"):
        load = c["load"][kind]
        assert load["events"] > 0 and isinstance(load["limit"], str), load
        assert all(number(load[k]) for k in ("collector_cores", "client_cores", "box_cores"))
    assert c["refused"] == {}, c["refused"]
    records = read_topic(settings, c["topic"])
    ids = Counter(r.json()["event_id"] for r in records)
    assert len(records) == c["acknowledged"] > 0, (len(records), c["acknowledged"])
    assert max(ids.values()) == 1, ids.most_common(3)
    assert any(i.startswith("shopify:bench:") for i in ids), list(ids)[:3]
    bare = read_topic(settings, c["bare_producer_topic"])
    assert len(bare) == c["bare_producer_records"] > 0, (len(bare), c["bare_producer_records"])
    assert {r.value for r in bare} <= {r.value for r in records}


def check_spec_shape(doc: dict[str, Any], out: Path) -> None:
    assert set(doc) >= SPEC_KEYS, SPEC_KEYS - set(doc)
    assert number(doc["events_per_s"]) and doc["events_per_s"] > 0
    assert number(doc["baseline_events_per_s"]) and doc["baseline_events_per_s"] > 0
    scaled = doc["scale_out"]  # two workers in one group, timed once the group is stable
    assert scaled["workers"] == 2 and number(scaled["events_per_s"]), scaled
    assert scaled["events_per_s"] > 0 and number(scaled["vs_one_worker"]), scaled
    latency = doc["latency_ms"]
    assert set(latency) == {"p50", "p95", "p99", "at_events_per_s"}
    assert all(number(v) and v > 0 for v in latency.values()), latency
    assert latency["p50"] <= latency["p95"] <= latency["p99"]
    refresh = doc["refresh"]
    assert len(refresh) == 2
    for entry in refresh:
        assert isinstance(entry["customers"], int) and isinstance(entry["moved"], int)
        assert number(entry["seconds"]) and entry["seconds"] > 0
        assert number(entry["redis_bytes_per_customer"]) and entry["redis_bytes_per_customer"] > 0
    sizes = [entry["customers"] for entry in refresh]
    assert sizes[0] < sizes[1]
    # "the same number moved" at both sizes: a few dozen either way, never the population
    assert all(20 <= entry["moved"] <= 300 for entry in refresh), refresh
    assert number(doc["redis_bytes_per_customer"]) and doc["redis_bytes_per_customer"] > 0
    assert number(doc["batch_recompute_s"]) and doc["batch_recompute_s"] >= 0
    # `rfm export` of the whole population, every line with a prediction from a fitted model
    export = doc["export"]
    assert export["customers"] == doc["params"]["customers"], export
    assert number(export["seconds"]) and export["seconds"] > 0, export
    assert number(export["customers_per_s"]) and export["customers_per_s"] > 0, export
    assert isinstance(export["model_version"], int) and export["model_version"] >= 1, export
    machine = doc["machine"]
    assert isinstance(machine["cores"], int) and machine["cores"] >= 1
    assert isinstance(machine["cpu_model"], str) and isinstance(machine["python"], str)
    assert machine["kafka_version"] == KAFKA_VERSION
    assert isinstance(machine["redis_version"], str)
    assert machine["packages"]["faust-streaming"] and machine["packages"]["aiokafka"]
    cpu = doc["core_us_per_customer"]
    assert set(cpu) <= {"plain", "compiled"} and "plain" in cpu, cpu
    if machine["compiled_core"]:  # the worker ran compiled: the comparison is in the report
        assert "compiled" in cpu and cpu["compiled"]["compiled"] is True, cpu
    for mode, cost in cpu.items():
        assert cost["compiled"] is (mode == "compiled"), cpu
        assert number(cost["fold_us"]) and cost["fold_us"] > 0, cpu
        assert number(cost["rescore_us"]) and cost["rescore_us"] > 0, cpu
        assert 0 < cost["moved_share"] <= 1, cpu

    assert not [n for n in doc["notes"] if "differ" in n or "never arrived" in n], doc["notes"]
    # The segment counts, against the oracle over the very events the bench sent.
    params = doc["params"]
    gen = params["workload"]
    work = workload.orders(
        params["customers"],
        params["events"],
        now_ms=gen["now_ms"],
        seed=gen["seed"],
        currency=gen["currency"],
        decimals=gen["decimals"],
    )
    assert (len(work), work.customers) == (params["events"], params["customers"])
    scheme = load_scheme(params["scheme"], params["buckets"])
    expected = recompute(
        [orjson.loads(value) for _, value in work.events], scheme, buckets=params["buckets"]
    )
    want = dict(Counter(e.segment for e in expected.values()))
    assert len(expected) == params["customers"] and len(want) > 3, want
    counts = doc["segment_counts"]
    assert counts["end_to_end"] == want, counts
    assert counts["scale_out"] == want, counts
    assert counts["batch"] == want, counts
    png = out.with_suffix(".png")
    if "chart skipped" not in " ".join(doc["notes"]):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


async def topics(bootstrap: str) -> list[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return list(await admin.list_topics())
    finally:
        await admin.close()
