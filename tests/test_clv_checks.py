"""`rfm fit --holdout` through the real store and CLI, and the API serving what it published.

The whole CDNOW sample (1997-01 .. 1998-06, shipped in ``lifetimes``) is applied by the real
processor to Redis; the CLI then fits as of 1998-06-30 with the last 39 weeks held out, the
split the published analyses use. The figures themselves are compared with ``lifetimes`` in
tests/unit/test_clv_checks.py; here: they are published with the model, in the same step,
and served behind the token.
"""

from __future__ import annotations

import tomllib

import httpx
import pytest

from tests import cdnow
from tests.api_support import ApiServer, score_events
from tests.conftest import Isolated
from tests.support import rfm

pytestmark = pytest.mark.integration

TOKEN = "checks-" + "q7" * 12
CONFIG = cdnow.CONFIG.format(interval="0s", threshold=0)


def test_fit_with_holdout_publishes_checks_the_api_serves(isolated: Isolated) -> None:
    config = isolated.config_file(CONFIG)
    settings = isolated.settings(tomllib.loads(CONFIG))
    orders = [(settings.topic_prefix + "orders", e) for e in cdnow.order_events()]
    score_events(settings, orders, then_refresh=True)

    out = rfm(isolated, config, "fit", "--as-of", "1998-06-30T00:00:00Z", "--holdout", "39w")
    assert "holdout 39.0 weeks: 2357 calibration customers (0 without every order" in out
    assert "expected 1653, actual 1882" in out  # the published CDNOW holdout figures
    rfm(isolated, config, "fit", "--as-of", "1998-06-30T00:00:00Z")  # a plain refit after it

    with ApiServer(isolated.process_env(config), isolated.tmp / "api.log", TOKEN) as api:
        assert httpx.get(api.url + "/api/model/checks").status_code == 401  # no token
        with api.client() as http:
            doc = http.get("/api/model/checks").json()
            model = http.get("/api/model").json()["model"]
    found = doc["checks"]
    assert found["model_version"] == model["version"] == 2
    assert found["holdout"] is None  # the second fit asked for none: no stale holdout shown
    assert found["drift"] == {
        "share": 0.25,
        "previous_version": 1,
        "moves": {k: 0.0 for k in ("r", "alpha", "a", "b", "p", "q", "gamma")},
        "flagged": False,
    }
    assert sum(found["period_transactions"]["actual"]) == model["customers"] == 2357
    assert len(found["p_alive"]["values"]) == len(found["p_alive"]["recencies"])
    assert found["expected_purchases"]["next_weeks"] == pytest.approx(90 / 7)
