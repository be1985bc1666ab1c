"""`rfm demo` for ten demo minutes, played fast: the real CLI, worker, Kafka, Redis, API and
a headless Chromium.

Ten minutes at the default pace (6 shop hours a second) are 150 shop days; the test plays
them at 10 days a second. The demo's traffic is read back from its topics (what it really
sent), so the population and the money are checked against the data, not against the
generator. At the end: exactly the announced population, every segment of rfm-classic a
customer can land in populated, four or more F columns in the R x F grid, a CLV model with a
finite mean spend, one-time buyers' CLV bounded, and the dashboard's picture of that run.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
from collections import defaultdict
from decimal import Decimal
from pathlib import Path

import orjson
import pytest

from stream.config import load_settings
from stream.core.scoring import DAY_MS
from stream.demo import CONFIG, MARKER
from stream.demo_shop import Behaviour
from stream.namespace import Namespace
from stream.schemes import load_scheme
from stream.store.redis_store import open_store
from tests.api_support import ApiServer
from tests.conftest import Isolated
from tests.oracle import epoch_ms
from tests.support import WorkerProcess, read_topic, rfm_child, wait_for
from tests.test_dashboard_browser import DEADLINE_MS
from tests.test_dashboard_browser import browser_page as browser_page  # the fixture

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent
CUSTOMERS = 2000
PACE_DAYS = 10  # shop days a wall second in this test
SHOP_DAYS = 150  # ten minutes at the default pace of 6 shop hours a second
SCHEME = load_scheme("rfm-classic", 5)
REACHABLE = {r.id for r in SCHEME.rules} - {"unscored"}  # the catch-all holds no one who exists
TOKEN = "demo-" + "q7" * 12


def _cli(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "stream.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, f"rfm {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def _store_read(env: dict[str, str], what: str) -> object:
    async def run() -> object:
        store = open_store(load_settings(env))
        try:
            if what == "clock":
                return await store.event_clock()
            return await store.redis.get(f"{load_settings(env).key_prefix}{MARKER}")
        finally:
            await store.redis.aclose()

    return asyncio.run(run())


def test_ten_demo_minutes_tell_the_truth(
    isolated: Isolated, request: pytest.FixtureRequest
) -> None:
    from playwright.sync_api import Page, expect

    ns = Namespace(isolated.name)  # isolated.discard removes NAME.* topics and NAME:* keys
    config = isolated.config_file(CONFIG)
    base = {k: v for k, v in isolated.process_env().items() if k not in ns.env}
    env = {**base, **ns.env, "RFM_CONFIG": str(config)}  # what the demo prints to export

    demo = rfm_child(
        base,
        isolated.tmp / "demo.log",
        "demo",
        "--namespace",
        ns.name,
        "--pace",
        f"{PACE_DAYS}d",
        "--duration",
        str(SHOP_DAYS / PACE_DAYS),
    )
    try:
        assert demo.wait(timeout=100) == 0, demo.tail()
    finally:
        demo.stop(timeout=15)
    out = (isolated.tmp / "demo.log").read_text()
    assert f"RFM_TOPIC_PREFIX={ns.topic_prefix} RFM_KEY_PREFIX={ns.key_prefix}" in out
    assert f"rfm reset --namespace {ns.name}" in out
    marker = orjson.loads(_store_read(env, "marker"))  # type: ignore[arg-type]
    start = marker["start"]
    assert marker["customers"] == CUSTOMERS

    # what the demo sent, read back from its topics
    settings = load_settings(env)
    sent = [m.json() for m in read_topic(settings, settings.topic_prefix + "orders")]
    sent += [m.json() for m in read_topic(settings, settings.topic_prefix + "interactions")]
    last = max(epoch_ms(d["occurred_at"]) for d in sent)
    assert start + (SHOP_DAYS - 2) * DAY_MS <= last <= start + SHOP_DAYS * DAY_MS
    assert {d["customer_id"] for d in sent} == {f"c-{n:05d}" for n in range(CUSTOMERS)}

    # the demo stopped its worker when its time was up: one of ours applies the rest
    worker = WorkerProcess(env, isolated.tmp / "worker.log").start()
    try:
        wait_for(
            lambda: _store_read(env, "clock") == last,
            timeout=60,
            what="the worker to apply the demo's last event",
            diagnose=worker.tail,
        )
    finally:
        worker.stop(timeout=15)
    _cli(env, "refresh")
    fitted = _cli(env, "fit")
    assert "Gamma-Gamma" in fitted, fitted

    exported = [
        orjson.loads(line) for line in _cli(env, "export", "--format", "jsonl").splitlines()
    ]
    assert len(exported) == CUSTOMERS
    segments = {row["segment"] for row in exported}
    assert segments == REACHABLE, f"empty: {REACHABLE - segments}"
    f_columns = {row["scores"]["f"] for row in exported if row["scores"]["f"] is not None}
    assert len(f_columns) >= 4, f_columns

    # one-time buyers (one purchase day ever): CLV within what a new customer can buy in the
    # 12-month horizon, twice the shop's mean purchase rate at its mean order value at most
    days: dict[str, set[int]] = defaultdict(set)
    amounts: list[Decimal] = []
    for d in sent:
        if d["type"] == "order_completed":
            days[d["customer_id"]].add(epoch_ms(d["occurred_at"]) // DAY_MS)
            amounts.append(Decimal(d["amount"]))
    mean_order = sum(amounts, Decimal(0)) / len(amounts)
    bound = 2 * Decimal(str(Behaviour().rate_mean)) * mean_order
    clv = {
        row["customer_id"]: Decimal(row["prediction"]["clv"])
        for row in exported
        if row.get("prediction") and row["prediction"]["clv"] is not None
    }
    once = [c for c, d in days.items() if len(d) == 1]
    repeat = [c for c, d in days.items() if len(d) > 1]
    assert len(once) > 100 and all(c in clv for c in once)
    worst = max(once, key=lambda c: clv[c])
    assert clv[worst] <= bound, f"{worst}: CLV {clv[worst]} over {bound:.0f} TWD"
    mean_once = sum(clv[c] for c in once) / len(once)
    assert mean_once <= sum(clv[c] for c in repeat) / len(repeat)

    # the dashboard of that run
    # the browser only now: Playwright's sync API keeps an event loop running in this thread
    page = request.getfixturevalue("browser_page")
    assert isinstance(page, Page)
    with ApiServer(env, isolated.tmp / "api.log", TOKEN) as api, api.client() as http:
        model = http.get("/api/model").json()["model"]
        assert model["gamma_gamma"]["q"] > 1
        page.goto(api.url + "/")
        page.fill("#token", TOKEN)
        page.click("#login button[type=submit]")
        expect(page.locator("#status")).to_have_attribute(
            "data-state", "streaming", timeout=DEADLINE_MS
        )
        for seg in REACHABLE:
            expect(page.locator(f'#counts tr[data-segment="{seg}"]')).to_be_attached(
                timeout=DEADLINE_MS
            )
        expect(page.locator("#total")).to_have_text(f"{CUSTOMERS:,}", timeout=DEADLINE_MS)
        expect(page.locator("#clv-section")).to_be_visible(timeout=DEADLINE_MS)
        shot = isolated.tmp / "demo-dashboard.png"
        page.screenshot(path=str(shot), full_page=True)
        page.close()  # ends the live stream before the server stops
    out_dir = ROOT / "bench" / "out"
    out_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(shot, out_dir / "demo-dashboard.png")
    assert _cli(env, "reset", "--namespace", ns.name, "--yes").startswith("namespace")
