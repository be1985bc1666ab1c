"""Erasure (SPEC section 9) leaves no trace of the customer id anywhere under the deployment's
key prefix: not in the scorer's state, indexes and aggregates, and not in the campaign
consumer's ledger.

Real components only: events go through Kafka to a real `rfm worker` and a real
`rfm campaigns` (delivering to a local HTTP receiver); the erasure requests go through
``rfm.erasure`` like any others. The check is generic: every key under the prefix is read
whole, whatever its type (key name, string value, hash fields and values, list items, set
and sorted-set members, stream entries and consumer groups), and a type the scan cannot
read fails the test instead of being skipped, so a new structure cannot hide a trace.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis

from consumers.campaigns.actions import Action, idempotency_key
from consumers.campaigns.ledger import CampaignKeys, Ledger
from stream.config import Settings
from stream.kafka import ensure_topics
from stream.kafka.topics import Topics
from stream.process import Child
from stream.shell.processor import wall_ms
from stream.store.keys import Keys
from stream.store.redis_store import connect
from tests.api_support import erasure, interaction, order
from tests.conftest import Isolated
from tests.support import (
    WorkerProcess,
    events_applied,
    group_drained,
    produce,
    read_topic,
    rfm,
    wait_for,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

DAY = 86_400_000
# Untrusted ids: braces (a Redis Cluster hash tag), colons (the key separator), CJK, emoji,
# a quote and a backslash (JSON escapes). None is a substring of another id in the test.
ODD_IDS = ("{odd}:客戶 1", "a:b{7}:😀 x", 'q"uo\\te{}:z')


# -- the scan ----------------------------------------------------------------------------------


def needles(customer_id: str) -> tuple[bytes, ...]:
    """Every form the id could be stored in: raw UTF-8 (keys, fields, members) and inside
    JSON documents, as orjson writes it and as an ASCII-escaping encoder would."""
    raw = customer_id.encode("utf-8")
    return tuple(
        dict.fromkeys(
            (
                raw,
                orjson.dumps(customer_id)[1:-1],
                json.dumps(customer_id)[1:-1].encode("ascii"),
            )
        )
    )


def _glob(prefix: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in prefix) + "*"


def _b(value: object) -> bytes:
    """redis-py's replies without ``decode_responses`` are bytes (its types say more)."""
    assert isinstance(value, bytes), value
    return value


def pieces(client: redis.Redis, key: bytes) -> Iterator[tuple[str, bytes]]:
    """Every byte string one key holds, each labelled with where it sits."""
    yield "key name", key
    kind = _b(client.type(key)).decode()
    if kind == "none":  # expired or deleted since the SCAN
        return
    if kind == "string":
        yield "string value", _b(client.get(key) or b"")
    elif kind == "hash":
        for field, value in client.hscan_iter(key, count=1000):
            yield "hash field", _b(field)
            yield "hash value", _b(value)
    elif kind == "list":
        for item in client.lrange(key, 0, -1):
            yield "list item", _b(item)
    elif kind == "set":
        for member in client.sscan_iter(key, count=1000):
            yield "set member", _b(member)
    elif kind == "zset":
        for member, _ in client.zscan_iter(key, count=1000):
            yield "zset member", _b(member)
    elif kind == "stream":
        for entry_id, fields in client.xrange(key, "-", "+") or []:
            yield "stream entry id", _b(entry_id)
            for field, value in (fields or {}).items():
                yield "stream field", _b(field)
                yield "stream value", _b(value)
        for group in client.xinfo_groups(key):
            yield "stream group", _b(group["name"])
            for consumer in client.xinfo_consumers(key, group["name"]):
                yield "stream consumer", _b(consumer["name"])
    else:
        raise AssertionError(f"{key!r} is a {kind}, a type this scan cannot read: teach it")


