"""The Faust adapter: the only module that knows Faust.

One agent consumes every input topic in batches and hands them to the ``Processor``; one
timer does the periodic work (publish orphaned outbox entries, clock sweeps, threshold
refresh under a lease). Faust acks a batch when the loop body returns, even if it raised,
so the body never raises on a transient failure: it retries until the batch is applied.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from pathlib import Path
from typing import Any

import faust
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread, Consumer, Transport

from stream import native
from stream.config import Settings
from stream.kafka import KafkaPublisher
from stream.processor import Processor, wall_ms
from stream.refit import refit
from stream.refresh import LeaseBusy, reconfigure, refresh, sweep_clock
from stream.segments import load_scheme
from stream.store.redis_store import open_store
from stream.topics import Topics
from stream.transitions import Record
from stream.tuning import tune_gc, use_uvloop

log = logging.getLogger("rfm.worker")
BATCH_MAX = 2000
BATCH_WITHIN_S = 0.02
TICK_S = 1.0
# How long a fetch may wait at the broker for records. Faust hard-codes 1,500 ms; aiokafka
# keeps one fetch in flight per broker, so a fetch parked on partitions that had nothing yet
# held back records already waiting on the others: ~1 s stalls at 300-1,000 orders/s.
FETCH_MAX_WAIT_MS = 20


class _ConsumerThread(AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS  # read once, by start()
        return consumer


class _Consumer(Consumer):
    def _new_consumer_thread(self) -> _ConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class _Transport(Transport):
    Consumer = _Consumer


class _App(faust.App):
    """Faust with our fetch wait; the only place its Kafka layer is touched."""

    def _new_transport(self) -> Any:
        return _Transport(self.conf.broker_consumer, self)


class Runtime:
    """Lazily built inside the worker's event loop (Redis clients bind to a loop)."""

    def __init__(self, settings: Settings, app: faust.App) -> None:
        self.settings = settings
        self.app = app
        self._processor: Processor | None = None
        self._publisher: KafkaPublisher | None = None
        self._building = asyncio.Lock()
        self.healthy = True

    async def processor(self) -> Processor:
        """Changes and dead letters go out through our own batching aiokafka producer:
        Faust's ``send`` costs a future and several layers per record, which the worker's
        profile showed at every change it published."""
        async with self._building:  # the agent and the timer may both ask first
            if self._processor is None:
                self._processor = await self._build()
        return self._processor

    async def _build(self) -> Processor:
        s = self.settings
        publisher = KafkaPublisher(s)
        try:
            await publisher.start()
        except BaseException:
            await publisher.stop()  # a failed start must not leak a producer per retry
            raise
        self._publisher = publisher
        store = open_store(s)
        scheme = load_scheme(s.scoring.scheme, s.scoring.buckets)
        log.info("core: %s", "compiled (stream.native)" if native.active() else "plain Python")
        return Processor(s, store, scheme, publisher)

    async def close(self) -> None:
        if self._publisher is not None:
            await self._publisher.stop()

    async def apply(self, records: list[Record]) -> None:
        delay = 0.1
        while True:
            try:
                await (await self.processor()).process(records)
                if not self.healthy:
                    log.warning("recovered: batch applied")
                self.healthy = True
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis/Kafka trouble: never drop, never ack unapplied
                self.healthy = False
                log.error(
                    "batch of %s not applied yet (%s); retrying in %.1fs",
                    len(records),
                    type(exc).__name__,
                    delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def tick(self) -> None:
        try:
            processor = await self.processor()
            await processor.flush_outbox()
            await sweep_clock(processor)
            with contextlib.suppress(LeaseBusy):
                await reconfigure(processor)
            store = processor.store
            if self.settings.scoring.mode == "quantile":
                last = await store.refreshed_at()
                interval_ms = int(self.settings.scoring.refresh_interval_s * 1000)
                if wall_ms() - last >= interval_ms:
                    with contextlib.suppress(LeaseBusy):
                        await refresh(processor)
            fit_ms = int(self.settings.prediction.fit_interval_s * 1000)
            if fit_ms and wall_ms() - await store.fitted_at(default=wall_ms()) >= fit_ms:
                with contextlib.suppress(LeaseBusy):
                    await refit(processor)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.error("periodic work failed (%s): will retry next tick", type(exc).__name__)


def build_app(settings: Settings) -> faust.App:
    topics = Topics(settings.topic_prefix)
    datadir = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "rfm" / "faust"
    app = _App(
        settings.group_id,
        broker=[f"kafka://{h.strip()}" for h in settings.kafka_bootstrap.split(",")],
        broker_credentials=_credentials(settings),
        store="memory://",
        datadir=str(datadir / settings.group_id),
        web_enabled=False,
        topic_partitions=settings.partitions,
        topic_replication_factor=1,
        topic_allow_declare=False,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        stream_wait_empty=False,
        broker_commit_every=BATCH_MAX,
        broker_commit_interval=1.0,
        stream_buffer_maxsize=BATCH_MAX * 2,
        # A worker that dies without leaving the group hands its partitions over after this,
        # not after Faust's 60 s default: the outage a crash costs is bounded by it.
        broker_session_timeout=10.0,
        broker_heartbeat_interval=2.0,
    )
    Path(app.conf.datadir).mkdir(parents=True, exist_ok=True)  # Faust only makes the leaf
    runtime = Runtime(settings, app)
    source = app.topic(
        *topics.inputs,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
    )

    @app.agent(source, name="score")
    async def score(stream: Any) -> None:
        async for events in stream.take_events(BATCH_MAX, within=BATCH_WITHIN_S):
            records = [
                Record(
                    e.message.topic,
                    e.message.partition,
                    e.message.offset,
                    e.message.key,
                    e.message.value,
                )
                for e in events
            ]
            await runtime.apply(records)

    @app.timer(TICK_S)
    async def periodic() -> None:
        await runtime.tick()

    async def close_publisher(_app: Any, **_kwargs: Any) -> None:
        await runtime.close()

    # faust types its receivers more narrowly than it calls them
    app.on_before_shutdown.connect(close_publisher)  # type: ignore[arg-type]

    app.rfm_runtime = runtime  # type: ignore[attr-defined]
    return app


def _credentials(settings: Settings) -> Any:
    """Faust's spelling of the same SASL/TLS settings the plain aiokafka clients use."""
    protocol = settings.kafka_security_protocol
    context = None
    if protocol in ("SSL", "SASL_SSL"):
        from aiokafka.helpers import create_ssl_context

        context = create_ssl_context(cafile=settings.kafka_ssl_cafile)
    if settings.kafka_sasl_mechanism:
        from faust.auth import SASLCredentials

        return SASLCredentials(
            username=settings.kafka_sasl_username,
            password=settings.kafka_sasl_password,
            mechanism=settings.kafka_sasl_mechanism,
            ssl_context=context,
        )
    if context is not None:
        from faust.auth import SSLCredentials

        return SSLCredentials(context)
    return None


async def _check_layout(settings: Settings) -> None:
    store = open_store(settings)
    try:
        await store.check_layout()
    finally:
        await store.aclose()


def run_worker(settings: Settings, loglevel: str = "info") -> None:
    """Block running a Faust worker until SIGTERM/SIGINT."""
    from stream.kafka import ensure_topics

    asyncio.run(ensure_topics(settings))
    load_scheme(settings.scoring.scheme, settings.scoring.buckets)  # fail fast on a bad scheme
    asyncio.run(_check_layout(settings))  # a wrong RFM_REDIS_SHARDS stops start-up, named
    app = build_app(settings)
    # aiokafka logs raw records at DEBUG; event payloads must never reach a log (SPEC 9)
    for name in ("aiokafka", "kafka"):
        logging.getLogger(name).setLevel(logging.INFO)
    use_uvloop()  # before faust.Worker: it creates the main loop, and the consumer thread its own
    worker = faust.Worker(app, loglevel=loglevel, quiet=True)
    tune_gc()
    worker.execute_from_commandline()
