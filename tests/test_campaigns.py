"""Campaign actions (SPEC section 7) against a real broker, a real Redis and a real HTTP receiver.

`rfm campaigns` runs as a child process, exactly as deployed. The test plays the scorer (it
publishes SPEC section 6 change events and section 2 orders) and the marketing tool (a local
HTTP server that records every request and answers per path: ``/ok`` always 200, ``/flaky``
500 for the first three attempts of each Idempotency-Key then 200, ``/down`` always 500).
Waiting is on observable state (requests received, committed offsets), never on sleeps.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import signal
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from stream.config import Settings
from stream.kafka import client_options, ensure_topics
from stream.kafka.topics import Topics
from stream.process import Child
from stream.schemes import load_scheme
from tests.api_support import ApiServer
from tests.conftest import Isolated
from tests.ports import free_ports
from tests.support import (
    clock_swept,
    configuration_recorded,
    group_drained,
    produce,
    read_topic,
    wait_for,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

SECRET = b"s3cret-for-tests"


# -- the receiver ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Hit:
    path: str
    status: int
    key: str
    signature: str
    body: bytes
    at: int  # wall clock when the request arrived, epoch ms
    query: str = ""
    authorization: str = ""

    def json(self) -> dict[str, Any]:
        doc = orjson.loads(self.body)
        assert isinstance(doc, dict)
        return doc

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


class Receiver:
    """A real HTTP server on 127.0.0.1:<free port> recording every POST."""

    def __init__(self) -> None:
        self.hits: list[Hit] = []
        self.lock = threading.Lock()
        self.attempts: Counter[str] = Counter()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                key = self.headers.get("Idempotency-Key", "")
                path, _, query = self.path.partition("?")
                status = receiver.answer(path, key)
                arrived = int(time.time() * 1000)
                with receiver.lock:
                    receiver.hits.append(
                        Hit(
                            path,
                            status,
                            key,
                            self.headers.get("X-RFM-Signature", ""),
                            body,
                            arrived,
                            query,
                            self.headers.get("Authorization", ""),
                        )
                    )
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def answer(self, path: str, key: str) -> int:
        with self.lock:
            self.attempts[key] += 1
            attempt = self.attempts[key]
        if path == "/flaky":
            return 500 if attempt <= 3 else 200
        return 500 if path == "/down" else 200

    def url(self, path: str, *, userinfo: str = "", query: str = "") -> str:
        at = f"{userinfo}@" if userinfo else ""
        tail = f"?{query}" if query else ""
        return f"http://{at}127.0.0.1:{self.server.server_address[1]}{path}{tail}"

    def all(self) -> list[Hit]:
        with self.lock:
            return list(self.hits)

    def delivered(self) -> list[Hit]:
        return [h for h in self.all() if h.ok]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


# -- the consumer process ----------------------------------------------------------------------


class Campaigns(Child):
    """`rfm campaigns --rules FILE` as a child process; its log is kept for failure reports."""

    def __init__(self, iso: Isolated, rules: Path, extra_env: dict[str, str] | None = None) -> None:
        argv = [sys.executable, "-m", "stream.cli", "campaigns", "--rules", str(rules)]
        env = {**iso.process_env(), **(extra_env or {})}
        super().__init__("campaigns", argv, env, iso.tmp / "campaigns.log")
        self.rules = rules


@pytest.fixture
def start_campaigns(isolated: Isolated) -> Iterator[Callable[..., Campaigns]]:
    started: list[Campaigns] = []

    def start(rules: Path, extra_env: dict[str, str] | None = None) -> Campaigns:
        proc = Campaigns(isolated, rules, extra_env).start()
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop(signal.SIGKILL)


# -- helpers -----------------------------------------------------------------------------------


def rules_file(iso: Isolated, receiver: Receiver, rules: str) -> Path:
    """Shared webhook defaults (small backoff, short timeout) plus the test's rules."""
    path = iso.tmp / f"rules-{uuid.uuid4().hex[:6]}.toml"
    path.write_text(
        f"""
[webhook]
url = "{receiver.url("/ok")}"
secret = "{SECRET.decode()}"
timeout = "3s"
retries = 3
backoff = "50ms"
max_backoff = "200ms"
{rules}
""",
        encoding="utf-8",
    )
    return path


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def change(
    customer: str,
    seq: int,
    frm: str | None,
    to: str | None,
    cause: str = "clock",
    orders: int = 5,
    monetary: str = "1234.50",
) -> dict[str, Any]:
    return {
        "event_id": f"{customer}:{seq}",
        "customer_id": customer,
        "seq": seq,
        "from": frm,
        "to": to,
        "scores": {"r": 2, "f": 5, "m": 5, "i": None},
        "metrics": {
            "orders": orders,
            "monetary": monetary,
            "last_order_at": "2026-01-02T03:04:05.000Z",
            "interactions": 0,
        },
        "cause": cause,
        "thresholds_version": 3,
        "scheme": "rfm-classic",
        "at": now_iso(),
    }


