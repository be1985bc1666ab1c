"""The customer view's segment history in a real headless Chromium: after a lookup, one row
per kept change, newest first, with its cause, trigger event, scores before -> after and the
thresholds version, as the API returned them; a change of language redraws it."""

from __future__ import annotations

import shutil
import tomllib

import pytest

from stream.shell.processor import wall_ms
from tests.api_support import ApiServer, order, refund, score_events
from tests.conftest import Isolated
from tests.test_dashboard_browser import DEADLINE_MS, ROOT, TOKEN, browser_page
from tests.test_segment_history import CONFIG, HOUR

pytestmark = pytest.mark.integration
__all__ = ["browser_page"]  # the fixture, imported for use here

CID = "客戶 <b>{3}</b>"  # untrusted: shown as text, looked up exactly
NONE = "\N{EN DASH}"  # what the board shows for a missing value


def scores_text(s: dict[str, int | None] | None) -> str:
    if s is None:
        return NONE
    return " ".join(f"{d.upper()}{NONE if s[d] is None else s[d]}" for d in "rfmi")


def test_the_customer_view_lists_its_segment_history(
    isolated: Isolated, browser_page: object
) -> None:
    from playwright.sync_api import Page, expect

    page = browser_page
    assert isinstance(page, Page)
    settings = isolated.settings(tomllib.loads(CONFIG))
    topic = settings.topic_prefix + "orders"
    t0 = wall_ms() - 24 * HOUR
    # three moves, each its own batch: an order, a bigger order, that one refunded in full
    for event in (
        order(1, CID, 5_000, t0),
        order(2, CID, 300_000, t0 + HOUR),
        refund(3, "o-2", CID, 300_000, t0 + 2 * HOUR, True),
    ):
        score_events(settings, [(topic, event)])

    config = isolated.config_file(CONFIG)
    with ApiServer(isolated.process_env(config), isolated.tmp / "api.log", TOKEN) as api:
        with api.client() as http:
            history = http.get("/api/customers", params={"id": CID}).json()["history"]
        assert [h["seq"] for h in history] == [3, 2, 1]
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(api.url + "/#token=" + TOKEN)
        expect(page.locator("#board")).to_be_visible(timeout=DEADLINE_MS)
        expect(page.locator("#history-section")).to_be_hidden()
        page.fill("#customer-id", CID)
        page.click("#lookup-form button")

        rows = page.locator("#history tbody tr")
        expect(rows).to_have_count(len(history), timeout=DEADLINE_MS)
        for n, h in enumerate(history):
            row = rows.nth(n)
            expect(row).to_have_attribute("data-seq", str(h["seq"]))
            expect(row.locator("td.cause")).to_have_text(h["cause"])
            expect(row.locator("td.trigger")).to_have_text(h["trigger_event_id"] or NONE)
            expect(row.locator("td.scores")).to_have_text(
                f"{scores_text(h['scores_before'])} → {scores_text(h['scores'])}"
            )
            expect(row.locator("td.version")).to_have_text(f"v{h['thresholds_version']}")
            expect(row.locator("td.at")).to_have_text(h["at"][:19].replace("T", " "))
        expect(rows.nth(2).locator("td.move")).to_have_text("(new) → New Customers")
        expect(page.locator("#history-title")).to_have_text("Segment history")

        page.click('button[data-lang="zh-TW"]')
        expect(page.locator("#history-title")).to_have_text("分群歷程", timeout=DEADLINE_MS)
        expect(rows.nth(0).locator("td.cause")).to_have_text("退款")
        page.click('button[data-lang="en"]')
        expect(rows.nth(0).locator("td.cause")).to_have_text("refund", timeout=DEADLINE_MS)

        shot = isolated.tmp / "dashboard-history.png"
        page.locator("#lookup").scroll_into_view_if_needed()
        page.screenshot(path=str(shot), full_page=True)
        out = ROOT / "bench" / "out"
        out.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, out / "dashboard-history.png")
        assert not errors, errors
        page.close()
