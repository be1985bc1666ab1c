"""`rfm api` (SPEC section 7): every endpoint against numbers computed from the events fed.

State is made through the real scorer code path in process (``Processor`` + ``refresh``,
Kafka replaced by a collecting output port); the API is the real `rfm api` child process,
queried over HTTP. Expected values come from ``tests.oracle`` (a batch recomputation from
the raw events that never reads Redis), applied step by step for the transition flow.
"""

from __future__ import annotations

import csv
import io
import random
import time
from collections import Counter
from collections.abc import Iterator
from decimal import ROUND_HALF_UP, Decimal
from typing import Any
from urllib.parse import quote

import httpx
import orjson
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from stream.core.scheme import Profile, Scheme
from stream.kafka.topics import Topics
from stream.schemes import load_scheme
from stream.shell.processor import wall_ms
from stream.store.keys import Keys
from tests.api_support import (
    ApiServer,
    erasure,
    free_port,
    interaction,
    order,
    refund,
    score_events,
)
from tests.conftest import Isolated
from tests.oracle import Expected, aggregates, recompute, replay

pytestmark = pytest.mark.integration

TOKEN = "tok-" + "x7" * 16
DAY = 86_400_000
CENT = Decimal("0.01")
CHANNELS = ("online", "pos", "app", "social", "marketplace")
# Untrusted ids: CJK, braces, colons, spaces, slashes, query/fragment marks, formulas, emoji.
ODD_IDS = ("客戶 {1}:x", "=cmd", "+SUM(A1)", "a/b?c#d%e f", "..", "😀 emoji")
ERASED = "c-003"


