"""Routes and wiring of ``rfm collect``: each handler authenticates, reads the body within
bounds (``body``), turns it into SPEC events (``submission``, the platform mappings,
``tracking``) and answers only once the producer has Kafka's acknowledgement of all of them.

Answers: 200 ``{"accepted": n}`` once Kafka holds the n events; 400 ``{"errors": [{"index",
"reason"}]}`` for invalid items (nothing written) or ``{"error"}`` for a body that is not
JSON or a payload that cannot be mapped; 401 for a missing or wrong secret; 413 past the
bounds; 415 for a body that is not JSON by its type; 429 with ``Retry-After`` when the source
(``rate_limit``) sent more than its rate; 503 with ``Retry-After`` when Kafka did not
acknowledge in time or ``collect.max_in_flight`` requests already wait on it (``in_flight``).
Both checks come after authentication and before any Redis or Kafka work, so a sender without
credentials spends no real source's tokens and is answered without touching either.
Logs carry routes and error classes, never payloads or secrets, and a flood of refusals
writes a line a minute (``notices``).
"""

from __future__ import annotations

import contextlib
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from typing import Any

import orjson
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from stream.collect.auth import bearer_ok, write_key_index
from stream.collect.body import Refusal, decode_json, read_body, require_json
from stream.collect.deliveries import Deliveries
from stream.collect.in_flight import InFlight
from stream.collect.metrics import CountRequests, Metrics
from stream.collect.notices import Notices
from stream.collect.outgoing import MappingContext, Outgoing, PayloadError
from stream.collect.pipelined import Pipelined
from stream.collect.platforms import PLATFORMS, Platform
from stream.collect.producer import DurableProducer, Unavailable
from stream.collect.rate_limit import Limit, TokenBuckets, retry_after_s
from stream.collect.repeats import Repeats
from stream.collect.signature import verify_base64_hmac
from stream.collect.submission import Problem, submitted_events
from stream.collect.tracking import map_batch, map_track
from stream.config import ConfigError, Settings, ShopSettings, collect_secrets, shop_domain
from stream.http_server import check_tls_files, exposure_problem
from stream.http_server import serve as serve_http
from stream.probe_cache import CachedProbe
from stream.shell.processor import wall_ms
from stream.store.connection import connect

log = logging.getLogger("rfm.collect")

HEALTH_TIMEOUT = 2.0
RETRY_AFTER = "5"  # seconds; the platforms and Segment's libraries retry on their own too
TRACKING_SOURCE = "segment"  # the ``shop`` of tracking calls: their event ids are track:segment:…
WOOCOMMERCE_PING = re.compile(rb"webhook_id=\d{1,20}")
Handler = Callable[[Request], Awaitable[Response]]


