"""The CDNOW sample as ``lifetimes`` ships it (a test dependency only): a music store's
purchases of 1997-01 .. 1998-06 by 2,357 customers, the data the BG/NBD papers fit."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
from lifetimes import datasets as lifetimes_data

DATA = Path(lifetimes_data.__file__).parent
# the scorer's settings for a replay of the sample: the event clock (1997 is long past),
# a lifetime window, and {interval} / {threshold} for the fit interval and churn threshold
CONFIG = """
[store]
currency = "USD"
[scoring]
clock = "event"
window_days = 0
refresh_interval = "1h"
[prediction]
fit_interval = "{interval}"
churn_threshold = {threshold}
"""


def transactions() -> pd.DataFrame:
    """One row per purchase: ``id``, ``date`` (YYYYMMDD text), ``cds``, ``value`` (dollars as
    text, so amounts stay exact) and ``day`` (the date at midnight UTC)."""
    t = pd.read_csv(
        DATA / "CDNOW_sample.txt",
        sep=r"\s+",
        header=None,
        names=["master_id", "id", "date", "cds", "value"],
        dtype={"date": str, "value": str},
    )
    t["day"] = pd.to_datetime(t["date"], format="%Y%m%d", utc=True)
    return t


def order_events(until: int | None = None) -> list[dict[str, Any]]:
    """Every purchase (up to ``until``, epoch ms, if given) as an ``order_completed`` event."""
    out = []
    for n, row in enumerate(transactions().itertuples()):
        at = int(datetime.strptime(row.date, "%Y%m%d").replace(tzinfo=UTC).timestamp() * 1000)
        if until is None or at <= until:
            out.append(
                {
                    "event_id": f"e-cd{n}",
                    "type": "order_completed",
                    "order_id": f"cd{n}",
                    "customer_id": str(row.id),
                    "amount": row.value,
                    "currency": "USD",
                    "occurred_at": at,
                }
            )
    return out