def traces(client: redis.Redis, prefix: str, ids: Any) -> dict[str, list[str]]:
    """Per customer id, where it (or its JSON form) occurs under ``prefix``: ``"<where> of
    <key>"`` for each occurrence; ids without any occurrence are left out."""
    wanted = {cid: needles(cid) for cid in ids}
    found: dict[str, list[str]] = {}
    for key in client.scan_iter(match=_glob(prefix), count=1000):
        for where, data in pieces(client, key):
            for cid, forms in wanted.items():
                if any(form in data for form in forms):
                    found.setdefault(cid, []).append(f"{where} of {key!r}")
    return found


def test_the_scan_finds_an_id_in_every_kind_of_redis_value(isolated: Isolated) -> None:
    """The scan itself can fail: one key of each type holds the id in one place only, and
    each of those places is reported."""
    client = redis.Redis.from_url(isolated.infra.redis_url)
    p, cid = f"{isolated.name}:", ODD_IDS[1]
    raw = cid.encode()
    try:
        client.set(f"{p}k:".encode() + raw, b"-")
        client.set(f"{p}s", b"<" + raw + b">")
        client.hset(f"{p}hf", b"f:" + raw, b"-")
        client.hset(f"{p}hv", b"f", b'{"customer_id":' + orjson.dumps(cid) + b"}")
        client.rpush(f"{p}l", b"-", json.dumps({"c": cid}).encode())
        client.sadd(f"{p}set", b"-", raw)
        client.zadd(f"{p}z", {b"\x00\x01" + raw: 1, b"-": 2})
        client.xadd(f"{p}xf", {b"c0": b"-", raw: b"-"})
        client.xadd(f"{p}xv", {b"c0": raw})
        client.xadd(f"{p}xg", {b"c0": b"-"})
        client.xgroup_create(f"{p}xg", b"g-" + raw, id="0")
        client.xadd(f"{p}clean", {b"c0": b"p-0001"})
        found = traces(client, p, [cid, "nobody-at-all"])
    finally:
        client.close()
    assert set(found) == {cid}
    assert sorted(found[cid]) == sorted(
        [
            f"key name of {f'{p}k:'.encode() + raw!r}",
            f"string value of {f'{p}s'.encode()!r}",
            f"hash field of {f'{p}hf'.encode()!r}",
            f"hash value of {f'{p}hv'.encode()!r}",
            f"list item of {f'{p}l'.encode()!r}",
            f"set member of {f'{p}set'.encode()!r}",
            f"zset member of {f'{p}z'.encode()!r}",
            f"stream field of {f'{p}xf'.encode()!r}",
            f"stream value of {f'{p}xv'.encode()!r}",
            f"stream group of {f'{p}xg'.encode()!r}",
        ]
    )


# -- the campaign consumer and its receiver ------------------------------------------------------


class Receiver:
    """A local webhook endpoint answering 200, counting requests per customer."""

    def __init__(self) -> None:
        self.customers: list[str] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with receiver.lock:
                    receiver.customers.append(orjson.loads(body)["customer_id"])
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def seen(self) -> set[str]:
        with self.lock:
            return set(self.customers)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# Every per-customer structure of the ledger gets written: first-order markers, cooldowns,
# arms by order value and by hash, the recent-deliveries feed, moves per arm; and one rule
# asks to hear about erasures themselves (``to = ""``), whose delivery follows the request.
RULES = """
[webhook]
url = "{url}"
secret = "erasure-test-secret"
timeout = "3s"
retries = 2
backoff = "50ms"
max_backoff = "100ms"

[[rule]]
id = "welcome"
trigger = "order"
first_order = true
cooldown = "1h"
[[rule.variant]]
name = "small"
below = "500"
[[rule.variant]]
name = "large"

[[rule]]
id = "any_move"
trigger = "segment_change"
cooldown = "1h"
[[rule.variant]]
name = "a"
weight = 1
[[rule.variant]]
name = "b"
weight = 1

[[rule]]
id = "erased_notice"
trigger = "segment_change"
to = ""
cause = ["erasure"]
cooldown = "1h"
[[rule.variant]]
name = "a"
weight = 1
[[rule.variant]]
name = "b"
weight = 1
"""