def order(customer: str, order_id: str, amount: str, event_id: str | None = None) -> dict[str, Any]:
    return {
        "event_id": event_id or f"evt-{order_id}",
        "type": "order_completed",
        "order_id": order_id,
        "customer_id": customer,
        "amount": amount,
        "currency": "TWD",
        "occurred_at": now_iso(),
        "channel": "online",
    }


def publish(settings: Settings, topic: str, docs: list[dict[str, Any]]) -> None:
    produce(settings, [(topic, d["customer_id"].encode(), orjson.dumps(d)) for d in docs])


def prepare(iso: Isolated) -> tuple[Settings, Topics]:
    settings = iso.settings()
    asyncio.run(ensure_topics(settings))
    return settings, Topics(settings.topic_prefix)


def group(settings: Settings) -> str:
    return f"{settings.topic_prefix}campaigns"


async def _parts(settings: Settings, *topics: str) -> list[TopicPartition]:
    admin = AIOKafkaAdminClient(**client_options(settings))
    await admin.start()
    try:
        described = await admin.describe_topics(list(topics))
        return [
            TopicPartition(d["topic"], p["partition"])
            for d in described
            for p in d.get("partitions", [])
        ]
    finally:
        await admin.close()


def drained(settings: Settings) -> bool:
    """The campaigns group has committed every record now in its input topics."""
    topics = Topics(settings.topic_prefix)
    return group_drained(settings, group(settings), topics.changes, topics.orders, topics.erasure)


def rewind(settings: Settings, topic: str, errors: list[str]) -> bool:
    """Commit offset 0 for every partition of ``topic`` in the campaigns group.

    The broker accepts this only once the group is empty (the killed member's session has
    expired), so the caller polls until it succeeds; ``errors`` keeps the refusals.
    """

    async def run() -> bool:
        parts = await _parts(settings, topic)
        consumer = AIOKafkaConsumer(
            **client_options(settings), group_id=group(settings), enable_auto_commit=False
        )
        await consumer.start()
        try:
            consumer.assign(parts)
            await consumer.commit(dict.fromkeys(parts, 0))
            return True
        except Exception as exc:
            errors.append(f"{type(exc).__name__}: {exc}")
            return False
        finally:
            await consumer.stop()

    return asyncio.run(asyncio.wait_for(run(), 30))


@contextlib.contextmanager
def redis_of(iso: Isolated) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(iso.infra.redis_url, decode_responses=True)
    try:
        yield client
    finally:
        client.close()


def stats(iso: Isolated, rule: str) -> dict[str, int]:
    with redis_of(iso) as client:
        raw = client.hgetall(f"{iso.name}:cmp:stats:{rule}")
        return {str(k): int(v) for k, v in raw.items()}


def recorded_variants(iso: Isolated, rule: str) -> dict[str, str]:
    with redis_of(iso) as client:
        raw = client.hgetall(f"{iso.name}:cmp:variant:{rule}")
        return {str(k): str(v) for k, v in raw.items()}


