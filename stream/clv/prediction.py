"""A fitted CLV model as the scorer stores it, and what it predicts for one customer. Pure.

The model is refitted periodically and versioned; predictions are not stored per customer
but evaluated from the customer's lifetime aggregates whenever they are read, so they
follow the clock (a quiet customer's P(alive) keeps falling) without any write.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Context, Decimal

import numpy as np
import orjson

from stream.clv import model as clv
from stream.config import PredictionSettings
from stream.core.changes import iso_ms
from stream.core.customer import Customer

HORIZON_90D_WEEKS = 90 / 7


@dataclass(frozen=True, slots=True)
class Summary:
    """One customer's sufficient statistics, in weeks and major currency units."""

    x: int  # repeat purchase days
    t_x: float  # first purchase -> last purchase
    T: float  # first purchase -> now
    zbar: float  # mean spend per repeat purchase day


def summarise(
    purchase_days: int,
    spend: int,
    first_day_spend: int,
    first_order_at: int | None,
    last_order_at: int | None,
    now: int,
    decimals: int,
) -> Summary | None:
    """None for a customer with no order (the models describe buyers only)."""
    if first_order_at is None or last_order_at is None or purchase_days <= 0:
        return None
    x = purchase_days - 1
    t_x = (last_order_at - first_order_at) / clv.WEEK_MS
    age = max(t_x, (now - first_order_at) / clv.WEEK_MS)
    zbar = max(0, spend - first_day_spend) / x / 10**decimals if x else 0.0
    return Summary(x, t_x, age, zbar)


def summary_of(customer: Customer, now: int, decimals: int) -> Summary | None:
    return summarise(
        customer.purchase_days,
        customer.spend,
        customer.first_day_spend,
        customer.first_order_at,
        customer.last_order_at,
        now,
        decimals,
    )


@dataclass(frozen=True, slots=True)
class SegmentValue:
    customers: int
    clv_total: Decimal  # sum of predicted CLV, major units

    def average(self, decimals: int) -> Decimal:
        if not self.customers:
            return Decimal(0)
        return (self.clv_total / self.customers).quantize(
            Decimal(1).scaleb(-decimals), rounding=ROUND_HALF_EVEN
        )


@dataclass(frozen=True)
class Model:
    version: int
    fitted_at: int  # wall clock, epoch ms
    as_of: int  # scoring clock the summaries were taken at
    customers: int  # buyers the fit saw
    repeat_buyers: int
    purchases: clv.BgNbd
    spend: clv.GammaGamma | None  # None when spend could not be fitted: no CLV then
    segments: Mapping[str, SegmentValue] = field(default_factory=dict)  # as of the fit

    def doc(self) -> bytes:
        return orjson.dumps(
            {
                "fitted_at": self.fitted_at,
                "as_of": self.as_of,
                "customers": self.customers,
                "repeat_buyers": self.repeat_buyers,
                "bgnbd": {
                    "r": self.purchases.r,
                    "alpha": self.purchases.alpha,
                    "a": self.purchases.a,
                    "b": self.purchases.b,
                },
                "gamma_gamma": None
                if self.spend is None
                else {"p": self.spend.p, "q": self.spend.q, "gamma": self.spend.gamma},
                "segments": {
                    seg: [v.customers, str(v.clv_total)] for seg, v in self.segments.items()
                },
            }
        )

    @classmethod
    def from_doc(cls, version: int, raw: bytes) -> Model:
        doc = orjson.loads(raw)
        g = doc.get("gamma_gamma")
        return cls(
            version=version,
            fitted_at=int(doc["fitted_at"]),
            as_of=int(doc["as_of"]),
            customers=int(doc["customers"]),
            repeat_buyers=int(doc["repeat_buyers"]),
            purchases=clv.BgNbd(**doc["bgnbd"]),
            spend=None if g is None else clv.GammaGamma(**g),
            segments={
                seg: SegmentValue(int(n), Decimal(total))
                for seg, (n, total) in doc.get("segments", {}).items()
            },
        )

    def describe(self, decimals: int) -> dict[str, object]:
        """The model as the API shows it."""
        doc = orjson.loads(self.doc())
        doc["version"] = self.version
        doc["fitted_at"] = iso_ms(self.fitted_at)
        doc["as_of"] = iso_ms(self.as_of)
        doc["segments"] = {
            seg: {"customers": v.customers, "clv_average": str(v.average(decimals))}
            for seg, v in self.segments.items()
        }
        return doc