def dataset(now: int, seed: int = 7) -> tuple[list[Any], list[Any]]:
    """Two phases of (topic, event): history, then refunds, an erasure and a late order."""
    topics_ = Topics("")  # names are prefixed by the caller
    rng = random.Random(seed)
    first: list[tuple[str, dict[str, Any]]] = []
    n = 0
    orders_of: dict[str, list[tuple[str, int]]] = {}
    ids = [f"c-{k:03d}" for k in range(60)] + list(ODD_IDS[:-1])
    for cid in ids:
        for _ in range(rng.randint(1, 6) if cid.startswith("c-") else 2):
            minor = rng.randint(100, 500_000)
            at = now - rng.randint(1, 200 * DAY)
            first.append((topics_.orders, order(n, cid, minor, at, rng.choice(CHANNELS))))
            orders_of.setdefault(cid, []).append((f"o-{n}", minor))
            n += 1
    for cid in [*(f"fan-{k}" for k in range(5)), ODD_IDS[-1], "c-010", "c-011"]:
        for _ in range(rng.randint(1, 4)):
            first.append(
                (topics_.interactions, interaction(n, cid, now - rng.randint(1, 90 * DAY)))
            )
            n += 1
    second: list[tuple[str, dict[str, Any]]] = []
    oid, minor = orders_of["c-001"][0]
    second.append((topics_.orders, refund(n, oid, "c-001", minor // 3 or 1, now, full=False)))
    oid, minor = orders_of["c-002"][0]
    second.append((topics_.orders, refund(n + 1, oid, "c-002", minor, now, full=True)))
    second.append((topics_.erasure, erasure(ERASED, now)))
    second.append((topics_.orders, order(n + 2, "c-004", 900_000, now, "app")))
    return first, second


def prefixed(prefix: str, events: list[Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(prefix + topic, e) for topic, e in events]


def money(d: Decimal) -> str:
    return str(d.quantize(CENT, rounding=ROUND_HALF_UP))


def quantile_edges(values: list[Any], buckets: int = 5) -> list[Any]:
    """SPEC section 4: ``t_k = v(ceil(k*N/B))`` for k = 1..B-1."""
    ordered = sorted(values)
    return [ordered[-(-k * len(ordered) // buckets) - 1] for k in range(1, buckets)]


def unscored_segments(events: list[Any], scheme: Scheme) -> dict[str, str]:
    """Every customer's segment before any threshold refresh, from the raw events.

    No population has edges yet, so each score present is ``1 + #{k : v > t_k}`` = 1
    (SPEC section 4 with no ``t_k``); the scheme's rules are evaluated the literal way, as
    ``tests.oracle`` does. The dataset's events all lie inside the 365-day window.
    """
    customers, _ = replay(events)
    out: dict[str, str] = {}
    for cid, c in customers.items():
        buyer, fan = c.last_order_at is not None, c.last_interaction_at is not None
        profile = Profile(
            r=1 if buyer else None,
            f=1 if buyer else None,
            m=1 if buyer else None,
            i=1 if fan else None,
            orders=sum(1 for o in c.orders.values() if not o.full),
            has_orders=buyer,
            has_interactions=fan,
        )
        out[cid] = next(rule.id for rule in scheme.rules if rule.matches(profile))
    return out


def expected_moves(steps: list[dict[str, str]]) -> Counter[tuple[str | None, str | None]]:
    """The (from, to) moves between consecutive per-customer segment snapshots, the first
    snapshot reached from nothing (``from`` None); a customer gone from a snapshot moved
    to None (erased)."""
    moves: Counter[tuple[str | None, str | None]] = Counter()
    before: dict[str, str] = {}
    for after in steps:
        for cid in before.keys() | after.keys():
            a, b = before.get(cid), after.get(cid)
            if a != b:
                moves[(a, b)] += 1
        before = after
    return moves


def sse_counts(lines: Iterator[str], within: float = 30.0) -> dict[str, Any]:
    """The next ``counts`` event's data from a text/event-stream, pushed within ``within``
    seconds (the server's keep-alive comments every 15 s keep the read itself from timing
    out, so the deadline is checked here)."""
    deadline = time.monotonic() + within
    name, data = "", ""
    for line in lines:
        if time.monotonic() > deadline:
            raise AssertionError(f"no counts event pushed within {within:.0f}s")
        if line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:"):
            data = line[5:].strip()
        elif line == "" and name == "counts" and data:
            return dict(orjson.loads(data))
    raise AssertionError("the live stream ended")


def test_every_endpoint_agrees_with_the_events_fed(isolated: Isolated) -> None:
    settings = isolated.settings()
    prefix = settings.topic_prefix
    first, second = dataset(wall_ms() - 60_000)
    changes = score_events(settings, prefixed(prefix, first))
    changes += score_events(settings, prefixed(prefix, second), then_refresh=True)

    scheme = load_scheme(settings.scoring.scheme, settings.scoring.buckets)
    expected: dict[str, Expected] = recompute([e for _, e in first + second], scheme)
    assert ERASED not in expected and set(ODD_IDS) <= set(expected)
    by_segment: dict[str, list[Expected]] = {}
    for want in expected.values():
        by_segment.setdefault(want.segment, []).append(want)

    with (
        ApiServer(isolated.process_env(), isolated.tmp / "api.log", TOKEN) as api,
        api.client() as http,
    ):
        # -- auth: every data path needs the token; the probe and the static shell do not --
        guarded = [
            "/metrics",
            "/api/segments",
            "/api/grid",
            "/api/transitions",
            "/api/report",
            "/api/customers/c-001",
            "/api/customers?id=c-001",
            "/api/thresholds",
            "/api/export",
            "/api/live",
            "/api/deliveries",
            "/api/campaigns",
        ]
        with httpx.Client(base_url=api.url, timeout=30) as anon:
            for path in guarded:
                assert anon.get(path).status_code == 401, path
                wrong = anon.get(path, headers={"Authorization": f"Bearer {TOKEN}x"})
                assert wrong.status_code == 401, path
                assert anon.get(path, headers={"Authorization": TOKEN}).status_code == 401
            assert anon.get("/healthz").json() == {"status": "ok"}
            page = anon.get("/")
            assert page.status_code == 200 and "text/html" in page.headers["content-type"]
            assert anon.get("/static/app.js").status_code == 200
            assert anon.get("/healthz", headers={"Host": "evil.example"}).status_code == 421

        # -- live counts -----------------------------------------------------------------
        segments = http.get("/api/segments").json()
        counts = {s["id"]: s["customers"] for s in segments["segments"]}
        assert {k: v for k, v in counts.items() if v} == {
            seg: len(rows) for seg, rows in by_segment.items()
        }
        assert segments["total"] == len(expected)
        assert [s["id"] for s in segments["segments"]][: len(scheme.ids)] == list(scheme.ids)
        champions = next(s for s in segments["segments"] if s["id"] == "champions")
        assert champions["name"] == {"en": "Champions", "zh-TW": "冠軍顧客"}

        # -- segment report: money as exact decimal strings ----------------------------------
        report = http.get("/api/report").json()
        assert report["currency"] == "TWD"
        rows = {r["id"]: r for r in report["segments"]}
        for seg, members in by_segment.items():
            revenue = sum((w.monetary for w in members), Decimal(0))
            orders = sum(w.orders for w in members)
            channels = Counter(ch for w in members for ch in w.channels)
            row = rows[seg]
            assert row["customers"] == len(members), seg
            assert row["orders"] == orders, seg
            assert row["revenue"] == money(revenue), seg
            assert row["average_order_value"] == (money(revenue / orders) if orders else None)
            assert row["average_monetary"] == money(revenue / len(members)), seg
            assert row["channels"] == dict(channels), seg
        for seg in set(rows) - set(by_segment):
            assert rows[seg]["customers"] == 0 and rows[seg]["revenue"] == "0.00"
        all_revenue = sum((w.monetary for w in expected.values()), Decimal(0))
        all_orders = sum(w.orders for w in expected.values())
        assert report["total"] == {
            "customers": len(expected),
            "orders": all_orders,
            "revenue": money(all_revenue),
            "average_order_value": money(all_revenue / all_orders),
            "average_monetary": money(all_revenue / len(expected)),
        }

        # -- R x F grid ----------------------------------------------------------------------
        grid = http.get("/api/grid").json()
        _, cells = aggregates(expected)
        assert grid["f"] == [1, 2, 3, 4, 5] and [r["r"] for r in grid["rows"]] == [5, 4, 3, 2, 1]
        got = {
            f"{r['r']}:{f}": n
            for r in grid["rows"]
            for f, n in zip(grid["f"], r["customers"], strict=True)
        }
        assert {k: v for k, v in got.items() if v} == cells
        assert grid["total"] == sum(cells.values()) and grid["off_scale"] == 0

        # -- transitions: each customer's segment after each step, recomputed from the events --
        # Step 1 (history) and step 2 (refunds, erasure, a late order) are scored before any
        # threshold exists; the refresh then takes everyone to the oracle's final segment.
        steps = [
            unscored_segments([e for _, e in first], scheme),
            unscored_segments([e for _, e in first + second], scheme),
            {cid: want.segment for cid, want in expected.items()},
        ]
        moves = expected_moves(steps)
        assert len(moves) > len(scheme.ids) // 2, moves  # the data moves people around
        flow = http.get("/api/transitions").json()
        assert {(m["from"], m["to"]): m["count"] for m in flow["moves"]} == dict(moves)
        assert flow["total"] == sum(moves.values())
        assert Counter((c["from"], c["to"]) for c in changes) == moves  # what was published
        firsts = sum(m["count"] for m in flow["moves"] if m["from"] is None)
        assert firsts == len(expected) + 1  # everyone once, the erased customer included
        assert sum(m["count"] for m in flow["moves"] if m["to"] is None) == 1  # the erasure
        long_ago = http.get(
            "/api/transitions", params={"from": "2020-01-01T00:00:00Z", "to": "2020-01-02T00:00Z"}
        ).json()
        assert long_ago["total"] == 0 and long_ago["from"] == "2020-01-01T00:00:00.000Z"
        # "+08:00" typed into a URL unencoded arrives as a space: still understood
        taipei = http.get("/api/transitions?from=2020-01-01T08:00:00+08:00&to=2020-01-01T09:00:00Z")
        assert taipei.status_code == 200 and taipei.json()["from"] == "2020-01-01T00:00:00.000Z"
        for bad in (
            {"from": "yesterday"},
            {"from": "2020-01-01T00:00:00"},  # no offset: ambiguous
            {"from": "2020-01-02T00:00:00Z", "to": "2020-01-01T00:00:00Z"},
            {"from": "2000-01-01T00:00:00Z", "to": "2020-01-01T00:00:00Z"},  # beyond 400 days
        ):
            assert http.get("/api/transitions", params=bad).status_code == 400, bad

        # -- customer lookup: untrusted ids, URL-encoded ----------------------------------
        for cid in ODD_IDS:
            by_path = http.get("/api/customers/" + quote(cid, safe=""))
            by_query = http.get("/api/customers", params={"id": cid})
            if cid != "..":  # a path segment ".." is resolved away by clients: use ?id=
                assert by_path.status_code == 200, (cid, by_path.text)
                assert by_path.json() == by_query.json()
            doc, want = by_query.json(), expected[cid]
            assert doc["customer_id"] == cid and doc["segment"] == want.segment
            assert doc["scores"] == want.scores
            assert doc["metrics"]["orders"] == want.orders
            assert doc["metrics"]["monetary"] == money(want.monetary)
            assert doc["metrics"]["interactions"] == want.interactions
            history = doc["recent_changes"]
            assert [h["seq"] for h in history] == list(range(doc["seq"], 0, -1))
            assert history[0]["to"] == want.segment and history[-1]["from"] is None
        # the history is a list of its own, so the customer's hash keeps Redis's compact
        # encoding; the list holds every change the lookup showed
        keys = Keys(f"{isolated.name}:")
        raw = redis.Redis.from_url(isolated.infra.redis_url)
        try:
            for cid in ODD_IDS:
                assert raw.object("encoding", keys.customer(cid)) == b"listpack", cid
                seq = http.get("/api/customers", params={"id": cid}).json()["seq"]
                assert raw.llen(keys.history(cid)) == seq, cid
        finally:
            raw.close()
        lookup = http.get("/api/customers/" + quote("客戶 {1}:x", safe="")).json()
        assert lookup["segment_name"]["en"] == scheme.rule(lookup["segment"]).name.en
        for missing in (ERASED, "nobody", "x" * 129, "客戶 {1}:"):
            assert http.get("/api/customers/" + quote(missing, safe="")).status_code == 404
        assert http.get("/api/customers").status_code == 400

        # -- campaign feeds: no `rfm campaigns` ran, so nothing was delivered ----------------
        # (what they show once it runs: tests/test_campaigns.py, against a real receiver)
        assert http.get("/api/deliveries").json() == {"deliveries": []}
        assert http.get("/api/campaigns").json()["rules"] == {}

        # -- thresholds: the published edges are the population quantiles ------------------
        th = http.get("/api/thresholds").json()
        assert th["mode"] == "quantile" and th["current"]["version"] == 1
        buyers = [w for w in expected.values() if w.last_order_at is not None]
        assert th["current"]["population"]["r"] == len(buyers)
        assert th["current"]["edges"]["f"] == quantile_edges([w.orders for w in buyers])
        assert th["current"]["edges"]["m"] == [
            money(m) for m in quantile_edges([w.monetary for w in buyers])
        ]
        assert len(th["current"]["edges"]["r"]) == 4 and th["settled"]["version"] == 1

        # -- Prometheus ------------------------------------------------------------------
        scrape = http.get("/metrics")
        assert scrape.headers["content-type"].startswith("text/plain")
        families = {f.name: f for f in text_string_to_metric_families(scrape.text)}
        gauge = {s.labels["segment"]: s.value for s in families["rfm_segment_customers"].samples}
        assert gauge == {k: float(v) for k, v in counts.items()}
        total_events = len(first) + len(second)
        assert families["rfm_events_accepted"].samples[0].value == total_events
        assert families["rfm_events_rejected"].samples[0].value == 0
        assert families["rfm_segment_changes"].samples[0].value == len(changes)
        assert families["rfm_thresholds_version"].samples[0].value == 1

        # -- export: every customer, formulas neutralised; a segment's members exactly -----
        exported = http.get("/api/export", params={"format": "csv"})
        assert exported.headers["content-type"].startswith("text/csv")
        table = list(csv.DictReader(io.StringIO(exported.text)))
        neutral = {"=cmd": "'=cmd", "+SUM(A1)": "'+SUM(A1)"}
        assert sorted(r["customer_id"] for r in table) == sorted(
            neutral.get(cid, cid) for cid in expected
        )
        raw_id = {v: k for k, v in neutral.items()}
        for r in table:
            want = expected[raw_id.get(r["customer_id"], r["customer_id"])]
            assert r["segment"] == want.segment and r["monetary"] == money(want.monetary)
        assert "\n=cmd" not in exported.text and "\n+SUM" not in exported.text
        biggest = max(by_segment, key=lambda s: len(by_segment[s]))
        jsonl = http.get("/api/export", params={"segment": biggest, "format": "jsonl"})
        lines = [orjson.loads(line) for line in jsonl.text.splitlines()]
        assert sorted(x["customer_id"] for x in lines) == sorted(
            cid for cid, w in expected.items() if w.segment == biggest
        )
        for x in lines:
            want = expected[x["customer_id"]]
            assert x["scores"] == want.scores and x["metrics"]["orders"] == want.orders
        assert http.get("/api/export", params={"format": "xml"}).status_code == 400
        assert http.get("/api/export", params={"segment": "a b"}).status_code == 400

        # -- live: pushed on change, within a second or so --------------------------------
        with http.stream("GET", "/api/live") as live:
            assert live.headers["content-type"].startswith("text/event-stream")
            stream = live.iter_lines()
            now = sse_counts(stream)
            assert now == {"counts": {k: v for k, v in counts.items() if v}, "total": len(expected)}
            newcomer = order(10_000, "late-arrival", 12_345, wall_ms() - 1000)
            score_events(settings, [(settings.topic_prefix + "orders", newcomer)])
            fed = time.monotonic()
            pushed = sse_counts(stream)
            lag = time.monotonic() - fed
            assert pushed["total"] == len(expected) + 1
            assert lag < 2.5, f"the change took {lag:.2f}s to be pushed"


def test_healthz_and_reads_answer_503_while_redis_is_unreachable(isolated: Isolated) -> None:
    env = isolated.process_env()
    env["RFM_REDIS_URL"] = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    with ApiServer(env, isolated.tmp / "api.log") as api, api.client() as http:
        health = http.get("/healthz")
        assert health.status_code == 503 and health.json()["status"] == "unavailable"
        assert http.get("/api/segments").status_code == 503
        assert http.get("/").status_code == 200  # the shell still loads and can say so


@pytest.mark.timeout(300)
def test_export_of_100k_customers_streams_in_constant_memory(isolated: Isolated) -> None:
    settings = isolated.settings()
    customers = 100_000
    now = wall_ms() - 60_000
    rng = random.Random(11)
    events = [
        (
            settings.topic_prefix + "orders",
            order(k, f"m-{k:06d}", rng.randint(100, 900_000), now - rng.randint(1, 300 * DAY)),
        )
        for k in range(customers)
    ]
    started = time.perf_counter()
    score_events(settings, events, batch=5000)
    populated = time.perf_counter() - started

    with ApiServer(isolated.process_env(), isolated.tmp / "api.log") as api, api.client() as http:
        assert http.get("/api/segments").json()["total"] == customers
        before = api.peak_rss_kib()
        seen: set[str] = set()
        lines = 0
        started = time.perf_counter()
        with http.stream("GET", "/api/export", params={"format": "csv"}) as r:
            assert r.status_code == 200
            for line in r.iter_lines():
                if line and not line.startswith("customer_id,"):
                    seen.add(line.split(",", 1)[0])
                    lines += 1
        took = time.perf_counter() - started
        grew_mib = (api.peak_rss_kib() - before) / 1024
    print(
        f"[api export] populated {customers} in {populated:.1f}s; exported {lines} lines in"
        f" {took:.1f}s; server peak RSS grew {grew_mib:.1f} MiB"
    )
    # SCAN returns every customer at least once (a rehash may repeat one): count distinct ids.
    assert len(seen) == customers and lines - customers < customers // 100
    assert grew_mib < 30, f"the server's peak RSS grew {grew_mib:.1f} MiB while streaming"
