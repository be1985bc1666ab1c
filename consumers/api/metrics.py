"""``/metrics``: the scorer's Redis-kept numbers in Prometheus text format. Pure.

The values live in Redis (shared by every worker), not in this process, so each scrape builds
a throwaway registry from one snapshot instead of mirroring them into global metric objects.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from consumers.api.queries import Overview
from consumers.api.report import ordered_segments
from stream.core.scheme import Scheme

# stats hash field -> (counter name without _total, help)
COUNTERS = {
    "accepted": ("rfm_events_accepted", "Input events applied to customer state."),
    "duplicates": ("rfm_events_duplicate", "Input events skipped as already applied."),
    "rejected": ("rfm_events_rejected", "Input events sent to the dead-letter topic."),
    "changes": ("rfm_segment_changes", "Segment-change events committed."),
}


class _Snapshot:
    """A collector over metric families that are already computed."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterable[Metric]:
        return self._families


def families(data: Overview, scheme: Scheme) -> list[Metric]:
    customers = GaugeMetricFamily(
        "rfm_segment_customers", "Customers currently in each segment.", labels=["segment"]
    )
    for segment in ordered_segments(scheme, data.counts):
        customers.add_metric([segment], data.counts.get(segment, 0))
    out: list[Metric] = [customers]
    for field, (name, text) in COUNTERS.items():
        out.append(CounterMetricFamily(name, text, value=data.stats.get(field, 0)))
    out.append(
        GaugeMetricFamily(
            "rfm_thresholds_version",
            "Version of the published thresholds.",
            data.thresholds_version,
        )
    )
    out.append(
        GaugeMetricFamily(
            "rfm_outbox_entries", "Segment changes committed but not yet published.", data.outbox
        )
    )
    return out


def exposition(data: Overview, scheme: Scheme) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Snapshot(families(data, scheme)))
    return generate_latest(registry)
