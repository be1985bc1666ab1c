"""The campaign uplift panel in headless Chromium, fed by the real `rfm api` over Redis.

The uplift records are written through the campaign consumer's own ledger (assignments,
then orders counted against them), so the panel shows what a running `rfm campaigns`
would have left; every figure on screen is compared with the API's answer. The screenshot
goes to bench/out/dashboard-uplift.png.
"""

from __future__ import annotations

import asyncio
import csv
import io
import random
import shutil
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import httpx
import pytest
import redis.asyncio as aioredis

from consumers.campaigns.ledger import CampaignKeys
from consumers.campaigns.rules import CONTROL, TREATED, CampaignRule, ChangeTrigger, Webhook
from consumers.campaigns.uplift_ledger import Assignment, UpliftLedger
from consumers.campaigns.variants import held_out
from stream.shell.processor import wall_ms
from tests.api_support import ApiServer, order, score_events
from tests.conftest import Isolated
from tests.test_dashboard_browser import DEADLINE_MS, ROOT, TOKEN, browser_page  # noqa: F401

pytestmark = pytest.mark.integration

RULE = CampaignRule(
    id="win_back",
    trigger=ChangeTrigger(),
    webhook=Webhook("http://127.0.0.1:9/hook", b"k"),
    holdout=Decimal("0.3"),
    uplift_window_s=30 * 86_400.0,
)
SEGMENTS = ("at_risk", "hibernating")


def seed(isolated: Isolated) -> None:
    """60 customers assigned a day ago; the treated buy more, in minor units."""

    async def run() -> None:
        redis = aioredis.Redis.from_url(isolated.infra.redis_url)
        ledger = UpliftLedger(redis, CampaignKeys(f"{isolated.name}:"), [RULE], 86_400)
        draw = random.Random(32)
        now = wall_ms()
        try:
            await ledger.declare()
            for n in range(60):
                cid = f"cust-{n:02d}"
                arm = CONTROL if held_out(RULE, cid) else TREATED
                at = now - 86_400_000
                await ledger.assign(
                    RULE.id, cid, Assignment(arm, at, SEGMENTS[n % 2]), f"a{n}", "m"
                )
                for k in range(draw.choice([0, 1, 1, 2] if arm == TREATED else [0, 0, 1])):
                    minor = draw.randrange(5_000, 90_000)
                    await ledger.count(cid, f"e{n}-{k}", "c", str(minor), at + 1000, f"o{n}-{k}")
                await ledger.count(cid, f"m{n}", "m", "at_risk>loyal", at + 2000)
        finally:
            await redis.aclose()

    with ThreadPoolExecutor(1) as pool:  # playwright's sync API holds this thread's loop
        pool.submit(asyncio.run, run()).result()


def test_the_uplift_panel_shows_the_report(
    isolated: Isolated,
    browser_page: object,  # noqa: F811
) -> None:
    from playwright.sync_api import Page, expect

    page = browser_page
    assert isinstance(page, Page)
    settings = isolated.settings()
    orders = settings.topic_prefix + "orders"
    score_events(
        settings, [(orders, order(k, f"shop-{k}", 1_000, wall_ms() - 60_000)) for k in range(5)]
    )
    seed(isolated)

    with ApiServer(isolated.process_env(), isolated.tmp / "api.log", TOKEN) as api:
        assert httpx.get(f"{api.url}/api/uplift").status_code == 401  # guarded like the rest
        with api.client() as http:
            doc = http.get("/api/uplift").json()
            csv_text = http.get("/api/uplift", params={"format": "csv"}).text
        [rule] = doc["rules"]
        assert rule["rule"] == "win_back" and rule["holdout"] == "0.3"
        rows = rule["rows"]
        assert {r["segment"] for r in rows} == {"*", *SEGMENTS}

        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(f"{api.url}/#token={TOKEN}")
        expect(page.locator("#uplift-section")).to_be_visible(timeout=DEADLINE_MS)
        box = page.locator('.uplift-rule[data-rule="win_back"]')
        expect(box.locator("tbody tr")).to_have_count(len(rows), timeout=DEADLINE_MS)
        expect(box.locator("h3")).to_contain_text("hold-out 30.0%")
        expect(box.locator("h3")).to_contain_text("30 days")
        for row in rows:
            line = box.locator(f'tr[data-arm="{row["arm"]}"][data-segment="{row["segment"]}"]')
            expect(line.locator("td.customers")).to_have_text(str(row["customers"]))
            expect(line.locator("td.revenue")).to_have_text(
                f"{Decimal(row['revenue_per_customer']):,}"
            )
            expect(line.locator("td.moves")).to_have_text(
                f"{row['moves_up']} / {row['moves_down']}"
            )
            versus = row["vs_control"]
            if versus is None:
                expect(line.locator("td.diff")).to_have_text("")
                continue
            low, high = versus["revenue_per_customer_interval"]
            expect(line.locator("td.diff")).to_contain_text(f"({_signed(low)} … {_signed(high)})")

        # the CSV button downloads what the API's CSV holds, with the token
        with page.expect_download(timeout=DEADLINE_MS) as download:
            page.click("#uplift-csv")
        saved = download.value.path()
        got = list(csv.reader(io.StringIO(saved.read_text(encoding="utf-8"))))
        assert got == list(csv.reader(io.StringIO(csv_text)))

        page.click('button[data-lang="zh-TW"]')
        expect(page.locator("#uplift-title")).to_have_text("行銷活動成效")
        page.click('button[data-lang="en"]')
        page.locator("#uplift-section").scroll_into_view_if_needed()
        shot = isolated.tmp / "dashboard-uplift.png"
        page.locator("#uplift-section").screenshot(path=str(shot))
        out = ROOT / "bench" / "out"
        out.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, out / "dashboard-uplift.png")
        assert not errors, errors
        page.close()


def _signed(text: str) -> str:
    """As the panel shows an amount: a sign, then digits grouped by thousands."""
    value = Decimal(text)
    return f"{'-' if value < 0 else '+'}{abs(value):,}"
