"""The segment-change event (SPEC section 6), the scorer's only output that others act on."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import orjson

CAUSES = frozenset(
    {
        "order",
        "refund",
        "interaction",
        "threshold_refresh",
        "clock",
        "erasure",
        "reconfigure",
        "churn_risk",
    }
)


@lru_cache(maxsize=4096)
def _date(days: int) -> str:
    """``YYYY-MM-DD`` of a day count since 1970-01-01, proleptic Gregorian.

    A change carries two timestamps, and ``datetime`` + ``strftime`` per second was a sixth
    of the plain-Python fold; dates repeat (a window holds a few hundred), so they are
    cached, and the arithmetic runs over 400-year eras of exactly 146,097 days."""
    z = days + 719_468  # days since 0000-03-01
    era = z // 146_097
    doe = z - era * 146_097  # day of era, 0..146096
    yoe = (doe - doe // 1460 + doe // 36_524 - doe // 146_096) // 365  # year of era, 0..399
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)  # day of the year from March 1
    mp = (5 * doy + 2) // 153  # month from March, 0..11
    month = mp + 3 if mp < 10 else mp - 9
    year = yoe + era * 400 + (1 if month <= 2 else 0)
    return f"{year:04d}-{month:02d}-{doy - (153 * mp + 2) // 5 + 1:02d}"


def iso_ms(epoch_ms: int | None) -> str | None:
    """RFC 3339 UTC with milliseconds, the one timestamp shape we emit."""
    if epoch_ms is None:
        return None
    seconds, ms = divmod(epoch_ms, 1000)
    days, second = divmod(seconds, 86_400)
    minute, sec = divmod(second, 60)
    hour, minute = divmod(minute, 60)
    return f"{_date(days)}T{hour:02d}:{minute:02d}:{sec:02d}.{ms:03d}Z"


@dataclass(frozen=True, slots=True, init=False)
class SegmentChange:
    customer_id: str
    seq: int
    from_segment: str | None
    to_segment: str | None  # None only for an erasure
    scores: dict[str, int | None]
    metrics: dict[str, object]
    cause: str
    thresholds_version: int
    scheme: str
    # an input event's change: that record's Kafka timestamp, which a replay reads again;
    # otherwise the wall clock of the run that made it. Epoch ms.
    at: int
    # cause "churn_risk" only: {"at_risk", "p_alive", "threshold", "model_version"}; the
    # segment stays the same (from == to), so automation can act before the customer is lost
    churn: dict[str, object] | None
    # the input event that moved it (order, refund, interaction, erasure), else None
    trigger_event_id: str | None
    # the scores before this change; None on a first assignment (``from_segment`` None)
    scores_before: dict[str, int | None] | None

    def __init__(
        self,
        customer_id: str,
        seq: int,
        from_segment: str | None,
        to_segment: str | None,
        scores: dict[str, int | None],
        metrics: dict[str, object],
        cause: str,
        thresholds_version: int,
        scheme: str,
        at: int,
        churn: dict[str, object] | None = None,
        trigger_event_id: str | None = None,
        scores_before: dict[str, int | None] | None = None,
    ) -> None:
        # written out for mypyc (see stream.core.customer); frozen: hence object.__setattr__
        object.__setattr__(self, "customer_id", customer_id)
        object.__setattr__(self, "seq", seq)
        object.__setattr__(self, "from_segment", from_segment)
        object.__setattr__(self, "to_segment", to_segment)
        object.__setattr__(self, "scores", scores)
        object.__setattr__(self, "metrics", metrics)
        object.__setattr__(self, "cause", cause)
        object.__setattr__(self, "thresholds_version", thresholds_version)
        object.__setattr__(self, "scheme", scheme)
        object.__setattr__(self, "at", at)
        object.__setattr__(self, "churn", churn)
        object.__setattr__(self, "trigger_event_id", trigger_event_id)
        object.__setattr__(self, "scores_before", scores_before)

    @property
    def event_id(self) -> str:
        return f"{self.customer_id}:{self.seq}"

    def as_dict(self) -> dict[str, object]:
        return {
            "event_id": self.event_id,
            "customer_id": self.customer_id,
            "seq": self.seq,
            "from": self.from_segment,
            "to": self.to_segment,
            "scores": self.scores,
            "metrics": self.metrics,
            "cause": self.cause,
            "thresholds_version": self.thresholds_version,
            "scheme": self.scheme,
            "at": iso_ms(self.at),
            "trigger_event_id": self.trigger_event_id,
            "scores_before": self.scores_before,
            **({} if self.churn is None else {"churn": self.churn}),
        }

    def encode(self) -> bytes:
        return orjson.dumps(self.as_dict())