@dataclass(frozen=True, slots=True)
class Unfit:
    """Why the last fit published nothing (the model before it, if any, stays served)."""

    reason: str
    at: int  # wall clock of the attempt, epoch ms

    def doc(self) -> bytes:
        return orjson.dumps({"reason": self.reason, "at": self.at})

    @classmethod
    def from_doc(cls, raw: bytes) -> Unfit:
        doc = orjson.loads(raw)
        return cls(str(doc["reason"]), int(doc["at"]))

    def describe(self) -> dict[str, object]:
        """As the API shows it; ``message`` is what the dashboard prints."""
        return {
            "reason": self.reason,
            "at": iso_ms(self.at),
            "message": f"model not updated: {self.reason}",
        }


@dataclass(frozen=True, slots=True)
class Prediction:
    p_alive: float
    expected_purchases_90d: float
    clv: Decimal | None  # over the configured horizon, discounted; None without a spend model

    def as_dict(self, model_version: int) -> dict[str, object]:
        return {
            "p_alive": round(self.p_alive, 6),
            "expected_purchases_90d": round(self.expected_purchases_90d, 6),
            "clv": None if self.clv is None else str(self.clv),
            "model_version": model_version,
        }


def money(value: float, decimals: int) -> Decimal:
    """A statistical estimate shown in currency: rounded once, at the edge."""
    if not math.isfinite(value):
        return Decimal(0)
    # the default context's 28 digits cannot hold a large estimate to the cent (a model fitted
    # near its edge values a customer at 1e30): the largest float has 309 integer digits
    exact = Context(prec=320 + decimals)
    return Decimal(repr(value)).quantize(
        Decimal(1).scaleb(-decimals), rounding=ROUND_HALF_EVEN, context=exact
    )


def predict_many(
    model: Model, summaries: Sequence[Summary], settings: PredictionSettings, decimals: int
) -> list[Prediction]:
    """Every summary's prediction in one pass of array arithmetic: an export of 100,000
    customers costs a few dozen array operations, not 100,000 rounds of them."""
    if not summaries:
        return []
    x = np.fromiter((s.x for s in summaries), np.float64, len(summaries))
    t_x = np.fromiter((s.t_x for s in summaries), np.float64, len(summaries))
    age = np.fromiter((s.T for s in summaries), np.float64, len(summaries))
    m = model.purchases
    alive = clv.p_alive(m, x, t_x, age).tolist()
    soon = clv.expected_purchases(m, x, t_x, age, HORIZON_90D_WEEKS).tolist()
    if model.spend is None:
        return [Prediction(a, e, None) for a, e in zip(alive, soon, strict=True)]
    zbar = np.fromiter((s.zbar for s in summaries), np.float64, len(summaries))
    values = clv.lifetime_value(
        m, model.spend, x, t_x, age, zbar, settings.horizon_months, settings.discount_rate
    ).tolist()
    return [
        Prediction(a, e, money(v, decimals)) for a, e, v in zip(alive, soon, values, strict=True)
    ]


def predict(model: Model, s: Summary, settings: PredictionSettings, decimals: int) -> Prediction:
    return predict_many(model, [s], settings, decimals)[0]


def prediction_docs(
    customers: Sequence[Customer],
    model: Model | None,
    settings: PredictionSettings,
    now: int,
    decimals: int,
) -> list[dict[str, object] | None]:
    """The ``prediction`` member of each customer's export line or lookup, computed for the
    whole page at once; None without a model or for a customer without orders."""
    if model is None:
        return [None] * len(customers)
    summaries = [summary_of(c, now, decimals) for c in customers]
    found = iter(predict_many(model, [s for s in summaries if s is not None], settings, decimals))
    docs: list[dict[str, object] | None] = []
    for c, s in zip(customers, summaries, strict=True):
        if s is None:
            docs.append(None)
            continue
        doc = next(found).as_dict(model.version)
        doc["churn_risk"] = c.churn_risk
        docs.append(doc)
    return docs


def prediction_doc(
    customer: Customer, model: Model | None, settings: PredictionSettings, now: int, decimals: int
) -> dict[str, object] | None:
    """One customer's ``prediction`` member (``prediction_docs`` for a page of them)."""
    return prediction_docs([customer], model, settings, now, decimals)[0]


def churn_due(model: Model, customer: Customer, threshold: float) -> int | None:
    """When (epoch ms) the customer's P(alive) reaches ``threshold`` without a new purchase;
    the customer is at churn risk from that instant on. None: never."""
    if customer.first_order_at is None or customer.last_order_at is None:
        return None
    x = customer.purchase_days - 1
    t_x = (customer.last_order_at - customer.first_order_at) / clv.WEEK_MS
    age = clv.churn_age(model.purchases, x, t_x, threshold)
    if age is None:
        return None
    return customer.first_order_at + math.ceil(age * clv.WEEK_MS)
