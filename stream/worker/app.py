"""The Faust adapter: with ``stream.worker.faust_patches``, the only module that knows Faust.

One agent consumes every input topic and hands batches to the ``Processor``; one task
does the periodic work (publish orphaned outbox entries, clock sweeps, threshold refresh
under a lease). The agent acks an event only once its batch is applied, and applying
never raises on a transient failure: it retries until the batch is applied.

On SIGTERM, SIGINT or SIGHUP the worker stops taking events, ends the periodic round under
way, lets the batch being applied finish (``DRAIN_S`` at most) so that Faust commits its
offsets, leaves its consumer group and exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import faust

from stream import native
from stream.config import Settings
from stream.core.step import Record
from stream.kafka import KafkaPublisher
from stream.kafka.topics import Topics
from stream.schemes import load_scheme
from stream.shell.processor import Processor, wall_ms
from stream.shell.refit import refit
from stream.shell.refresh import LeaseBusy, reconfigure, refresh, sweep_clock
from stream.shell.wiring import build_processor
from stream.store.redis_store import open_store
from stream.worker.faust_patches import AgentEvents, App, Worker
from stream.worker.tuning import tune_gc, use_uvloop

log = logging.getLogger("rfm.worker")
BATCH_MAX = 2000
PENDING_MAX = 2 * BATCH_MAX  # events taken from the stream and not yet applied, at most
TICK_S = 1.0  # from the end of one periodic round to the start of the next
DRAIN_S = 10.0  # on stop, for the batch being applied to finish


class Runtime:
    """Lazily built inside the worker's event loop (Redis clients bind to a loop)."""

    def __init__(self, settings: Settings, app: faust.App) -> None:
        self.settings = settings
        self.app = app
        self._processor: Processor | None = None
        self._publisher: KafkaPublisher | None = None
        self._building = asyncio.Lock()
        self.healthy = True
        self.batches: Batches | None = None  # the agent's, once it runs
        self._rounds: asyncio.Task[None] | None = None

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
        processor = build_processor(s, publisher)
        log.info("core: %s", "compiled (stream.native)" if native.active() else "plain Python")
        return processor

    async def periodic(self) -> None:
        """The periodic work, ``TICK_S`` after the previous round ended, until the app stops.

        A round can take much longer than a second (a first refresh over a large population,
        a CLV refit while batches keep the loop busy). Rounds were never concurrent, but as a
        fixed-rate Faust timer each long one logged ``Timer periodic is overlapping``: the
        spacing, not the rate, is what this work needs."""
        self._rounds = asyncio.current_task()
        while not self.app.should_stop:
            await self.tick()
            await self.app.sleep(TICK_S)

    async def close(self) -> None:
        """Before Faust stops the agent and the consumer (which commits acked offsets and
        leaves the group): end the periodic round under way (a lease it holds expires, and
        the next round, here or elsewhere, redoes the work), let the batch being applied
        finish, then close the publisher both of them use."""
        rounds = self._rounds
        if rounds is not None and not rounds.done():
            rounds.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await rounds
        if self.batches is not None:
            await self.batches.finish(DRAIN_S)
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


class Batches:
    """Events in arrival order, applied in batches as fast as they come.

    Each batch is what arrived while the one before was being applied (at most
    ``BATCH_MAX``): a quiet stream is applied event by event with no wait, a busy one in
    big batches. Faust's ``take_events`` instead stops buffering while its batch is
    processed and then waits ``within`` for the next: with a backlog the worker applied
    batches of ~220 events (what Faust delivers in 20 ms), which kept the processor's
    load/fold/commit pipeline from overlapping at all."""

    def __init__(self, runtime: Runtime, ack: Callable[[Any], object]) -> None:
        self.runtime = runtime
        self.ack = ack
        self.pending: list[Any] = []
        self.arrived = asyncio.Event()
        self.room = asyncio.Event()
        self.room.set()
        self.finishing = False
        self._task: asyncio.Task[None] | None = None

    async def add(self, event: Any) -> None:
        if self._task is None:
            self._task = asyncio.ensure_future(self._apply_forever())
        elif self._task.done():
            self._task.result()  # raises what stopped it (only a bug can)
        self.pending.append(event)
        self.arrived.set()
        if len(self.pending) >= PENDING_MAX:
            self.room.clear()
            await self.room.wait()

    async def _apply_forever(self) -> None:
        while True:
            await self.arrived.wait()
            if self.finishing:
                return
            batch, self.pending = self.pending[:BATCH_MAX], self.pending[BATCH_MAX:]
            if not self.pending:
                self.arrived.clear()
            self.room.set()
            records = [
                Record(m.topic, m.partition, m.offset, m.key, m.value)
                for m in (e.message for e in batch)
            ]
            await self.runtime.apply(records)
            for event in batch:
                self.ack(event)

    async def finish(self, timeout: float) -> None:
        """Start no further batch, and wait up to ``timeout`` for the one being applied (and
        acked): its offsets are then committed as the consumer stops, not applied twice."""
        self.finishing = True
        self.arrived.set()
        task = self._task
        if task is not None and not task.done():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(task), timeout)

    async def close(self) -> None:
        """Stop applying; events taken but not acked are delivered again after a restart."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


def build_app(settings: Settings) -> faust.App:
    topics = Topics(settings.topic_prefix)
    datadir = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "rfm" / "faust"
    app = App(
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
        events = AgentEvents(stream)  # not Faust's stream: Batches acks each event once applied
        batches = runtime.batches = Batches(runtime, events.ack)
        try:
            async for event in events:  # ends when Faust stops the agent
                await batches.add(event)
        finally:
            await batches.close()

    @app.task
    async def periodic() -> None:
        await runtime.periodic()

    async def close_runtime(_app: Any, **_kwargs: Any) -> None:
        await runtime.close()

    # faust types its receivers more narrowly than it calls them
    app.on_before_shutdown.connect(close_runtime)  # type: ignore[arg-type]

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
    # aiokafka's raw records at DEBUG, httpx's URLs: the `rfm` group's guard_logs holds them
    use_uvloop()  # before faust.Worker: it creates the main loop, and the consumer thread its own
    worker = Worker(app, loglevel=loglevel, quiet=True)
    tune_gc()
    worker.execute_from_commandline()
