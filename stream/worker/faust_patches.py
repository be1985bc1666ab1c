"""Faust's Kafka consumer, and the agent's events, with four of their costs taken out;
Faust's worker, with a clean end and a clean log.

Every override of Faust's private internals lives here and nowhere else. They were written
against faust-streaming 0.15 (pinned in pyproject.toml); importing this module under another
minor release stops with a message, since a private method that changed shape would fail
quietly, not loudly.

Faust stays in charge of the consumer group, offsets and commits; this module changes four
things it does per fetch or per record, each measured on the worker:

- the broker fetch wait: Faust hard-codes 1,500 ms. aiokafka keeps one fetch in flight per
  broker, so a fetch parked on partitions that had nothing yet held back records already
  waiting on the others: ~1 s stalls at 300-1,000 orders/s.
- the hand-off of each record to the streams: Faust awaits ``wait_first(deliver(record),
  suspend_flow.wait())`` per record so that a rebalance can interrupt a delivery blocked on
  a full stream buffer, and mode's ``wait_first`` builds four tasks and an ``asyncio.wait``
  for it, every time. Most deliveries never block (the buffer has room): this consumer
  runs the delivery's first step itself, and only a delivery that does block goes through
  ``wait_first`` as before, still interruptible.
- the poll while a stream buffer is full: Faust then stops fetching that partition and
  polls the others with a 1 s timeout (or sleeps 1 s when none is left), and only looks
  again after it. With a backlog the buffer fills every ~0.4 s and the worker drained it
  and then sat idle for the rest of that second: 600-700 ms idle every ~3.5 s, in every
  catch-up. This consumer polls every ``BUFFERED_POLL_S`` while any partition is held
  back, and with every one held back it waits for a buffer to drain, not for a second.
- the stream: Faust's ``Stream`` iterator spends ~10% of the worker per event on what the
  worker does not use (processors, ``current_event`` context, per-message sensors, a weak
  set of unacked messages, an ``asyncio.sleep(0)`` per event). ``AgentEvents`` takes the
  agent's events straight from the queue Faust's conductor fills for its stream and keeps
  its duties that matter: events fetched before a rebalance are acked and dropped, and
  messages are tracked as unacked where Faust would wait for them (``stream_wait_empty``,
  which the worker turns off: it acks only applied events, and a restart redelivers).

One thing is added: ``FastConsumer.rewind``, which reads a partition again from an
offset below what Faust has already read (the worker's state lost the events after it).

The worker's end and its log are ``AgentEvents`` (it ends where Faust stops the agent) and
``Worker`` (log colours only on a terminal, no spinner, SIGHUP as SIGTERM).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import signal
import sys
from collections.abc import Coroutine, Generator
from typing import Any

import faust
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread, Consumer, Transport
from mode.services import WaitResults
from mode.utils.logging import DEFAULT_COLOR_FORMAT, DEFAULT_COLORS

WRITTEN_FOR = "0.15"  # faust-streaming minor release whose internals these overrides replace
_installed = importlib.metadata.version("faust-streaming")
if _installed.rsplit(".", 1)[0] != WRITTEN_FOR:
    raise ImportError(
        f"stream.worker.faust_patches overrides private internals of faust-streaming"
        f" {WRITTEN_FOR}.x, but {_installed} is installed: re-check each override and update"
        f" WRITTEN_FOR"
    )

FETCH_MAX_WAIT_MS = 20
BUFFERED_POLL_S = 0.02
HELD_BACK_MAX_S = 1.0  # Faust's own wait, kept as the bound


class _Resumed:
    """Awaitable that finishes a coroutine whose first step already ran (and yielded
    ``pending``): the task awaiting this drives the rest exactly as it would have."""

    def __init__(self, coro: Coroutine[Any, Any, Any], pending: Any) -> None:
        self.coro = coro
        self.pending = pending

    def __await__(self) -> Generator[Any, Any, Any]:
        coro, value = self.coro, self.pending
        while True:
            try:
                sent = yield value
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:  # cancellation included: it goes into the coroutine
                try:
                    value = coro.throw(exc)
                except StopIteration as done:
                    return done.value
            else:
                try:
                    value = coro.send(sent)
                except StopIteration as done:
                    return done.value


def _close(awaitables: tuple[Any, ...]) -> None:
    for a in awaitables:
        if isinstance(a, Coroutine):
            a.close()  # never started: closing keeps "never awaited" warnings away


class _ConsumerThread(AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS  # read once, by start()
        return consumer


class FastConsumer(Consumer):
    def _new_consumer_thread(self) -> _ConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def wait_first(self, *coros: Any, timeout: Any = None) -> WaitResults:
        """``Service.wait_first`` whose first awaitable, when it finishes without blocking,
        wins without any task being made (see the module docstring)."""
        first = coros[0] if coros else None
        if (
            timeout is not None
            or not isinstance(first, Coroutine)
            or self.should_stop
            or self._crashed.is_set()
            or self.suspend_flow.is_set()
        ):
            return await super().wait_first(*coros, timeout=timeout)
        try:
            pending = first.send(None)
        except StopIteration as done:
            _close(coros[1:])
            return WaitResults([first], [done.value], False)
        except BaseException:
            _close(coros[1:])
            raise
        return await super().wait_first(_Resumed(first, pending), *coros[1:])

    _drained: asyncio.Event | None = None  # set when a held-back partition may fetch again

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._rewinding: set[Any] = set()  # partitions sought back, replay not seen yet

    async def rewind(self, tp: Any, offset: int) -> None:
        """Read ``tp`` again from ``offset`` (the state lost what came after it).

        Faust drops a record whose offset is below the last one it read from its
        partition, and records fetched before the seek still pass through and raise that
        mark. Until the agent sees the replay begin (``rewound``), each fetch therefore
        clears the mark of ``tp`` before its records are read; the agent drops the records
        fetched before the seek."""
        self._rewinding.add(tp)
        await self.seek_wait({tp: offset})

    def rewound(self, tp: Any) -> None:
        """The replay of ``tp`` reached the agent: Faust's own mark holds again."""
        self._rewinding.discard(tp)

    async def perform_seek(self) -> None:
        """After a rebalance every partition starts at its committed offset: no rewind
        under way survives it."""
        self._rewinding = set()
        await super().perform_seek()

    def on_buffer_drop(self, tp: Any) -> None:
        super().on_buffer_drop(tp)
        if self._drained is not None:
            self._drained.set()

    async def _wait_next_records(self, timeout: float) -> Any:
        """Faust's poll, short while a full stream buffer holds a partition back (see the
        module docstring)."""
        if self._buffered_partitions:
            timeout = min(timeout, BUFFERED_POLL_S)
            if not self._get_active_partitions():  # Faust would sleep 1 s
                if self._drained is None:
                    self._drained = asyncio.Event()
                self._drained.clear()  # no await since the check: no drop can be missed
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._drained.wait(), HELD_BACK_MAX_S)
        fetched = await super()._wait_next_records(timeout)
        for tp in self._rewinding:
            self._read_offset[tp] = None  # see rewind()
        return fetched


