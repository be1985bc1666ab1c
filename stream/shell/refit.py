"""Refit the CLV model from the stored aggregates and publish it as a new version, with
its checks (``stream.clv.checks``) in the same step.

Runs under the refresh lease (one worker at a time, or ``rfm fit``). The fit reads one
small HMGET per customer; nothing else is needed because the aggregates are the models'
sufficient statistics. Only a holdout check (``rfm fit --holdout``) reads each customer's
order records too: the aggregates cannot say which purchases came before the cutoff.
When churn events are on, every repeat buyer is then re-assessed against the new model,
so each churn flag agrees with the model that is current.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from decimal import Decimal

import numpy as np
from numpy.typing import NDArray

from stream.clv import checks
from stream.clv import model as clv
from stream.clv.prediction import Model, SegmentValue, Unfit, money, summary_of
from stream.clv.split import CalibrationHoldout, Incomplete, split
from stream.config import PredictionSettings
from stream.core.customer import Customer
from stream.shell.ports import Store
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
    checks: checks.Checks | None = None  # published with the model


def _fit(
    x: NDArray[np.float64],
    t_x: NDArray[np.float64],
    age: NDArray[np.float64],
    zbar: NDArray[np.float64],
    p: PredictionSettings,
) -> tuple[clv.BgNbd, clv.GammaGamma, NDArray[np.float64]]:
    """Both fits and every buyer's CLV (times rounded to whole days for fitting only).

    Raises ``FitError`` unless every buyer's prediction is a finite number: a model that
    cannot answer for somebody is not published at all, so the one before stays served."""
    purchases = clv.fit_bgnbd(x, clv.to_days(t_x), clv.to_days(age))
    spend = clv.fit_gamma_gamma(x, zbar)
    clvs = clv.lifetime_value(
        purchases, spend, x, t_x, age, zbar, p.horizon_months, p.discount_rate
    )
    alive = clv.p_alive(purchases, x, t_x, age)
    if not (np.all(np.isfinite(clvs)) and np.all(np.isfinite(alive))):
        bad = int((~np.isfinite(clvs) | ~np.isfinite(alive)).sum())
        raise clv.FitError(f"the fitted model predicts no finite value for {bad} buyers")
    return purchases, spend, clvs


@dataclass
class HoldoutRows:
    """The calibration/holdout split of every buyer the fit reads (``--holdout``)."""

    cutoff: int  # epoch ms
    end: int
    rows: list[CalibrationHoldout] = field(default_factory=list)
    unsplit: int = 0  # buyers whose order records no longer cover their purchases

    def add(self, customer: Customer) -> None:
        assert customer.first_order_at is not None
        try:
            row = split(
                (r.at for r in customer.orders.values()),
                customer.purchase_days,
                customer.first_order_at,
                self.cutoff,
                self.end,
            )
        except Incomplete:
            self.unsplit += 1
            return
        if row is not None:
            self.rows.append(row)


def _checks(
    purchases: clv.BgNbd,
    spend: clv.GammaGamma,
    summaries: tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]],
    drift_share: float,
    previous: Model | None,
    holdout: HoldoutRows | None,
) -> checks.Checks:
    """The model checks of this fit; a holdout the calibration data cannot fit says why."""
    found: checks.Holdout | None = None
    unavailable: str | None = None
    if holdout is not None:
        try:
            found = checks.holdout_check(holdout.rows, holdout.cutoff, holdout.end, holdout.unsplit)
        except clv.FitError as exc:
            unavailable = f"the calibration period cannot be fitted: {exc}"
    before = (
        None
        if previous is None
        else (previous.version, checks.parameters(previous.purchases, previous.spend))
    )
    return checks.compute(purchases, spend, summaries, drift_share, before, found, unavailable)


async def _buyers(store: Store, *, full: bool) -> AsyncIterator[Customer]:
    """What the fit reads of every customer: the aggregates, or (for a holdout split) the
    whole record with its orders, one HGETALL each instead of one small HMGET."""
    if not full:
        async for customer in store.lifetimes():
            yield customer
        return
    async for page in store.customer_pages():
        for customer in page:
            yield customer


async def refit(
    processor: Processor,
    *,
    as_of: int | None = None,
    lease_ms: int = LEASE_MS,
    holdout_ms: int | None = None,
) -> FitReport:
    """Fit BG/NBD + Gamma-Gamma at ``as_of`` (default: the scoring clock) and publish it
    with its checks; ``holdout_ms`` adds the check of a fit on all but that last stretch
    (this one reads every buyer's order records, not only its aggregates)."""
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
        previous = await store.model()
        now = as_of if as_of is not None else (await processor.context()).now
        split_rows = None if holdout_ms is None else HoldoutRows(now - holdout_ms, now)
        ids: list[str] = []
        segments: list[str] = []
        rows: list[tuple[int, float, float, float]] = []
        async for customer in _buyers(store, full=split_rows is not None):
            s = summary_of(customer, now, decimals)
            if s is None or customer.segment is None:
                continue
            ids.append(customer.customer_id)
            segments.append(customer.segment)
            rows.append((s.x, s.t_x, s.T, s.zbar))
            if split_rows is not None:
                split_rows.add(customer)
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
        found = await asyncio.to_thread(
            _checks,
            purchases,
            spend,
            (x, t_x, age),
            settings.prediction.drift_share,
            previous,
            split_rows,
        )
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
        version = await store.publish_model(token, read_version, model, found.doc())
        if version < 0:
            raise LeaseBusy("lost the refresh lease or a newer model exists")
        model = dataclasses.replace(model, version=version)  # above a fence a rollback left
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
        return FitReport(model, "", rescored, changes, seconds, found)
    finally:
        await store.release_lease(token)
