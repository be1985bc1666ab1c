"""What ``rfm collect`` counts, in Prometheus text format (``GET /metrics``).

The counters live in this process (unlike the scorer's numbers, which the operator API
reads from Redis), in a registry of their own so each app counts only its own requests.
Labels take values from fixed sets (routes, platforms, topics), never from a request.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()

        def counter(name: str, text: str, *labels: str) -> Counter:
            return Counter(name, text, labels, registry=self.registry)

        self.requests = counter(
            "rfm_collect_requests", "HTTP requests by route and status.", "route", "status"
        )
        self.events = counter(
            "rfm_collect_events_produced",
            "Events Kafka acknowledged, by input topic (orders, interactions, erasure).",
            "topic",
        )
        self.rejected = counter(
            "rfm_collect_items_rejected",
            "Events, webhooks and tracking calls refused as invalid (400), nothing written.",
            "route",
        )
        self.bad_signatures = counter(
            "rfm_collect_bad_signatures",
            "Webhooks refused (401): signature missing or wrong, or a shop not configured.",
            "platform",
        )
        self.unused = counter(
            "rfm_collect_unused_topics",
            "Verified webhooks and tracking calls of a topic or event that maps to no event.",
            "source",
        )
        self.redeliveries = counter(
            "rfm_collect_redeliveries_dropped",
            "Webhook deliveries answered 200 without producing: already applied.",
            "platform",
        )
        self.rate_limited = counter(
            "rfm_collect_rate_limited",
            "Requests answered 429: their source (bearer, write-key-N, shop:NAME) sent more "
            "than collect.source_rate a second beyond collect.source_burst.",
            "source",
        )
        self.overloaded = counter(
            "rfm_collect_overloaded",
            "Requests answered 503 at once: collect.max_in_flight requests already waited on "
            "Redis or Kafka.",
        )
        self.broker_failures = counter(
            "rfm_collect_broker_failures",
            "Requests answered 503 because Kafka did not acknowledge their events in time.",
        )
        self.health_probes = counter(
            "rfm_collect_health_probes",
            "Metadata requests /healthz sent to Kafka: at most one a second, however many ask.",
        )

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class CountRequests:
    """ASGI middleware: every answer by route (``routes``, else ``other``) and status; a
    handler that raises counts as 500 (the server's error handler answers it)."""

    def __init__(self, app: ASGIApp, *, metrics: Metrics, routes: frozenset[str]) -> None:
        self.app = app
        self.metrics = metrics
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        route = path if path in self.routes else "other"
        status = 500

        async def counting(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, counting)
        finally:
            self.metrics.requests.labels(route, str(status)).inc()