class AgentEvents:
    """An agent's events, from its stream's channel queue (see the module docstring).

    An async iterator, as Faust's ``Stream`` is, because that is how Faust ends an agent:
    ``Actor.cancel`` (on stop, and on an isolated partition's revocation) throws
    ``StopAsyncIteration`` into the channel, and an iterator's ``__anext__`` raising it is
    the end of the agent's ``async for``. Taken from the queue any other way it escaped the
    agent as an error: every SIGTERM logged ``Crashed reason=StopAsyncIteration()`` with a
    traceback. Anything else Faust throws into the channel still reaches the agent.
    """

    def __init__(self, stream: Any) -> None:
        self.app = stream.app
        self.queue = stream.channel.queue
        # read once: Faust's settings and its app properties cost a lookup chain per access
        self._track = self.app.conf.stream_wait_empty  # the only reader of the unacked set
        self._flowing = self.app.flow_control.is_active

    def __aiter__(self) -> AgentEvents:
        return self

    async def __anext__(self) -> Any:
        """The next event to apply; raises what Faust threw into the channel."""
        app, flowing, get = self.app, self._flowing, self.queue.get
        while True:
            event = await get()
            message = event.message
            if not flowing() or message.generation_id != app.consumer_generation_id:
                event.ack()  # fetched before a rebalance: Faust's stream skips it the same way
                continue
            if self._track and not message.tracked and message.topic in app.topics.acking_topics:
                message.tracked = True
                app.consumer.track_message(message)
            return event

    @staticmethod
    def ack(event: Any) -> None:
        """Once applied: the offset may be committed when every earlier one is too."""
        event.ack()


class _Transport(Transport):
    Consumer = FastConsumer


class App(faust.App):
    """Faust with this module's consumer; the only place its Kafka layer is touched."""

    def _new_transport(self) -> Any:
        return _Transport(self.conf.broker_consumer, self)


class Worker(faust.Worker):
    """Faust's worker, ending on SIGHUP as on SIGTERM, with a log that is plain text
    wherever it does not go to a terminal.

    - Faust picks log colours, and the line-drawing codes of the tables it logs, by whether
      *stdout* is a terminal, while its handler writes to *stderr*: ``rfm worker
      2>worker.log`` typed in a terminal filled the file with escape codes. Here both ask
      stderr, the stream the log goes to (and colorlog still honours ``NO_COLOR`` and
      ``FORCE_COLOR``).
    - Faust's start-up spinner writes cursor hide/show codes and backspaces to stdout
      without asking whether it is a terminal (they ended up in every log file), and while
      it exists it sets the root logger to DEBUG so that every record reaches it. The
      worker runs ``quiet`` and shows no spinner: there is none.
    - A hang-up (the terminal closed) ends the worker as SIGTERM does: it leaves its group
      instead of being killed and waiting out its session timeout.
    """

    def __init__(self, app: faust.App, **kwargs: Any) -> None:
        colored = {
            "()": "mode.utils.logging.ExtensionFormatter",
            "format": DEFAULT_COLOR_FORMAT,
            "log_colors": DEFAULT_COLORS,
            "stream": sys.stderr,  # where mode's handler (a plain StreamHandler) writes
        }
        config = {"merge": True, "formatters": {"colored": colored}}
        super().__init__(app, logfile=sys.stderr, logging_config=config, **kwargs)
        self.spinner = None

    def install_signal_handlers(self) -> None:
        super().install_signal_handlers()
        self.loop.add_signal_handler(signal.SIGHUP, self._on_sigterm)