def settle(settings: Settings, proc: Campaigns, what: str) -> None:
    wait_for(lambda: drained(settings), timeout=30, what=what, diagnose=proc.tail)
    assert proc.alive, proc.tail()


# -- the tests ---------------------------------------------------------------------------------


def test_move_to_at_risk_fires_one_signed_webhook(
    isolated: Isolated, receiver: Receiver, start_campaigns: Callable[..., Campaigns]
) -> None:
    settings, topics = prepare(isolated)
    rules = rules_file(
        isolated,
        receiver,
        """
[[rule]]
id = "win_back"
trigger = "segment_change"
from = "*"
to = "at_risk"
cause = ["clock"]
when = ["orders >= 3", 'monetary >= "1000.00"']
data = { coupon = "WINBACK" }
""",
    )
    proc = start_campaigns(rules)
    moved = change("c-1", 7, "champions", "at_risk")
    publish(
        settings,
        topics.changes,
        [
            moved,
            moved,  # at-least-once from the scorer: same event_id, must not fire twice
            change("c-2", 1, "champions", "at_risk", cause="order"),  # cause not listed
            change("c-3", 4, "champions", "at_risk", monetary="999.99"),  # below 1000.00
            change("c-4", 1, None, "at_risk"),  # first assignment: "*" needs a previous segment
            change("c-5", 2, "champions", "loyal"),  # another target
        ],
    )
    wait_for(receiver.delivered, timeout=30, what="the win-back webhook", diagnose=proc.tail)
    settle(settings, proc, "every change consumed and committed")

    [hit] = receiver.all()
    assert hit.ok and hit.path == "/ok"
    expected = "sha256=" + hmac.new(SECRET, hit.body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(hit.signature, expected)
    body = hit.json()
    campaign = body.pop("campaign")
    assert body == moved  # the change event itself is the body
    assert campaign == {
        "rule": "win_back",
        "variant": None,
        "data": {"coupon": "WINBACK"},
        "idempotency_key": hit.key,
    }
    assert hit.key.startswith("win_back.")
    counters = stats(isolated, "win_back")
    assert counters["delivered"] == 1
    assert counters["already_done"] == 1  # the duplicate was recognised, not re-sent


def test_flaky_receiver_gets_exactly_one_delivery_under_one_key(
    isolated: Isolated, receiver: Receiver, start_campaigns: Callable[..., Campaigns]
) -> None:
    settings, topics = prepare(isolated)
    rules = rules_file(
        isolated,
        receiver,
        f"""
[[rule]]
id = "win_back"
trigger = "segment_change"
to = "at_risk"
webhook = {{ url = "{receiver.url("/flaky")}" }}
""",
    )
    proc = start_campaigns(rules)
    publish(settings, topics.changes, [change("c-1", 3, "loyal", "at_risk")])
    wait_for(receiver.delivered, timeout=30, what="the eventual delivery", diagnose=proc.tail)
    settle(settings, proc, "the change committed")

    hits = receiver.all()
    assert [h.status for h in hits] == [500, 500, 500, 200]
    assert len({h.key for h in hits}) == 1
    assert len({h.body for h in hits}) == 1 and len({h.signature for h in hits}) == 1
    assert stats(isolated, "win_back")["delivered"] == 1
    assert read_topic(settings, topics.actions_dlq) == []


def test_receiver_that_never_recovers_ends_in_the_actions_dead_letter_topic(
    isolated: Isolated, receiver: Receiver, start_campaigns: Callable[..., Campaigns]
) -> None:
    settings, topics = prepare(isolated)
    rules = rules_file(
        isolated,
        receiver,
        f"""
[[rule]]
id = "win_back"
trigger = "segment_change"
to = "at_risk"
cooldown = "1h"
webhook = {{ url = "{receiver.url("/down")}", retries = 2 }}
""",
    )
    proc = start_campaigns(rules)
    publish(settings, topics.changes, [change("c-1", 3, "loyal", "at_risk")])
    dead = wait_for(
        lambda: read_topic(settings, topics.actions_dlq),
        timeout=30,
        what="a dead-lettered action",
        diagnose=proc.tail,
    )
    settle(settings, proc, "the change committed")

    hits = receiver.all()
    assert [h.status for h in hits] == [500, 500, 500]  # first attempt + 2 retries
    [record] = dead
    assert record.key == b"c-1"
    doc = record.json()
    assert doc["rule"] == "win_back"
    assert doc["event_id"] == "c-1:3"
    assert doc["idempotency_key"] == hits[0].key
    assert doc["attempts"] == 3
    assert "HTTP 500" in doc["error"]
    assert doc["url"] == receiver.url("/down")
    assert orjson.dumps(doc["body"]) == hits[0].body  # the exact signed body, ready to re-send
    assert stats(isolated, "win_back")["dead_lettered"] == 1
    with redis_of(isolated) as client:  # no delivery happened, so no cooldown started
        assert not client.exists(f"{isolated.name}:cmp:cool:win_back:c-1")


def test_no_credential_query_token_secret_or_payload_reaches_the_log(
    isolated: Isolated, receiver: Receiver, start_campaigns: Callable[..., Campaigns]
) -> None:
    """Webhook URLs carry credentials and a query token, as marketing tools' URLs do; one is
    delivered, one answers 500 until dead-lettered, one has nothing listening. Every line the
    consumer wrote is then read: none holds the user, the password, the query token, the
    signing secret, a signature or anything of a payload."""
    settings, topics = prepare(isolated)
    mark = uuid.uuid4().hex[:10]
    user, password, token = f"hookuser{mark}", f"hookpass{mark}", f"qtoken{mark}"
    coupon, customer = f"PAYLOAD{mark}", f"cust{mark}"
    userinfo, query = f"{user}:{password}", f"api_key={token}"
    [closed] = free_ports(1)  # nothing listens there
    nowhere = f"http://{userinfo}@127.0.0.1:{closed}/hook?{query}"
    rules = rules_file(
        isolated,
        receiver,
        f"""
[[rule]]
id = "win_back"
trigger = "segment_change"
to = "at_risk"
data = {{ coupon = "{coupon}" }}
webhook = {{ url = "{receiver.url("/ok", userinfo=userinfo, query=query)}" }}

[[rule]]
id = "farewell"
trigger = "segment_change"
to = "lost"
data = {{ coupon = "{coupon}" }}
webhook = {{ url = "{receiver.url("/down", userinfo=userinfo, query=query)}", retries = 1 }}

[[rule]]
id = "wake_up"
trigger = "segment_change"
to = "hibernating"
data = {{ coupon = "{coupon}" }}
webhook = {{ url = "{nowhere}", retries = 1 }}
""",
    )
    proc = start_campaigns(rules)
    publish(
        settings,
        topics.changes,
        [
            change(customer, 1, "loyal", "at_risk"),
            change(customer, 2, "at_risk", "lost"),
            change(customer, 3, "lost", "hibernating"),
        ],
    )
    wait_for(
        lambda: len(read_topic(settings, topics.actions_dlq)) >= 2,
        timeout=60,
        what="two dead-lettered actions",
        diagnose=proc.tail,
    )
    settle(settings, proc, "every change consumed and committed")

    [delivered] = receiver.delivered()
    basic = base64.b64encode(userinfo.encode()).decode()
    assert (delivered.authorization, delivered.query) == (f"Basic {basic}", query)  # both used
    signatures = [h.signature for h in receiver.all()]
    proc.stop()  # everything it had to say is written
    logs = sorted(isolated.tmp.glob("*.log"))
    text = "\n".join(path.read_text(encoding="utf-8", errors="replace") for path in logs)
    assert "delivered" in text and "dead-lettered" in text, text  # the scan reads real lines
    for secret in (user, password, token, SECRET.decode(), coupon, customer, *signatures):
        leaks = [line for line in text.splitlines() if secret in line]
        assert not leaks, f"{secret!r} in the log: {leaks[:3]}"
    for record in read_topic(settings, topics.actions_dlq):  # the dead letters name no secret
        doc = record.json()
        assert user not in doc["url"] and token not in doc["url"] and token not in doc["error"]


def test_cooldown_suppresses_a_second_trigger_for_the_same_customer_and_rule(
    isolated: Isolated, receiver: Receiver, start_campaigns: Callable[..., Campaigns]
) -> None:
    settings, topics = prepare(isolated)
    rules = rules_file(
        isolated,
        receiver,
        """
[[rule]]
id = "win_back"
trigger = "segment_change"
to = "at_risk"
cooldown = "1h"

[[rule]]
id = "audit"
trigger = "segment_change"
to = "at_risk"
""",
    )
    proc = start_campaigns(rules)
    publish(
        settings,
        topics.changes,
        [
            change("c-1", 1, "champions", "at_risk"),
            change("c-1", 2, "at_risk", "need_attention"),
            change("c-1", 3, "need_attention", "at_risk"),  # again, inside the cooldown
            change("c-2", 1, "loyal", "at_risk"),  # someone else: not cooling down
        ],
    )
    wait_for(
        lambda: len(receiver.delivered()) >= 5, timeout=30, what="deliveries", diagnose=proc.tail
    )
    settle(settings, proc, "every change committed")

    fired = Counter((h.json()["campaign"]["rule"], h.json()["customer_id"]) for h in receiver.all())
    assert fired == {
        ("win_back", "c-1"): 1,  # the second move to at_risk was suppressed
        ("win_back", "c-2"): 1,
        ("audit", "c-1"): 2,  # the cooldown is per (customer, rule)
        ("audit", "c-2"): 1,
    }
    assert stats(isolated, "win_back")["cooldown"] == 1
    with redis_of(isolated) as client:
        assert 0 < client.ttl(f"{isolated.name}:cmp:cool:win_back:c-1") <= 3600


AB_RULES = """
[[rule]]
id = "ab_test"
trigger = "segment_change"
from = "*"
to = "*"

[[rule.variant]]
name = "a"
weight = 1
data = { coupon = "A100" }

[[rule.variant]]
name = "b"
weight = 1
data = { coupon = "B200" }
"""


def test_ab_assignment_is_stable_across_a_restart(
    isolated: Isolated, receiver: Receiver, start_campaigns: Callable[..., Campaigns]
) -> None:
    settings, topics = prepare(isolated)
    rules = rules_file(isolated, receiver, AB_RULES)
    customers = [f"c-{n}" for n in range(10)]

    def variants_for(seq: int) -> dict[str, str]:
        return {
            h.json()["customer_id"]: h.json()["campaign"]["variant"]
            for h in receiver.delivered()
            if h.json()["seq"] == seq
        }

    first = start_campaigns(rules, {"PYTHONHASHSEED": "1"})
    publish(settings, topics.changes, [change(c, 1, "champions", "at_risk") for c in customers])
    wait_for(lambda: len(variants_for(1)) == 10, timeout=30, what="10 deliveries")
    before = variants_for(1)
    assert set(before.values()) == {"a", "b"}  # both arms are used
    assert recorded_variants(isolated, "ab_test") == before
    for hit in receiver.delivered():  # each arm carries its own data
        campaign = hit.json()["campaign"]
        assert campaign["data"] == {"coupon": "A100" if campaign["variant"] == "a" else "B200"}
    settle(settings, first, "first run committed")
    assert first.stop() == 0  # SIGTERM: a clean shutdown

    # Forget the recorded arms: the restarted process (another hash seed) must recompute the
    # very same ones from the stable hash, not merely read them back.
    with redis_of(isolated) as client:
        client.delete(f"{isolated.name}:cmp:variant:ab_test")
    second = start_campaigns(rules, {"PYTHONHASHSEED": "2"})
    publish(settings, topics.changes, [change(c, 2, "at_risk", "hibernating") for c in customers])
    wait_for(lambda: len(variants_for(2)) == 10, timeout=30, what="10 more deliveries")
    assert variants_for(2) == before
    assert recorded_variants(isolated, "ab_test") == before
    assert second.alive


def test_first_order_coupon_variant_follows_the_order_value(
    isolated: Isolated, receiver: Receiver, start_campaigns: Callable[..., Campaigns]
) -> None:
    settings, topics = prepare(isolated)
    rules = rules_file(
        isolated,
        receiver,
        """
[[rule]]
id = "first_order_coupon"
trigger = "order"
first_order = true
data = { valid_days = 30 }

[[rule.variant]]
name = "small"
below = "500"
data = { coupon = "AGAIN50" }

[[rule.variant]]
name = "large"
data = { coupon = "AGAIN150" }
""",
    )
    proc = start_campaigns(rules)
    small, large = order("c-small", "o-1", "120.00"), order("c-large", "o-2", "2400.00")
    refund = {**order("c-large", "o-2", "100.00", "evt-r"), "type": "order_refunded"}
    dollars = {**order("c-bad", "o-9", "5"), "currency": "USD"}  # wrong currency: invalid
    produce(
        settings,
        [
            (topics.orders, b"c-small", orjson.dumps(small)),
            (topics.orders, b"c-large", orjson.dumps(large)),
            (topics.orders, b"c-bad", b"{not json"),  # dead-lettered by the scorer; ignored here
            (topics.orders, b"c-bad", orjson.dumps(dollars)),
            (topics.orders, b"c-large", orjson.dumps(refund)),
            # the same first order re-sent under a new event id is still not a second "first"
            (topics.orders, b"c-large", orjson.dumps(order("c-large", "o-2", "2400.00", "evt-x"))),
            (topics.orders, b"c-small", orjson.dumps(order("c-small", "o-3", "900.00"))),
        ],
    )
    wait_for(lambda: len(receiver.delivered()) >= 2, timeout=30, what="two coupons")
    settle(settings, proc, "every order committed")

    hits = receiver.all()
    assert len(hits) == 2
    got = {h.json()["customer_id"]: h.json() for h in hits}
    assert got["c-small"]["order_id"] == "o-1"
    assert got["c-small"]["campaign"]["variant"] == "small"
    assert got["c-small"]["campaign"]["data"] == {"valid_days": 30, "coupon": "AGAIN50"}
    assert got["c-large"]["order_id"] == "o-2"
    assert got["c-large"]["campaign"]["variant"] == "large"
    assert recorded_variants(isolated, "first_order_coupon") == {
        "c-small": "small",
        "c-large": "large",
    }
    with redis_of(isolated) as client:
        assert client.get(f"{isolated.name}:cmp:first:c-small") == "evt-o-1"


def test_restart_from_uncommitted_offsets_never_refires_a_delivered_action(
    isolated: Isolated, receiver: Receiver, start_campaigns: Callable[..., Campaigns]
) -> None:
    settings, topics = prepare(isolated)
    rules = rules_file(
        isolated,
        receiver,
        """
[[rule]]
id = "win_back"
trigger = "segment_change"
to = "at_risk"
""",
    )
    first = start_campaigns(rules)
    publish(settings, topics.changes, [change("c-1", 1, "champions", "at_risk")])
    wait_for(lambda: stats(isolated, "win_back").get("delivered"), timeout=30, what="delivery")
    first.stop(signal.SIGKILL)  # right after the delivery record, maybe before the commit

    # Whatever the dead process committed, start the group again from the very beginning.
    refusals: list[str] = []
    wait_for(
        lambda: rewind(settings, topics.changes, refusals),
        timeout=40,
        interval=0.5,
        what="the killed member to leave the group so its offsets can be rewound",
        diagnose=lambda: "\n".join(refusals[-3:]),
    )
    second = start_campaigns(rules)
    publish(settings, topics.changes, [change("c-2", 1, "champions", "at_risk")])
    wait_for(lambda: len(receiver.delivered()) >= 2, timeout=40, what="c-2's delivery")
    settle(settings, second, "the rewound changes re-consumed and committed")

    by_customer = Counter(h.json()["customer_id"] for h in receiver.all())
    assert by_customer == {"c-1": 1, "c-2": 1}
    counters = stats(isolated, "win_back")
    assert counters["delivered"] == 2
    assert counters["already_done"] == 1  # the replayed c-1 change was recognised and skipped


def test_scorer_clock_move_to_at_risk_fires_exactly_one_verified_webhook(
    isolated: Isolated,
    receiver: Receiver,
    start_campaigns: Callable[..., Campaigns],
    start_worker: Callable[..., Any],
) -> None:
    """The whole chain: the real worker moves a customer by the clock alone, campaigns act."""
    settings, topics = prepare(isolated)
    config = isolated.config_file(
        '[scoring]\nmode = "fixed"\nclock = "event"\n[scoring.edges]\n'
        "r = [7, 14, 30, 60]\nf = [1, 2, 4, 8]\nm = [100, 500, 1000, 5000]\ni = [1, 2, 4, 8]\n"
    )
    worker = start_worker(config)
    rules = rules_file(
        isolated,
        receiver,
        """
[[rule]]
id = "win_back"
trigger = "segment_change"
to = "at_risk"
cause = ["clock"]
""",
    )
    proc = start_campaigns(rules)
    day = 86_400_000
    t0 = int(datetime.now(UTC).timestamp() * 1000) - 200 * day

    def buy(n: int, cid: str, at: int, amount: str) -> dict[str, Any]:
        return {**order(cid, f"o{n}", amount, f"e{n}"), "occurred_at": at}

    # F 3 and M 900 score 3 and 3: fm 3 with R 5 is potential_loyalist.
    publish(settings, topics.orders, [buy(n, "regular", t0 + n * day, "300.00") for n in range(3)])
    with redis_of(isolated) as client:
        wait_for(
            lambda: int(client.hget(f"{isolated.name}:stats", "accepted") or 0) >= 3,
            timeout=60,
            what="the first orders applied",
            diagnose=worker.tail,
        )
        wait_for(
            lambda: configuration_recorded(client, isolated.name),
            timeout=60,
            what="the configuration recorded (else the move may be a re-configuration's)",
            diagnose=worker.tail,
        )
    # Another customer's order 75 days later moves the event clock: R drops to 1 -> at_risk.
    publish(settings, topics.orders, [buy(10, "other", t0 + 75 * day, "50.00")])
    [hit] = wait_for(
        receiver.delivered,
        timeout=60,
        what="the webhook",
        diagnose=lambda: (
            f"{[m.json() for m in read_topic(settings, topics.changes)]}\n{proc.tail()}"
        ),
    )
    expected = "sha256=" + hmac.new(SECRET, hit.body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(hit.signature, expected)
    body = hit.json()
    assert (body["customer_id"], body["from"], body["to"], body["cause"]) == (
        "regular",
        "potential_loyalist",
        "at_risk",
        "clock",
    )

    # More clock: nothing moves 'regular' again, so nothing fires again.
    publish(settings, topics.orders, [buy(11, "other", t0 + 150 * day, "50.00")])
    with redis_of(isolated) as client:
        wait_for(
            lambda: (
                int(client.get(f"{isolated.name}:clock") or 0) >= t0 + 150 * day
                and clock_swept(client, isolated.name)
            ),
            timeout=60,
            what="the scorer to apply and sweep the later clock",
            diagnose=worker.tail,
        )
    settle(settings, proc, "every change consumed and committed")
    assert len(receiver.all()) == 1


def test_the_api_shows_what_the_receiver_got(
    isolated: Isolated, receiver: Receiver, start_campaigns: Callable[..., Campaigns]
) -> None:
    """`/api/deliveries` and `/api/campaigns` of the real `rfm api`, after the real
    `rfm campaigns` delivered to the receiver: every finished action once, with the outcome,
    rule, customer and arm the receiver saw, newest first; per rule and arm the deliveries
    and the later moves of the customers given that arm."""
    settings, topics = prepare(isolated)
    rules = rules_file(
        isolated,
        receiver,
        f"""
{AB_RULES.replace('to = "*"', 'to = "at_risk"')}
[[rule]]
id = "lapsed"
trigger = "segment_change"
to = "hibernating"
webhook = {{ url = "{receiver.url("/down")}", retries = 1 }}

[[rule]]
id = "flaky"
trigger = "segment_change"
to = "lost"
webhook = {{ url = "{receiver.url("/flaky")}" }}
""",
    )
    started = int(time.time() * 1000)
    proc = start_campaigns(rules)
    at_risk = [f"c-{n}" for n in range(8)]
    # later moves of customers given an arm: two up the scheme's order, one down (to "lost",
    # which fires the flaky rule)
    later = [(at_risk[0], "champions"), (at_risk[1], "loyal"), (at_risk[2], "lost")]
    publish(
        settings,
        topics.changes,
        [change(c, 1, "champions", "at_risk") for c in at_risk]
        + [change(c, 2, "at_risk", to) for c, to in later]
        + [change(c, 1, "about_to_sleep", "hibernating") for c in ("h-1", "h-2")]
        + [change("n-1", 1, None, "loyal")],  # matches no rule
    )
    settle(settings, proc, "every change acted on and committed")

    # What the receiver saw: per idempotency key, every attempt in arrival order.
    attempts: dict[str, list[Hit]] = {}
    for hit in receiver.all():
        attempts.setdefault(hit.key, []).append(hit)
    finished = {
        key: (hits[-1], "delivered" if hits[-1].ok else "dead_lettered")
        for key, hits in attempts.items()
    }
    for key, (_, outcome) in finished.items():  # a dead letter used every attempt
        assert outcome == "delivered" or len(attempts[key]) == 2, attempts[key]
    received = Counter(
        (
            last.json()["campaign"]["rule"],
            last.json()["customer_id"],
            last.json()["campaign"]["variant"],
            outcome,
        )
        for last, outcome in finished.values()
    )
    assert sum(received.values()) == len(at_risk) + 1 + 2, received

    with ApiServer(isolated.process_env(), isolated.tmp / "api.log") as api, api.client() as http:
        rows = http.get("/api/deliveries").json()["deliveries"]
        board = http.get("/api/campaigns").json()["rules"]
    done = int(time.time() * 1000)
    assert Counter((r["rule"], r["customer_id"], r["variant"], r["outcome"]) for r in rows) == (
        received
    )
    # Newest first: per customer (one partition, acted on in order) the reverse of the
    # order in which the receiver got each action's last attempt; each recorded after it.
    by_arrival = sorted(finished.values(), key=lambda f: f[0].at)
    for cid in {r["customer_id"] for r in rows}:
        listed = [r for r in rows if r["customer_id"] == cid]
        arrived = [last for last, _ in by_arrival if last.json()["customer_id"] == cid]
        assert [r["rule"] for r in listed] == [
            h.json()["campaign"]["rule"] for h in reversed(arrived)
        ], cid
        for row, last in zip(listed, reversed(arrived), strict=True):
            assert last.at <= row["at"] <= done and row["at"] >= started, (row, last.at)

    # Per rule and arm: deliveries counted from the receiver, moves from the changes sent.
    arm = {
        last.json()["customer_id"]: last.json()["campaign"]["variant"]
        for last, _ in finished.values()
        if last.json()["campaign"]["rule"] == "ab_test"
    }
    assert set(arm.values()) == {"a", "b"}, arm
    rank = load_scheme("rfm-classic", 5).ids.index
    arms = {
        name: {
            "delivered": sum(1 for v in arm.values() if v == name),
            "dead_lettered": 0,
            "up": sum(1 for c, to in later if arm[c] == name and rank(to) < rank("at_risk")),
            "down": sum(1 for c, to in later if arm[c] == name and rank(to) > rank("at_risk")),
        }
        for name in sorted(set(arm.values()))
    }
    assert board == {
        "ab_test": {"delivered": len(at_risk), "variants": arms},
        "lapsed": {"delivered": 0, "variants": {}},
        "flaky": {"delivered": 1, "variants": {}},
    }
