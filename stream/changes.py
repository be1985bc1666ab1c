"""The segment-change event (SPEC section 6), the scorer's only output that others act on."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
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


@lru_cache(maxsize=8192)
def _iso_second(epoch_s: int) -> str:
    return datetime.fromtimestamp(epoch_s, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.")


def iso_ms(epoch_ms: int | None) -> str | None:
    """RFC 3339 UTC with milliseconds, the one timestamp shape we emit (hot: every change
    carries two, and a batch's share one wall-clock second)."""
    if epoch_ms is None:
        return None
    return f"{_iso_second(epoch_ms // 1000)}{epoch_ms % 1000:03d}Z"


@dataclass(frozen=True, slots=True)
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
    at: int  # wall clock, epoch ms
    # cause "churn_risk" only: {"at_risk", "p_alive", "threshold", "model_version"}; the
    # segment stays the same (from == to), so automation can act before the customer is lost
    churn: dict[str, object] | None = None

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
            **({} if self.churn is None else {"churn": self.churn}),
        }

    def encode(self) -> bytes:
        return orjson.dumps(self.as_dict())
