"""Routes and wiring of ``rfm api``: each handler reads (``queries``), shapes (the pure
modules) and answers. Nothing here computes a number itself."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
from prometheus_client import CONTENT_TYPE_LATEST
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from consumers.api import queries
from consumers.api.customer import customer_doc, plausible_id
from consumers.api.export import FORMATS, export_chunks
from consumers.api.guard import Guard, allowed_hosts
from consumers.api.heavy import HeavySlots, ReleasingStream
from consumers.api.live import LiveCounts
from consumers.api.matrices import RangeError, grid_doc, hour_range, transitions_doc
from consumers.api.metrics import exposition
from consumers.api.report import report_doc, segments_doc
from consumers.api.thresholds import thresholds_doc
from consumers.api.variants import variants_doc
from consumers.campaigns.ledger import CampaignKeys
from consumers.campaigns.uplift import csv_text, uplift_doc
from consumers.campaigns.uplift_ledger import measured_rules, read_rule
from stream.clv import checks as clv_checks
from stream.clv.prediction import prediction_doc
from stream.config import ConfigError, Settings
from stream.http_server import check_tls_files, exposure_problem, serve
from stream.probe_cache import CachedProbe
from stream.schemes import load_scheme
from stream.shell.processor import wall_ms
from stream.store.redis_store import open_store

log = logging.getLogger("rfm.api")
STATIC = Path(__file__).parent / "static"
SEGMENT_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
LONG_RANGE_HOURS = 7 * 24  # transitions over more hours than this count as heavy


class Json(JSONResponse):
    """orjson: fast, and strict about what it will encode."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


RETRY_AFTER = "2"  # seconds, on every 503: Redis is back or the pool has room by then


def _error(status: int, message: str) -> Json:
    headers = {"retry-after": RETRY_AFTER} if status == 503 else None
    return Json({"error": message}, status_code=status, headers=headers)


def is_public(path: str) -> bool:
    """The health probe and the dashboard's static shell; the shell holds no data and asks
    for the token itself."""
    return path in ("/", "/healthz", "/favicon.ico") or path.startswith("/static/")