class Campaigns(Child):
    def __init__(self, iso: Isolated, rules: Path) -> None:
        argv = [sys.executable, "-m", "stream.cli", "campaigns", "--rules", str(rules)]
        super().__init__("campaigns", argv, iso.process_env(), iso.tmp / "campaigns.log")


def campaigns_drained(settings: Settings) -> bool:
    """The campaigns group has committed every record now in the topics it reads."""
    topics = Topics(settings.topic_prefix)
    return group_drained(
        settings, f"{settings.topic_prefix}campaigns", topics.changes, topics.orders, topics.erasure
    )


# -- the test ----------------------------------------------------------------------------------


def keyed(topic: str, doc: dict[str, Any]) -> tuple[str, bytes, bytes]:
    return topic, doc["customer_id"].encode(), orjson.dumps(doc)


def outbox_empty(client: redis.Redis, keys: Keys) -> bool:
    return int(client.xlen(keys.outbox())) == 0


def test_an_erased_customer_leaves_no_trace_under_the_prefix(
    isolated: Isolated, start_worker: Callable[..., WorkerProcess]
) -> None:
    settings = isolated.settings()
    topics = Topics(settings.topic_prefix)
    keys = Keys(settings.key_prefix)
    asyncio.run(ensure_topics(settings))
    config = isolated.config_file('[scoring]\nclock = "event"\nrefresh_interval = "1h"\n')
    receiver = Receiver()
    rules = isolated.tmp / "rules.toml"
    rules.write_text(RULES.replace("{url}", receiver.url), encoding="utf-8")
    worker = start_worker(config)
    campaigns = Campaigns(isolated, rules).start()
    client = redis.Redis.from_url(isolated.infra.redis_url)

    def diagnose() -> str:
        return f"{worker.tail()}\n{campaigns.tail()}"

    try:
        # -- history: enough customers that every score index splits into several buckets --
        rng = random.Random(20261207)
        now = wall_ms() - 60_000
        plain = [f"p-{n:04d}" for n in range(300)]
        customers = plain + list(ODD_IDS)
        docs: list[tuple[str, dict[str, Any]]] = []
        n = 0
        for cid in customers:
            for _ in range(rng.randint(1, 3)):
                minor = rng.randint(100, 900_000)
                at = now - rng.randint(1, 300) * DAY - rng.randint(0, DAY)
                docs.append((topics.orders, order(n, cid, minor, at, rng.choice(["pos", "app"]))))
                n += 1
            if cid in ODD_IDS or rng.random() < 0.5:
                docs.append(
                    (topics.interactions, interaction(n, cid, now - rng.randint(1, 60) * DAY))
                )
                n += 1
        rng.shuffle(docs)
        produce(settings, [keyed(t, d) for t, d in docs])
        wait_for(
            lambda: events_applied(client, isolated.name) >= len(docs),
            timeout=120,
            what=f"the worker to apply {len(docs)} events",
            diagnose=diagnose,
        )
        rfm(isolated, config, "refresh")

        # Customers a shared structure is named after (an index bucket is named after the
        # member it starts at): the likeliest to linger. Two of them buy again first, so
        # they leave the bucket that bears their name before they are erased.
        named: set[str] = set()
        for key in client.scan_iter(match=_glob(settings.key_prefix), count=1000):
            if client.type(key) == b"zset":
                named |= {m.decode() for m in re.findall(rb"p-\d{4}", key)}
        named_after = sorted(named)
        late = [
            keyed(topics.orders, order(10_000 + k, cid, 1_234_500, now + k))
            for k, cid in enumerate(named_after[:2])
        ]
        produce(settings, late)
        wait_for(
            lambda: events_applied(client, isolated.name) >= len(docs) + len(late),
            timeout=60,
            what="the late orders to be applied",
            diagnose=diagnose,
        )
        others = rng.sample([c for c in plain if c not in named], 3)
        erased = [*ODD_IDS, *named_after, *others]
        survivors = [c for c in customers if c not in erased]

        wait_for(lambda: outbox_empty(client, keys), timeout=60, what="the outbox to drain")
        wait_for(
            lambda: campaigns_drained(settings) and set(erased) <= receiver.seen(),
            timeout=120,
            what="the campaign consumer to act on the history",
            diagnose=diagnose,
        )
        # the scan sees everyone, in every kind of place the two components write ids to
        before = traces(client, settings.key_prefix, customers)
        assert set(before) == set(customers)
        kinds = {where.split(" of ")[0] for places in before.values() for where in places}
        assert {"key name", "hash field", "zset member", "list item"} <= kinds, kinds

        # -- the erasure requests, through Kafka like any other input --------------------------
        produce(settings, [keyed(topics.erasure, erasure(cid, now)) for cid in erased])

        def erasures_published() -> bool:
            gone = {
                m.json()["customer_id"]
                for m in read_topic(settings, topics.changes)
                if m.json()["to"] is None
            }
            return set(erased) <= gone

        wait_for(erasures_published, timeout=90, what="every erasure applied", diagnose=diagnose)
        wait_for(lambda: outbox_empty(client, keys), timeout=60, what="the outbox to drain")
        wait_for(
            lambda: campaigns_drained(settings),
            timeout=90,
            what="the campaign consumer to act on the erasures and their changes",
            diagnose=diagnose,
        )
        assert worker.alive and campaigns.alive, diagnose()

        left = traces(client, settings.key_prefix, erased)
        assert not left, "traces of erased customers:\n" + "\n".join(
            f"{cid!r}: {where}" for cid, places in left.items() for where in places
        )
        # the scan still sees everyone else
        assert set(traces(client, settings.key_prefix, survivors)) == set(survivors)
    finally:
        campaigns.stop(signal.SIGKILL)
        receiver.close()
        client.close()