class Busy(Exception):
    """The request must wait: ``response`` says so (429 or 503, with ``Retry-After``)."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status_code)
        self.response = response


class Json(JSONResponse):
    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def _problems(problems: Sequence[Problem]) -> Json:
    return Json(
        {"errors": [{"index": p.index, "reason": p.reason} for p in problems]}, status_code=400
    )


def _refused(status: int, reason: str, challenge: str | None = None) -> Json:
    headers = {"www-authenticate": challenge} if challenge else None
    return Json({"error": reason}, status_code=status, headers=headers)


def _answering(handler: Handler) -> Handler:
    """Refusals as their 4xx; anything else as a 500 logged by its class alone (an
    exception's message may quote the payload)."""

    async def handle(request: Request) -> Response:
        try:
            return await handler(request)
        except Refusal as refusal:
            return _refused(refusal.status, refusal.reason)
        except Busy as busy:
            return busy.response
        except Exception as exc:
            log.error("%s: unexpected %s", request.url.path[:60], type(exc).__name__)
            return _refused(500, "internal error")

    return handle


def create_app(settings: Settings, *, redis: Any = None) -> Starlette:
    """The app; ``redis`` (the client of the delivery ids) defaults to the deployment's.
    Raises ConfigError, naming the setting, when a secret it needs is not set."""
    collect = settings.collect
    collect_secrets(collect)
    producer = DurableProducer(settings, timeout_s=collect.ack_timeout_s)
    if redis is None:
        redis = connect(
            settings.redis_url,
            cluster=settings.redis_cluster,
            socket_timeout=1,
            socket_connect_timeout=1,
        )
    pipelined = Pipelined(redis)
    deliveries = Deliveries(pipelined, settings.key_prefix, collect.delivery_window_s)
    repeats = Repeats(pipelined, settings.key_prefix)
    metrics = Metrics()
    notices = Notices(log)
    buckets = TokenBuckets(Limit(collect.source_rate, collect.source_burst))
    in_flight = InFlight(collect.max_in_flight)
    shops = {(shop.platform, shop.domain): shop for shop in collect.shops}
    body_timeout = collect.server.body_timeout_s  # seconds for a whole body to arrive

    def context(shop: str) -> MappingContext:
        return MappingContext(
            currency=settings.store.currency,
            currency_decimals=settings.store.currency_decimals,
            guest_key=collect.guest_key,
            shop=shop,
            # order webhooks repeat an order's history; older copies than this would come
            # after the worker forgot the event ids and count again
            repeat_horizon_ms=settings.store.dedupe_window_ms // 2,
            received_at_ms=wall_ms(),
        )

    def admit(source: str) -> None:
        """Raise Busy (429) when ``source`` (an authenticated sender, named as in the metrics:
        ``bearer``, ``write-key-N``, ``shop:NAME``) has no token left."""
        wait_ns = buckets.take(source, time.monotonic_ns())
        if wait_ns == 0:
            return
        metrics.rate_limited.labels(source).inc()
        notices.warning(
            f"limited:{source}",
            f"{source} sent more than {collect.source_rate}/s (burst {collect.source_burst}): "
            "answering 429 (collect.source_rate, collect.source_burst)",
        )
        seconds = retry_after_s(wait_ns)
        raise Busy(
            Json(
                {"error": f"too many requests from this source; send again in {seconds}s"},
                status_code=429,
                headers={"retry-after": str(seconds)},
            )
        )

    @contextlib.contextmanager
    def waiting_on_backends() -> Iterator[None]:
        """Hold one of ``collect.max_in_flight`` places while Redis and Kafka are awaited;
        with none left, Busy (503) at once."""
        if not in_flight.enter():
            metrics.overloaded.inc()
            notices.warning(
                "in-flight",
                f"{collect.max_in_flight} requests already wait on Redis or Kafka: "
                "answering 503 (collect.max_in_flight)",
            )
            raise Busy(
                Json(
                    {"error": "too many requests in flight; send again later"},
                    status_code=503,
                    headers={"retry-after": RETRY_AFTER},
                )
            )
        try:
            yield
        finally:
            in_flight.leave()

    async def json_body(request: Request) -> Any:
        require_json(request)
        return decode_json(await read_body(request, collect.max_body_bytes, body_timeout))

    async def produce(events: Sequence[Outgoing], route: str) -> Response:
        with waiting_on_backends():
            return await produce_now(events, route)

    async def produce_now(events: Sequence[Outgoing], route: str) -> Response:
        try:
            await producer.send_all(events)
        except Unavailable as exc:
            metrics.broker_failures.inc()
            notices.warning(f"broker:{route}", f"{route} answered 503: {exc}")
            return Json(
                {"error": "Kafka did not acknowledge the events in time; send them again"},
                status_code=503,
                headers={"retry-after": RETRY_AFTER},
            )
        for event in events:
            metrics.events.labels(event.kind).inc()
        return Json({"accepted": len(events)})

    async def events(request: Request) -> Response:
        if collect.token is None:
            return _refused(401, "POST /v1/events is off: RFM_COLLECT_TOKEN is not set")
        if not bearer_ok(request.headers.get("authorization"), collect.token):
            return _refused(401, "missing or wrong bearer token", 'Bearer realm="rfm collect"')
        admit("bearer")
        doc = await json_body(request)
        if isinstance(doc, list) and len(doc) > collect.max_events:
            raise Refusal(413, f"more than {collect.max_events} events (collect.max_events)")
        outgoing, problems = submitted_events(doc, settings.store, wall_ms())
        if problems:
            metrics.rejected.labels("/v1/events").inc(len(problems))
            return _problems(problems)
        return await produce(outgoing, "/v1/events")

    def mapped(what: str, mapping: Callable[[], Any]) -> Any:
        """A mapping's result; one that fails on a payload it should refuse is a 400."""
        try:
            return mapping()
        except PayloadError:
            raise
        except Exception as exc:
            log.warning("%s: the payload could not be mapped: %s", what, type(exc).__name__)
            raise PayloadError("the payload could not be mapped") from None

    async def tracking(request: Request, route: str, batch: bool) -> Response:
        key = write_key_index(request.headers.get("authorization"), collect.write_keys)
        if key is None:
            return _refused(401, "missing or unknown write key", 'Basic realm="rfm collect"')
        admit(f"write-key-{key + 1}")
        doc = await json_body(request)
        ctx = context(TRACKING_SOURCE)
        names = collect.tracked_events
        results: list[tuple[int, list[Outgoing] | PayloadError | None]]
        if batch:
            items = doc.get("batch") if isinstance(doc, dict) else None
            if isinstance(items, list) and len(items) > collect.max_events:
                raise Refusal(413, f"more than {collect.max_events} calls (collect.max_events)")
            try:
                results = mapped(route, lambda: map_batch(doc, ctx, names))
            except PayloadError as exc:
                raise Refusal(400, str(exc)) from None
        else:
            try:
                results = [(0, mapped(route, lambda: map_track(doc, ctx, names)))]
            except PayloadError as exc:
                results = [(0, exc)]
        problems = [Problem(i, str(r)) for i, r in results if isinstance(r, PayloadError)]
        if problems:
            metrics.rejected.labels(route).inc(len(problems))
            return _problems(problems)
        unused = sum(1 for _, r in results if r is None)
        if unused:
            metrics.unused.labels("tracking").inc(unused)
        return await produce([e for _, r in results if isinstance(r, list) for e in r], route)

    async def track(request: Request) -> Response:
        return await tracking(request, "/v1/track", batch=False)

    async def track_batch(request: Request) -> Response:
        return await tracking(request, "/v1/batch", batch=True)

    def verified_shop(platform: Platform, request: Request, body: bytes) -> ShopSettings | None:
        shop = shops.get(
            (platform.name, shop_domain(request.headers.get(platform.shop_header, "")))
        )
        if shop is None:
            return None
        signature = request.headers.get(platform.signature_header)
        return shop if verify_base64_hmac(body, signature, shop.secret) else None

    async def webhook(request: Request) -> Response:
        name = request.path_params["platform"]
        platform = PLATFORMS.get(name)
        if platform is None:
            return _refused(404, f"no such platform (one of {', '.join(sorted(PLATFORMS))})")
        route = f"/v1/webhooks/{name}"
        body = await read_body(request, collect.max_body_bytes, body_timeout)
        if name == "woocommerce" and _woocommerce_ping(request, platform, body):
            return Json({"accepted": 0, "ping": True})
        shop = verified_shop(platform, request, body)
        if shop is None:
            metrics.bad_signatures.labels(name).inc()
            notices.warning(f"unsigned:{name}", f"{route}: refused: unknown shop or bad signature")
            return _refused(401, "unknown shop, or the signature does not match")
        admit(f"shop:{shop.name}")
        with waiting_on_backends():
            return await verified_webhook(request, platform, shop, body)

    async def verified_webhook(
        request: Request, platform: Platform, shop: ShopSettings, body: bytes
    ) -> Response:
        name = platform.name
        route = f"/v1/webhooks/{name}"
        delivery = request.headers.get(platform.delivery_header) or None
        if delivery is not None and await deliveries.seen(name, shop.name, delivery):
            metrics.redeliveries.labels(name).inc()
            return Json({"accepted": 0, "redelivery": True})
        doc = decode_json(body)
        topic = request.headers.get(platform.topic_header, "")
        try:
            events = mapped(route, lambda: platform.map(topic, doc, context(shop.name)))
        except PayloadError as exc:
            metrics.rejected.labels(route).inc()
            return _refused(400, str(exc))
        if events is None:
            metrics.unused.labels(name).inc()
            return Json({"accepted": 0, "unused_topic": True})
        events = await repeats.unsent(events)
        response = await produce_now(events, route)
        if response.status_code == 200:
            await repeats.record(events)
            if delivery is not None:
                await deliveries.record(name, shop.name, delivery)
        return response

    async def kafka_problem() -> str | None:
        metrics.health_probes.inc()
        return await producer.probe(HEALTH_TIMEOUT)

    health = CachedProbe(kafka_problem, timeout=HEALTH_TIMEOUT + 1)

    async def healthz(_: Request) -> Response:
        problem = await health.problem()
        if problem is not None:
            return Json(
                {"status": "unavailable", "kafka": problem},
                status_code=503,
                headers={"retry-after": RETRY_AFTER},
            )
        return Json({"status": "ok"})

    async def prometheus(request: Request) -> Response:
        if collect.token is not None and not bearer_ok(
            request.headers.get("authorization"), collect.token
        ):
            return _refused(401, "missing or wrong bearer token", 'Bearer realm="rfm collect"')
        return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        producer.start()
        try:
            yield
        finally:
            await producer.stop()
            await redis.aclose()

    post = ["POST"]
    routes = [
        Route("/v1/events", _answering(events), methods=post),
        Route("/v1/track", _answering(track), methods=post),
        Route("/v1/batch", _answering(track_batch), methods=post),
        Route("/v1/webhooks/{platform}", _answering(webhook), methods=post),
        Route("/healthz", _answering(healthz)),
        Route("/metrics", _answering(prometheus)),
    ]
    counted = frozenset(
        ["/v1/events", "/v1/track", "/v1/batch", "/healthz", "/metrics"]
        + [f"/v1/webhooks/{name}" for name in PLATFORMS]
    )
    return Starlette(
        routes=routes,
        middleware=[Middleware(CountRequests, metrics=metrics, routes=counted)],
        lifespan=lifespan,
    )


def _woocommerce_ping(request: Request, platform: Platform, body: bytes) -> bool:
    """WooCommerce checks a new webhook's URL with an unsigned ``webhook_id=<n>`` form post;
    answering it 200 lets the shop save the webhook. It writes nothing."""
    return platform.signature_header not in request.headers and bool(
        WOOCOMMERCE_PING.fullmatch(body.strip())
    )


def serve(settings: Settings, host: str, port: int) -> None:
    """Serve until SIGINT/SIGTERM. Raises ConfigError, naming the setting, when the bind
    would expose it with no credential of any kind, or a certificate file is missing."""
    collect = settings.collect
    unprotected = not (collect.token or collect.shops or collect.write_keys)
    problem = exposure_problem(
        host,
        "collect",
        collect.server,
        "RFM_COLLECT_TOKEN (or collect.shops, RFM_COLLECT_WRITE_KEYS)" if unprotected else None,
    )
    if problem is not None:
        raise ConfigError(problem)
    check_tls_files("collect", collect.server)
    app = create_app(settings)
    shown = f"[{host}]" if ":" in host else host
    log.info(
        "collecting on http://%s:%d: /v1/events %s, webhooks for %d shops, tracking %s",
        shown,
        port,
        "on" if collect.token else "off (RFM_COLLECT_TOKEN unset)",
        len(collect.shops),
        "on" if collect.write_keys else "off (RFM_COLLECT_WRITE_KEYS unset)",
    )
    serve_http(app, host, port, collect.server)