def create_app(settings: Settings, *, token: str | None, bind_host: str = "127.0.0.1") -> Starlette:
    scheme = load_scheme(settings.scoring.scheme, settings.scoring.buckets)
    api = settings.api
    # a bounded pool whose callers wait (up to api.redis_wait) instead of failing at once
    pool = (
        {}
        if settings.redis_cluster
        else {"pool_wait": api.redis_wait_s, "max_connections": api.redis_connections}
    )
    store = open_store(settings, socket_connect_timeout=2, socket_timeout=10, **pool)
    decimals = settings.store.currency_decimals

    async def redis_problem() -> str | None:
        await queries.ping(store)
        return None

    health = CachedProbe(redis_problem, failures=(RedisError, OSError))
    live_counts = LiveCounts(lambda: queries.counts(store))
    heavy = HeavySlots(api.heavy_requests)

    async def healthz(_: Request) -> Response:
        problem = await health.problem()
        if problem is not None:
            return Json(
                {"status": "unavailable", "redis": problem},
                status_code=503,
                headers={"retry-after": RETRY_AFTER},
            )
        return Json({"status": "ok"})

    async def metrics(_: Request) -> Response:
        data = await queries.overview(store)
        return Response(exposition(data, scheme), media_type=CONTENT_TYPE_LATEST)

    async def segments(_: Request) -> Response:
        return Json(segments_doc(scheme, await queries.counts(store)))

    async def grid(_: Request) -> Response:
        return Json(grid_doc(await queries.grid(store), settings.scoring.buckets))

    async def transitions(request: Request) -> Response:
        try:
            hours = hour_range(
                request.query_params.get("from"), request.query_params.get("to"), wall_ms()
            )
        except RangeError as exc:
            return _error(400, str(exc))
        if len(hours) <= LONG_RANGE_HOURS:
            return Json(transitions_doc(hours, await queries.transitions(store, hours)))
        refused = heavy.refusal()
        if refused is not None:
            return refused
        try:
            moves = await queries.transitions(store, hours)
            return Json(await asyncio.to_thread(transitions_doc, hours, moves))
        finally:
            heavy.release()

    async def report(_: Request) -> Response:
        counts, fields = await queries.segment_report(store)
        doc = report_doc(scheme, counts, fields, decimals, await store.model())
        return Json({"currency": settings.store.currency, **doc, **await not_updated()})

    async def model(_: Request) -> Response:
        fitted = await store.model()
        earlier = [
            {k: m.describe(decimals)[k] for k in ("version", "fitted_at", "bgnbd", "gamma_gamma")}
            for m in await store.model_history(20)
        ]
        return Json(
            {
                "model": None if fitted is None else fitted.describe(decimals),
                **await not_updated(),
                "history": earlier,
            }
        )

    async def model_checks(_: Request) -> Response:
        """The current model's checks (holdout, period transactions, matrices, drift),
        stored in the same step as its parameters; ``null`` before the first fit."""
        found = await store.model_checks()
        return Json(
            {
                "checks": None if found is None else clv_checks.describe(*found),
                **await not_updated(),
            }
        )

    async def not_updated() -> dict[str, object]:
        """Why the last fit published nothing (``null`` once one has): the model shown, if
        any, is the one before it."""
        unfit = await store.unfit()
        return {"model_not_updated": None if unfit is None else unfit.describe()}

    async def lookup(customer_id: str) -> Response:
        record = await queries.customer(store, customer_id) if plausible_id(customer_id) else None
        if record is None:
            return _error(404, "no such customer")
        now = await queries.scoring_now(store, settings)
        doc = customer_doc(record, scheme, settings.window_ms, now, decimals)
        model = await store.model()
        doc["prediction"] = prediction_doc(
            record.customer, model, settings.prediction, now, decimals
        )
        if model is None:  # no CLV at all: say why rather than show a number
            doc.update(await not_updated())
        return Json(doc)

    async def customer(request: Request) -> Response:
        return await lookup(request.path_params["customer_id"])

    async def customer_by_query(request: Request) -> Response:
        """``?id=``: for ids a browser would rewrite as a path segment (``.``, ``..``)."""
        customer_id = request.query_params.get("id")
        if customer_id is None:
            return _error(400, "id: the customer id to look up")
        return await lookup(customer_id)

    async def thresholds(_: Request) -> Response:
        current, settled = await queries.thresholds(store)
        return Json(thresholds_doc(current, settled, settings))

    async def export(request: Request) -> Response:
        fmt = request.query_params.get("format", "jsonl")
        if fmt not in FORMATS:
            return _error(400, f"format: one of {', '.join(FORMATS)}")
        segment = request.query_params.get("segment") or None
        if segment is not None and not SEGMENT_ID.fullmatch(segment):
            return _error(400, "segment: a segment id such as at_risk")
        name = f"rfm-{segment or 'customers'}.{fmt}"
        refused = heavy.refusal()
        if refused is not None:
            return refused
        return ReleasingStream(
            heavy,
            export_chunks(store, settings, segment, fmt),
            media_type=FORMATS[fmt],
            headers={"content-disposition": f'attachment; filename="{name}"'},
        )

    async def live(_: Request) -> Response:
        return StreamingResponse(
            live_counts.stream(),
            media_type="text/event-stream",
            headers={"x-accel-buffering": "no"},
        )

    async def deliveries(_: Request) -> Response:
        """Latest campaign webhook outcomes recorded by `rfm campaigns` (newest first)."""
        raw = await store.redis.lrange(f"{settings.key_prefix}cmp:recent", 0, 49)
        return Json({"deliveries": [orjson.loads(item) for item in raw]})

    async def campaign_variants(_: Request) -> Response:
        """Per campaign rule and A/B arm: deliveries and the segment moves that followed."""
        prefix = f"{settings.key_prefix}cmp:stats:"
        rules: dict[str, tuple[dict[str, int], dict[str, int]]] = {}
        async for key in store.redis.scan_iter(match=_glob_escape(prefix) + "*", count=500):
            rule_id = key.decode()[len(prefix) :]
            stats = await store.redis.hgetall(key)
            moves = await store.redis.hgetall(f"{settings.key_prefix}cmp:moves:{rule_id}")
            rules[rule_id] = (_counters(stats), _counters(moves))
        return Json(variants_doc(rules, scheme.ids))

    async def uplift(request: Request) -> Response:
        """Per measured campaign rule, arm and segment at assignment: what customers did
        after it, each arm against the hold-out with 95% intervals; ``format=csv`` too."""
        wanted = request.query_params.get("rule") or None
        if wanted is not None and not SEGMENT_ID.fullmatch(wanted):
            return _error(400, "rule: a campaign rule id such as win_back")
        fmt = "csv" if request.url.path.endswith(".csv") else request.query_params.get("format")
        if fmt not in (None, "json", "csv"):
            return _error(400, "format: one of json, csv")
        keys = CampaignKeys(settings.key_prefix)
        ids = [wanted] if wanted else await measured_rules(store.redis, keys)
        measured = {rule_id: await read_rule(store.redis, keys, rule_id) for rule_id in ids}
        if wanted and not any(measured[wanted]):
            return _error(404, "no campaign rule with a hold-out by that id")
        doc = await asyncio.to_thread(uplift_doc, measured, scheme.ids, decimals)
        if fmt == "csv":
            return Response(
                csv_text(row for rule in doc["rules"] for row in rule["rows"]),
                media_type="text/csv; charset=utf-8",
                headers={"content-disposition": 'attachment; filename="rfm-uplift.csv"'},
            )
        return Json({"currency": settings.store.currency, **doc})

    async def dashboard(_: Request) -> Response:
        return FileResponse(STATIC / "index.html", headers={"cache-control": "no-cache"})

    async def redis_down(_: Request, exc: Exception) -> Response:
        log.warning("redis unavailable: %s", type(exc).__name__)
        return _error(503, "redis unavailable")

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        yield
        await live_counts.aclose()
        await store.aclose()

    routes = [
        Route("/healthz", healthz),
        Route("/metrics", metrics),
        Route("/api/segments", segments),
        Route("/api/grid", grid),
        Route("/api/transitions", transitions),
        Route("/api/report", report),
        Route("/api/customers", customer_by_query),
        Route("/api/customers/{customer_id:path}", customer),
        Route("/api/thresholds", thresholds),
        Route("/api/model", model),
        Route("/api/model/checks", model_checks),
        Route("/api/export", export),
        Route("/api/live", live),
        Route("/api/deliveries", deliveries),
        Route("/api/campaigns", campaign_variants),
        Route("/api/uplift", uplift),
        Route("/api/uplift.csv", uplift),
        Route("/", dashboard),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    guard = Middleware(
        Guard,
        token=token,
        public=is_public,
        allowed_hosts=allowed_hosts(bind_host),
    )
    return Starlette(
        routes=routes,
        middleware=[guard],
        exception_handlers={RedisConnectionError: redis_down, RedisTimeoutError: redis_down},
        lifespan=lifespan,
    )


def _counters(raw: dict[Any, Any]) -> dict[str, int]:
    return {(k.decode() if isinstance(k, bytes) else k): int(v) for k, v in raw.items()}


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


def run_api(settings: Settings, host: str, port: int) -> None:
    """Serve until SIGINT/SIGTERM. Raises ConfigError, naming the setting, when the bind
    would expose the API without a token or a certificate file is missing."""
    token = settings.api.token
    problem = exposure_problem(host, "api", settings.api.server, None if token else "RFM_API_TOKEN")
    if problem is not None:
        raise ConfigError(problem)
    check_tls_files("api", settings.api.server)
    app = create_app(settings, token=token, bind_host=host)
    shown = f"[{host}]" if ":" in host else host
    scheme = "https" if settings.api.server.tls_certfile else "http"
    log.info(
        "dashboard at %s://%s:%d/ (token %s)", scheme, shown, port, "required" if token else "off"
    )
    serve(app, host, port, settings.api.server)
