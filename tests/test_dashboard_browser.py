"""The dashboard in a real headless Chromium (Debian's, driven by Playwright): it shows what
the API says, and a segment count moves on screen, without a reload, when events arrive.

Chromium comes from ``apt-get install chromium`` (scripts/bootstrap); Playwright's own
browser download is never used. Waits are DOM conditions with deadlines, never sleeps.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from stream.shell.processor import wall_ms
from tests.api_support import ApiServer, interaction, order, score_events
from tests.conftest import Isolated

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "dash-" + "k3" * 12
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DEADLINE_MS = 10_000
ODD_IDS = ("客戶 {1}:x", "walk-in/1?#", "<b>😀</b>")  # untrusted: shown as text, looked up exactly


def chromium() -> str:
    for candidate in (
        "/usr/bin/chromium",
        shutil.which("chromium"),
        shutil.which("chromium-browser"),
    ):
        if candidate and Path(candidate).exists():
            return candidate
    pytest.skip("chromium is missing: scripts/bootstrap installs Debian's (apt-get chromium)")


@pytest.fixture
def browser_page(tmp_path: Path) -> Iterator[object]:
    from playwright import sync_api  # a test dependency: installed with the project's extras

    executable = chromium()
    with (
        tempfile.TemporaryDirectory(dir=tmp_path) as profile,
        sync_api.sync_playwright() as pw,
    ):
        context = pw.chromium.launch_persistent_context(
            profile,
            executable_path=executable,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 1000},
            locale="en-US",
        )
        try:
            yield context.new_page()
        finally:
            context.close()


def test_dashboard_shows_api_counts_and_updates_live(
    isolated: Isolated, browser_page: object
) -> None:
    from playwright.sync_api import Page, expect

    page = browser_page
    assert isinstance(page, Page)
    settings = isolated.settings()
    orders_topic = settings.topic_prefix + "orders"
    now = wall_ms() - 60_000
    history = [
        (orders_topic, order(k, f"shop-{k % 25:02d}", 1_000 + 137 * k, now - k * 3_600_000, ch))
        for k, ch in zip(range(60), ["online", "pos", "app"] * 20, strict=True)
    ]
    history += [
        (settings.topic_prefix + "interactions", interaction(100 + k, f"fan-{k}", now))
        for k in range(4)
    ]
    # repeat buyers with varied rhythms, so a CLV model can be fitted for the chart
    day = 86_400_000
    history += [
        (orders_topic, order(200 + 10 * k + n, f"regular-{k}", 900 + 50 * k, at, "online"))
        for k in range(30)
        for n in range(k % 4 + 1)
        if (at := now - (k % 9 + 2) * 30 * day + n * (k % 5 + 1) * 9 * day) < now
    ]
    score_events(settings, history, then_refresh=True, then_fit=True)

    server = ApiServer(isolated.process_env(), isolated.tmp / "api.log", TOKEN)
    with server as api, api.client() as http:
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(api.url + "/")
        # the shell asks for the token, then opens the board
        expect(page.locator("#login")).to_be_visible(timeout=DEADLINE_MS)
        page.fill("#token", TOKEN)
        page.click("#login button[type=submit]")
        expect(page.locator("#board")).to_be_visible(timeout=DEADLINE_MS)
        expect(page.locator("#status")).to_have_attribute(
            "data-state", "streaming", timeout=DEADLINE_MS
        )

        segments = http.get("/api/segments").json()
        for s in segments["segments"]:
            row = page.locator(f'#counts tr[data-segment="{s["id"]}"]')
            expect(row.locator("td.name")).to_have_text(s["name"]["en"], timeout=DEADLINE_MS)
            expect(row.locator("td.n")).to_have_text(f"{s['customers']:,}", timeout=DEADLINE_MS)
        expect(page.locator("#total")).to_have_text(f"{segments['total']:,}")
        report_rows = page.locator("#report tbody tr")
        expect(report_rows).to_have_count(len(segments["segments"]), timeout=DEADLINE_MS)
        expect(page.locator("#grid tbody tr")).to_have_count(5, timeout=DEADLINE_MS)
        expect(page.locator("#flow th").first).to_be_attached(timeout=DEADLINE_MS)
        # the predicted-CLV chart: one bar per segment the model valued, as the report says
        valued = [
            s for s in http.get("/api/report").json()["segments"] if s["predicted_clv_average"]
        ]
        assert valued
        model = http.get("/api/model").json()
        assert model["model"]["version"] == 1 and [h["version"] for h in model["history"]] == [1]
        regular = http.get("/api/customers/regular-3").json()["prediction"]
        assert 0 < regular["p_alive"] <= 1 and regular["expected_purchases_90d"] > 0
        assert regular["clv"] is not None and regular["churn_risk"] is False
        expect(page.locator("#clv-section")).to_be_visible(timeout=DEADLINE_MS)
        expect(page.locator("#clv tbody tr")).to_have_count(len(valued), timeout=DEADLINE_MS)
        expect(page.locator(f'#clv tr[data-segment="{valued[0]["id"]}"] td.num')).to_have_text(
            f"{Decimal(valued[0]['predicted_clv_average']):,}", timeout=DEADLINE_MS
        )

        # new customers arrive through the scorer: the count moves on screen, no reload
        page.evaluate("window.__sameDocument = true")
        newcomers = [
            (orders_topic, order(1_000 + k, cid, 50_000, wall_ms() - 1_000, "pos"))
            for k, cid in enumerate(ODD_IDS)
        ]
        score_events(settings, newcomers)
        after = http.get("/api/segments").json()
        assert after["total"] == segments["total"] + len(ODD_IDS)
        moved = [
            s
            for s, b in zip(after["segments"], segments["segments"], strict=True)
            if s["customers"] != b["customers"]
        ]
        assert moved, "the newcomers changed no segment count"
        for s in moved:
            cell = page.locator(f'#counts tr[data-segment="{s["id"]}"] td.n')
            expect(cell).to_have_text(f"{s['customers']:,}", timeout=DEADLINE_MS)
        expect(page.locator("#total")).to_have_text(f"{after['total']:,}", timeout=DEADLINE_MS)
        assert page.evaluate("window.__sameDocument === true"), "the page reloaded"
        # the panels re-read on that push catch up too
        expect(page.locator("#report tfoot td").nth(1)).to_have_text(
            f"{after['total']:,}", timeout=DEADLINE_MS
        )

        # language switch: segment names in Traditional Chinese, from the API
        page.click('button[data-lang="zh-TW"]')
        first = after["segments"][0]
        expect(page.locator(f'#counts tr[data-segment="{first["id"]}"] td.name')).to_have_text(
            first["name"]["zh-TW"], timeout=DEADLINE_MS
        )
        expect(page.locator("html")).to_have_attribute("lang", "zh-TW")
        page.screenshot(path=str(isolated.tmp / "dashboard-zh-TW.png"), full_page=True)
        page.click('button[data-lang="en"]')
        expect(page.locator(f'#counts tr[data-segment="{first["id"]}"] td.name')).to_have_text(
            first["name"]["en"], timeout=DEADLINE_MS
        )

        # customer lookup of an untrusted id from the board
        page.fill("#customer-id", ODD_IDS[0])
        page.click("#lookup-form button")
        expect(page.locator("#customer dd").first).to_have_text(ODD_IDS[0], timeout=DEADLINE_MS)

        # and the picture

        shot = isolated.tmp / "dashboard.png"
        page.screenshot(path=str(shot), full_page=True)
        out = ROOT / "bench" / "out"
        out.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, out / "dashboard.png")
        shutil.copyfile(isolated.tmp / "dashboard-zh-TW.png", out / "dashboard-zh-TW.png")
        assert not errors, errors
        page.close()  # ends the live stream before the server stops
