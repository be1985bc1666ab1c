"""The model checks panel in a real headless Chromium: the charts draw what
GET /api/model/checks says, after two real fits (the second with a holdout) of the CDNOW
sample scored into Redis. Waits are DOM conditions with deadlines, never sleeps.
"""

from __future__ import annotations

import shutil
import tomllib
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests import cdnow
from tests.api_support import ApiServer, score_events
from tests.conftest import Isolated
from tests.support import rfm
from tests.test_dashboard_browser import DEADLINE_MS
from tests.test_dashboard_browser import browser_page as browser_page  # the fixture

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "checks-" + "d4" * 12
CONFIG = cdnow.CONFIG.format(interval="0s", threshold=0)
CALIBRATION_END = int(datetime(1997, 9, 30, tzinfo=UTC).timestamp() * 1000)


def test_model_checks_panel_draws_the_published_checks(
    isolated: Isolated, browser_page: object
) -> None:
    from playwright.sync_api import Page, expect

    page = browser_page
    assert isinstance(page, Page)
    config = isolated.config_file(CONFIG)
    settings = isolated.settings(tomllib.loads(CONFIG))
    topic = settings.topic_prefix + "orders"
    calibration = cdnow.order_events(until=CALIBRATION_END)
    # the first nine months, fitted; then the rest, fitted with those last 39 weeks held out
    score_events(settings, [(topic, e) for e in calibration], then_refresh=True, then_fit=True)
    rest = [e for e in cdnow.order_events() if e["occurred_at"] > CALIBRATION_END]
    score_events(settings, [(topic, e) for e in rest])
    rfm(isolated, config, "fit", "--as-of", "1998-06-30T00:00:00Z", "--holdout", "39w")

    with ApiServer(isolated.process_env(config), isolated.tmp / "api.log", TOKEN) as api:
        with api.client() as http:
            checks = http.get("/api/model/checks").json()["checks"]
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(api.url + "/")
        page.fill("#token", TOKEN)
        page.click("#login button[type=submit]")
        panel = page.locator("#model-checks-section")
        expect(panel).to_be_visible(timeout=DEADLINE_MS)

        drift = checks["drift"]
        assert drift["previous_version"] == 1 and checks["model_version"] == 2
        expect(page.locator("#model-checks-drift")).to_have_attribute(
            "data-flagged", str(drift["flagged"]).lower(), timeout=DEADLINE_MS
        )
        expect(page.locator("#model-checks-drift")).to_contain_text("v2")

        buckets = checks["holdout"]["buckets"]
        bars = page.locator("#mc-holdout rect[data-series]")
        expect(bars).to_have_count(2 * len(buckets), timeout=DEADLINE_MS)
        for b in buckets:
            for series in ("expected", "actual"):
                bar = page.locator(
                    f'#mc-holdout rect[data-label="{b["label"]}"][data-series="{series}"]'
                )
                expect(bar).to_have_attribute("data-value", _js_number(b[series]))
        expect(panel).to_contain_text("expected 1653, actual 1882")

        period = checks["period_transactions"]
        expect(page.locator("#mc-period rect[data-series]")).to_have_count(
            2 * len(period["labels"])
        )
        last = period["labels"][-1]
        expect(
            page.locator(f'#mc-period rect[data-label="{last}"][data-series="actual"]')
        ).to_have_attribute("data-value", str(period["actual"][-1]))

        for chart, key in (("mc-expected", "expected_purchases"), ("mc-alive", "p_alive")):
            values = checks[key]["values"]
            cells = page.locator(f"#{chart} rect")
            expect(cells).to_have_count(len(values) * len(values[0]))
            expect(cells.last).to_have_attribute("data-value", _js_number(values[-1][-1]))

        out = ROOT / "bench" / "out"
        out.mkdir(parents=True, exist_ok=True)
        shot = isolated.tmp / "dashboard-model-checks.png"
        panel.screenshot(path=str(shot))
        shutil.copyfile(shot, out / "dashboard-model-checks.png")
        assert not errors, errors
        page.close()


def _js_number(value: float) -> str:
    """As JavaScript's String(number) writes it: integral values without a fraction."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))
