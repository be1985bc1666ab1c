"""Refit the CLV model from the stored aggregates and publish it as a new version.

Runs under the refresh lease (one worker at a time, or ``rfm fit``). The fit reads one
small HMGET per customer; nothing else is needed because the aggregates are the models'
sufficient statistics. When churn events are on, every repeat buyer is then re-assessed
against the new model, so each churn flag agrees with the model that is current.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from decimal import Decimal

import numpy as np
from numpy.typing import NDArray

from stream.clv import model as clv
from stream.clv.prediction import Model, SegmentValue, Unfit, money, summary_of
from stream.config import PredictionSettings
from stream.shell.processor import Processor, wall_ms
from stream.shell.refresh import LEASE_MS, LeaseBusy

log = logging.getLogger("rfm.refit")


@dataclass(frozen=True)
class FitReport:
    model: Model | None  # None: nothing published (the model before stays served)
    reason: str  # why nothing was published, else ""
    rescored: int  # repeat buyers re-assessed for churn
    changes: int
    seconds: float


def _fit(
    x: NDArray[np.float64],
    t_x: NDArray[np.float64],
    age: NDArray[np.float64],
    zbar: NDArray[np.float64],
    p: PredictionSettings,
) -> tuple[clv.BgNbd, clv.GammaGamma, NDArray[np.float64]]:
    """Both fits and every buyer's CLV. Times are rounded to whole days for fitting only:
    identical rows then collapse into one likelihood term, which keeps a large fit cheap.

    Raises ``FitError`` unless every buyer's prediction is a finite number: a model that
    cannot answer for somebody is not published at all, so the one before stays served."""
    days = 7.0
    purchases = clv.fit_bgnbd(x, np.round(t_x * days) / days, np.round(age * days) / days)
    spend = clv.fit_gamma_gamma(x, zbar)
    clvs = clv.lifetime_value(
        purchases, spend, x, t_x, age, zbar, p.horizon_months, p.discount_rate
    )
    alive = clv.p_alive(purchases, x, t_x, age)
    if not (np.all(np.isfinite(clvs)) and np.all(np.isfinite(alive))):
        bad = int((~np.isfinite(clvs) | ~np.isfinite(alive)).sum())
        raise clv.FitError(f"the fitted model predicts no finite value for {bad} buyers")
    return purchases, spend, clvs


async def refit(
    processor: Processor, *, as_of: int | None = None, lease_ms: int = LEASE_MS
) -> FitReport:
    """Fit BG/NBD + Gamma-Gamma at ``as_of`` (default: the scoring clock) and publish."""
    store, settings = processor.store, processor.settings
    decimals = settings.store.currency_decimals
    started = time.perf_counter()
    token = await store.acquire_lease(lease_ms)
    if token is None:
        raise LeaseBusy("another process holds the refresh lease")

    async def keep_lease() -> None:
        if not await store.renew_lease(token, lease_ms):
            raise LeaseBusy("lost the refresh lease while fitting the CLV model")

    try:
        read_version = await store.model_version()
        now = as_of if as_of is not None else (await processor.context()).now
        ids: list[str] = []
        segments: list[str] = []
        rows: list[tuple[int, float, float, float]] = []
        async for customer in store.lifetimes():
            s = summary_of(customer, now, decimals)
            if s is None or customer.segment is None:
                continue
            ids.append(customer.customer_id)
            segments.append(customer.segment)
            rows.append((s.x, s.t_x, s.T, s.zbar))
            if len(ids) % 50_000 == 0:
                await keep_lease()
        await store.mark_fitted(wall_ms())
        data = np.array(rows, dtype=np.float64).reshape(-1, 4)
        x, t_x, age, zbar = data.T
        repeat = int((x > 0).sum())

        async def not_updated(reason: str) -> FitReport:
            """Nothing published: the model before stays served, and the API shows why."""
            await keep_lease()
            await store.record_unfit(Unfit(reason, wall_ms()))
            log.warning("CLV model not updated: %s", reason)
            return FitReport(None, reason, 0, 0, time.perf_counter() - started)

        if repeat < settings.prediction.min_repeat_buyers:
            return await not_updated(
                f"{repeat} repeat buyers, fewer than prediction.min_repeat_buyers = "
                f"{settings.prediction.min_repeat_buyers}"
            )
        await keep_lease()
        try:
            # CPU-bound for seconds on a large store: off the event loop, so the worker keeps
            # heartbeating its consumer group and applying events meanwhile
            purchases, spend, clvs = await asyncio.to_thread(
                _fit, x, t_x, age, zbar, settings.prediction
            )
        except clv.FitError as exc:
            return await not_updated(str(exc))
        await keep_lease()
        totals: dict[str, tuple[int, Decimal]] = {}
        for seg, value in zip(segments, clvs.tolist(), strict=True):
            n, total = totals.get(seg, (0, Decimal(0)))
            totals[seg] = (n + 1, total + money(value, decimals))
        values = {seg: SegmentValue(n, total) for seg, (n, total) in totals.items()}
        model = Model(
            version=read_version + 1,
            fitted_at=wall_ms(),
            as_of=now,
            customers=len(ids),
            repeat_buyers=repeat,
            purchases=purchases,
            spend=spend,
            segments=values,
        )
        version = await store.publish_model(token, read_version, model)
        if version < 0:
            raise LeaseBusy("lost the refresh lease or a newer model exists")
        rescored = changes = 0
        if settings.prediction.churn_threshold > 0:
            # only repeat buyers can be (or have been) at risk: BG/NBD keeps x = 0 alive
            buyers = [cid for cid, n in zip(ids, x.tolist(), strict=True) if n > 0]
            changes = await processor.rescore(buyers, "clock", before_batch=keep_lease)
            rescored = len(buyers)
        seconds = time.perf_counter() - started
        log.info(
            "CLV model v%s from %s buyers (%s repeat): r=%.4g alpha=%.4g a=%.4g b=%.4g; "
            "%s churn changes; %.2fs",
            version,
            len(ids),
            repeat,
            purchases.r,
            purchases.alpha,
            purchases.a,
            purchases.b,
            changes,
            seconds,
        )
        return FitReport(model, "", rescored, changes, seconds)
    finally:
        await store.release_lease(token)
