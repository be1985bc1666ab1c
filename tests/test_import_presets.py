"""`rfm import --preset`: the storefronts' order exports through the real CLI, into a real
broker, scored by a real worker, and `rfm export` against the batch oracle.

The oracle (tests/oracle.py) is fed the events written out here from
tests/fixtures/exports/expected.json (totals from each order's line items, buyers keyed with
the guest key), never what the importer published. Along the way: a file with rejects
publishes nothing and exits non-zero unless --skip-rejects, and a re-import is dropped by
the worker's dedupe.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import redis

from stream.collect.guest import guest_customer_id
from stream.kafka.topics import Topics
from tests.conftest import Isolated
from tests.support import (
    WorkerProcess,
    assert_export_is_the_oracle,
    events_applied,
    read_topic,
    rfm,
    wait_for,
)

pytestmark = pytest.mark.integration

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "exports"
EXPECTED: dict[str, Any] = json.loads((FIXTURES / "expected.json").read_text(encoding="utf-8"))
GUEST_KEY = "integration guest key, 16+ characters"
SHOP = "lanyu-tea"
WORKER_CONFIG = '[scoring]\nclock = "event"\nrefresh_interval = "1h"\n'
# the import's own settings file: the Shopify shop the collector would know, so --shop may go
IMPORT_CONFIG = WORKER_CONFIG + (
    f'[collect.shops.{SHOP}]\nplatform = "shopify"\ndomain = "{SHOP}.myshopify.com"\n'
    'secret_env = "TEST_SHOPIFY_SECRET"\n'
)


def run(iso: Isolated, config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = iso.process_env(config)
    env.update(RFM_COLLECT_GUEST_KEY=GUEST_KEY, TEST_SHOPIFY_SECRET="shpss_not_a_real_secret")
    return subprocess.run(
        [sys.executable, "-m", "stream.cli", "import", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )


def ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, f"{done.args} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def expected_events(name: str, accounts: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """The SPEC events ``name`` stands for, in file order, worked out from expected.json;
    ``accounts``: e-mail -> account id, as the customers export given beside it says."""
    spec = EXPECTED[name]
    out: list[dict[str, Any]] = []
    for order in spec["orders"]:
        items = sum((q * Decimal(p) for q, p in order["items"]), Decimal(0))
        total = items + Decimal(order["extra"]) - Decimal(order["discount"])
        email = order.get("email", "").strip().lower()
        customer = (
            order.get("customer")
            or (accounts or {}).get(email)
            or guest_customer_id(order["email"], GUEST_KEY.encode())
        )
        base = {
            "order_id": order["id"],
            "customer_id": customer,
            "currency": "TWD",
            **({"channel": order["channel"]} if order["channel"] else {}),
        }
        prefix = f"{spec['platform']}:{SHOP}:{order['id']}"
        out.append(
            {
                **base,
                "event_id": f"{prefix}:paid",
                "type": "order_completed",
                "amount": f"{total:.2f}",
                "occurred_at": order["placed_at"],
            }
        )
        refund = order.get("refund")
        if refund:
            amount = total if refund["amount"] is None else Decimal(refund["amount"])
            out.append(
                {
                    **base,
                    "event_id": f"{prefix}:{refund['id']}",
                    "type": "order_refunded",
                    "amount": f"{amount:.2f}",
                    "occurred_at": refund["at"],
                    "full": refund["full"],
                }
            )
    return out


def test_exports_back_fill_what_the_oracle_computes(
    isolated: Isolated, start_worker: Callable[..., WorkerProcess]
) -> None:
    worker = start_worker(isolated.config_file(WORKER_CONFIG))
    config = isolated.tmp / "import.toml"
    config.write_text(IMPORT_CONFIG, encoding="utf-8")
    settings = isolated.settings()
    topic = Topics(settings.topic_prefix).orders
    expected: list[dict[str, Any]] = []

    # Shopify: the shop's name comes from [collect.shops]; the customers export beside the
    # orders puts a registered buyer's history under the account id the webhooks use
    customers = ("--customers", str(FIXTURES / "shopify_customers.csv"))
    shopify = (str(FIXTURES / "shopify_orders.csv"), "--preset", "shopify-orders", *customers)
    out = ok(run(isolated, config, *shopify))
    assert "2 accounts by e-mail, 1 e-mails on two accounts left as guests" in out
    assert f"published 12 events to {topic}" in out
    assert out.rstrip().endswith(
        "9 orders, 3 refunds; skipped 5 (1 no e-mail (an anonymous sale), 1 not paid "
        "(authorized), 1 not paid (partially_paid), 1 not paid (pending), 1 not paid (voided)); "
        "rejected 0"
    )
    expected += expected_events("shopify_orders.csv", {"mei.lin@example.com": "7390400000101"})

    # SHOPLINE: no SHOPLINE shop configured, so --shop is required
    shopline = str(FIXTURES / "shopline_orders.csv")
    refused = run(isolated, config, shopline, "--preset", "shopline-orders")
    assert refused.returncode != 0
    assert "--shop NAME is required: 0 shopline shops in [collect.shops]" in refused.stderr
    out = ok(run(isolated, config, shopline, "--preset", "shopline-orders", "--shop", SHOP))
    assert "4 orders, 2 refunds; skipped 1 (1 not paid (unpaid)); rejected 0" in out
    expected += expected_events("shopline_orders.csv")

    # WooCommerce writes local times: without --timezone every paid order is refused
    woo = str(FIXTURES / "woocommerce_orders.csv")
    refused = run(isolated, config, woo, "--preset", "woocommerce-orders", "--shop", SHOP)
    assert refused.returncode != 0
    assert "line 2: date '2026-01-18 20:41:07' has no UTC offset" in refused.stderr
    assert "nothing published: 0 orders, 0 refunds; skipped 4" in refused.stderr
    args = ("--preset", "woocommerce-orders", "--shop", SHOP, "--timezone", "Asia/Taipei")
    out = ok(run(isolated, config, woo, *args))
    assert "7 orders, 3 refunds; skipped 4" in out
    expected += expected_events("woocommerce_orders.csv")

    # rejects: listed by line, nothing published, non-zero exit; --skip-rejects publishes
    # the rest and exits 0
    rejects = str(FIXTURES / "shopify_orders_rejects.csv")
    before = len(read_topic(settings, topic))
    refused = run(isolated, config, rejects, "--preset", "shopify-orders")
    assert refused.returncode != 0
    lines = [line for line in refused.stderr.splitlines() if line.startswith("line ")]
    assert [line.split(":", 1)[0] for line in lines] == [
        "line 3",
        "line 4",
        "line 5",
        "line 6",
        "line 9",
    ]
    assert "line 3: Currency 'USD' is not the store currency TWD" in lines
    assert "(--skip-rejects publishes the rest)" in refused.stderr
    assert len(read_topic(settings, topic)) == before
    out = ok(run(isolated, config, rejects, "--preset", "shopify-orders", "--skip-rejects"))
    assert "published 2 events" in out and "rejected 5" in out
    buyer = guest_customer_id("ok.buyer@example.com", GUEST_KEY.encode())
    for order_id, amount, at in (
        ("5410000000201", "500.00", "2026-03-02T10:15:07+08:00"),
        ("5410000000206", "700.00", "2026-03-07T10:15:07+08:00"),
    ):
        expected.append(
            {
                "event_id": f"shopify:{SHOP}:{order_id}:paid",
                "type": "order_completed",
                "order_id": order_id,
                "customer_id": buyer,
                "amount": amount,
                "currency": "TWD",
                "occurred_at": at,
                "channel": "online",
            }
        )

    # the same export again: every event is a duplicate to the worker
    shopify_events = 12
    out = ok(run(isolated, config, *shopify))
    assert f"published {shopify_events} events" in out

    published = read_topic(settings, topic)
    assert len(published) == len(expected) + shopify_events
    assert not any(b"@" in m.value for m in published), "an e-mail was published"
    client = redis.Redis.from_url(isolated.infra.redis_url)
    try:
        wait_for(
            lambda: events_applied(client, isolated.name) >= len(published),
            timeout=120,
            what=f"{len(published)} events applied",
            diagnose=worker.tail,
        )
        stats = {k.decode(): int(v) for k, v in client.hgetall(f"{isolated.name}:stats").items()}
    finally:
        client.close()
    assert stats.get("accepted") == len(expected), stats
    assert stats.get("duplicates") == shopify_events, stats
    assert not stats.get("rejected"), stats

    worker_config = isolated.tmp / "rfm.toml"
    rfm(isolated, worker_config, "refresh")
    export = rfm(isolated, worker_config, "export")
    rows = assert_export_is_the_oracle(export, expected)
    assert len(rows) == 13
    assert "7390400000101" in rows  # Mei, by her account
    assert worker.alive, worker.tail()
