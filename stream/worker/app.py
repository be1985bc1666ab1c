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
import itertools
import logging
import os
import traceback
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar, cast

import faust
from faust.types import TP

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
from stream.store.customers import ServerRestarted
from stream.store.redis_store import RedisStore, open_store
from stream.worker.faust_patches import AgentEvents, App, FastConsumer, Worker
from stream.worker.replay import Replay, Rewinds, ranges
from stream.worker.tuning import tune_gc, use_uvloop

log = logging.getLogger("rfm.worker")
T = TypeVar("T")
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
        self._replay: Replay | None = None
        self._store: RedisStore | None = None  # the processor's, to fence its commits

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
        processor = build_processor(s, publisher, store)
        self._store = store
        self._replay = Replay(store)
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

    def forget_positions(self) -> None:
        """A rebalance happened: each partition's position is checked afresh."""
        if self._replay is not None:
            self._replay.forget()

    async def check(self, records: list[Record]) -> Rewinds:
        """Before applying ``records``: the partitions whose input position in Redis is
        behind (``stream.worker.replay``), to read again first."""

        async def step() -> Rewinds:
            processor = await self.processor()
            assert self._replay is not None  # built with the processor
            rewinds = await self._replay.before(records)
            if self._replay.restarted:
                processor.forget_published()
            return rewinds

        return await self._until_done(records, step)

    async def apply(self, records: list[Record]) -> Rewinds:
        """Apply ``records``, then advance their input positions in Redis; returns the
        partitions found behind (Redis lost writes meanwhile), to read again. Commits land
        only on the servers the check before the batch read: one that restarted meanwhile
        refuses them, and every partition of the batch is read again from where Redis
        holds it (what did land before is deduplicated)."""
        applied = False

        async def step() -> Rewinds:
            nonlocal applied
            processor = await self.processor()
            assert self._replay is not None
            if not applied:
                assert self._store is not None  # built with the processor
                self._store.servers = self._replay.runs
                try:
                    await processor.process(records)
                except ServerRestarted:
                    return await self._read_again(processor, records)
                finally:
                    self._store.servers = []
                applied = True
            return await self._replay.after(records)

        rewinds = await self._until_done(records, step)
        if not self.healthy:
            log.warning("recovered: batch applied")
        self.healthy = True
        return rewinds

    async def _read_again(self, processor: Processor, records: list[Record]) -> Rewinds:
        """Every partition of ``records`` from its first offset, or from the position Redis
        holds if that is lower."""
        assert self._replay is not None
        behind = await self._replay.before(records)
        processor.forget_published()
        log.warning("a Redis server restarted under a batch: reading it again")
        return {tp: min(first, behind.get(tp, first)) for tp, (first, _) in ranges(records).items()}

    async def _until_done(self, records: list[Record], step: Callable[[], Awaitable[T]]) -> T:
        """``step`` retried until it succeeds: Redis/Kafka trouble never drops a batch, and
        never lets one be acked unapplied."""
        delay = 0.1
        while True:
            try:
                return await step()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
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
            # the class and where it was raised, not its message (it may quote stored data)
            frame = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
            where = f" at {Path(frame.filename).name}:{frame.lineno}" if frame else ""
            log.error(
                "periodic work failed (%s%s): will retry next tick", type(exc).__name__, where
            )


class Batches:
    """Events in arrival order, applied in batches as fast as they come.

    Each batch is what arrived while the one before was being applied (at most
    ``BATCH_MAX``): a quiet stream is applied event by event with no wait, a busy one in
    big batches. Faust's ``take_events`` instead stops buffering while its batch is
    processed and then waits ``within`` for the next: with a backlog the worker applied
    batches of ~220 events (what Faust delivers in 20 ms), which kept the processor's
    load/fold/commit pipeline from overlapping at all.

    Each batch is checked against the input positions Redis holds before it is applied, and
    advances them after (``stream.worker.replay``). A partition found behind (Redis lost
    writes) is read again from there: its events held here are dropped, unacked, the
    consumer seeks back, and what it had fetched before the seek is dropped as it arrives,
    up to the first event of the replay (the first below what was dropped)."""

    def __init__(self, runtime: Runtime, ack: Callable[[Any], object]) -> None:
        self.runtime = runtime
        self.ack = ack
        self.pending: list[Any] = []
        self.arrived = asyncio.Event()
        self.room = asyncio.Event()
        self.room.set()
        self.finishing = False
        self._task: asyncio.Task[None] | None = None
        # partition read again -> (offset from which what arrives is stale, generation)
        self.stale: dict[Any, tuple[int, int]] = {}
        self.generation: int | None = None  # the consumer's, when the last batch was checked

    async def add(self, event: Any) -> None:
        if self._task is None:
            self._task = asyncio.ensure_future(self._apply_forever())
        elif self._task.done():
            self._task.result()  # raises what stopped it (only a bug can)
        if self.stale and self._fetched_before_rewind(event.message):
            return
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
            if not batch:  # what was held was dropped by a rewind
                continue
            generation = self.runtime.app.consumer_generation_id
            if generation != self.generation:
                self.runtime.forget_positions()
                self.generation = generation
            rewinds = await self.runtime.check(_records(batch))
            if rewinds:
                await self._rewind(batch, rewinds)
                batch = [e for e in batch if _tp(e.message) not in rewinds]
                if not batch:
                    continue
            rewinds = await self.runtime.apply(_records(batch))
            for event in batch:
                self.ack(event)
            if rewinds:
                await self._rewind(batch, rewinds)

    def _fetched_before_rewind(self, message: Any) -> bool:
        """An event of a partition being read again, fetched before the seek. The first
        event below the offset where those begin is the replay's: from it on, all pass."""
        held = self.stale.get(message.tp)
        if held is None:
            return False
        stale_from, generation = held
        if message.generation_id == generation and message.offset >= stale_from:
            return True
        del self.stale[message.tp]
        cast(FastConsumer, self.runtime.app.consumer).rewound(message.tp)
        return False

    async def _rewind(self, batch: list[Any], rewinds: Rewinds) -> None:
        """Read each partition of ``rewinds`` again from its offset: drop its events held
        here (none is acked) and seek the consumer back."""
        held: dict[tuple[str, int], int] = {}
        for event in itertools.chain(batch, self.pending):
            tp = _tp(event.message)
            if tp in rewinds:
                held[tp] = max(held.get(tp, -1), event.message.offset)
        self.pending = [e for e in self.pending if _tp(e.message) not in rewinds]
        if len(self.pending) < PENDING_MAX:
            self.room.set()
        consumer = cast(FastConsumer, self.runtime.app.consumer)
        for (topic, partition), offset in rewinds.items():
            tp = TP(topic, partition)
            self.stale[tp] = (held[(topic, partition)] + 1, self.runtime.app.consumer_generation_id)
            log.warning(
                "input %s[%s]: Redis holds it applied up to offset %s only (it lost writes"
                " or restarted); reading it again from there",
                topic,
                partition,
                offset,
            )
            await consumer.rewind(tp, offset)

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


def _tp(message: Any) -> tuple[str, int]:
    return (message.topic, message.partition)


def _records(events: list[Any]) -> list[Record]:
    return [
        Record(m.topic, m.partition, m.offset, m.key, m.value, timestamp_ms(m.timestamp))
        for m in (e.message for e in events)
    ]


def timestamp_ms(seconds: float | None) -> int | None:
    """A Faust message's timestamp (seconds, a float made from Kafka's integer ms) as the
    integer ms it came from; None when the broker gave none."""
    if seconds is None or seconds < 0:
        return None
    return round(seconds * 1000)


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