def test_ledger_forget_drops_every_trace_of_the_customer(isolated: Isolated) -> None:
    """``Ledger.forget`` on a real Redis, after every kind of record the ledger writes."""
    prefix = isolated.settings().key_prefix
    gone, kept = ODD_IDS[0], "p-0001"

    async def run() -> None:
        r = connect(isolated.infra.redis_url)
        ledger = Ledger(r, CampaignKeys(prefix), remember_s=3600)
        try:
            for k, cid in enumerate((gone, kept)):
                assert await ledger.claim_first_order(cid, f"evt-{k}")
                for rule, variant in (("welcome", "small"), ("any_move", "a")):
                    event_id = f"evt-{rule}-{k}"
                    key = idempotency_key(rule, event_id)
                    await ledger.record_delivery(
                        Action(rule, cid, event_id, variant, key, b"{}"), cooldown_s=3600
                    )
                key = idempotency_key("any_move", f"evt-dead-{k}")
                await ledger.record_dead_letter(
                    Action("any_move", cid, f"evt-dead-{k}", "b", key, b"{}")
                )
                await ledger.record_moves(["any_move"], cid, "loyal", "at_risk")
            await ledger.forget(gone, ["welcome", "any_move"])
        finally:
            await r.aclose()

    asyncio.run(run())
    client = redis.Redis.from_url(isolated.infra.redis_url)
    try:
        found = traces(client, prefix, [gone, kept])
        assert gone not in found, found[gone]
        assert kept in found  # the other customer's records stay
        assert client.get(f"{prefix}cmp:first:{kept}") == b"evt-1"
        assert client.hget(f"{prefix}cmp:variant:any_move", kept) == b"a"
        assert client.exists(f"{prefix}cmp:cool:welcome:{kept}")
    finally:
        client.close()
