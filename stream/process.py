"""Child processes: started in a session of their own, waited on with a probe and a deadline,
stopped by process group (SIGTERM, then SIGKILL), never by name.

A session of its own puts the child and everything it starts in one process group, so a
stop reaches exactly that and nothing else, and terminal hang-ups or Ctrl-C meant for the
parent leave it alone. Output goes to a log file whose tail explains a failure.
Used by `rfm stack` (whose daemons outlive the process that started them, so stopping works
from a bare pid too), `rfm demo`, the benchmarks and the tests; nothing here imports Faust.

Because a session of its own also shields a child from signals meant for the command that
started it, such a command stops its children itself, on every way out: ``Supervisor``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any, Self, TypeVar

__all__ = [
    "STOP_SIGNALS",
    "Child",
    "Children",
    "ProcessExited",
    "Supervisor",
    "alive",
    "run_logged",
    "signal_group",
    "stop_all",
    "stop_groups",
    "wait_until",
]

POLL = 0.1  # seconds between two looks at a process or a probe
STOP_GRACE = 30.0  # from SIGTERM to SIGKILL, unless the caller says otherwise
KILL_GRACE = 10.0  # from SIGKILL to giving up on the process
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)  # Ctrl-C, stop, terminal gone
RECANCEL_S = 1.0  # until_stopped: how often a stop signal's cancellation is repeated

T = TypeVar("T")


class ProcessExited(RuntimeError):
    """The child ended while it was awaited to become ready; the message holds its log tail."""


def alive(pid: int) -> bool:
    """Running, by /proc: a zombie (exited, not yet reaped) counts as gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return False
    state = stat[stat.rfind(b")") + 2 :][:1]  # the field after "(comm)"; comm may hold spaces
    return state not in (b"Z", b"X", b"")


def wait_until(
    probe: Callable[[], T | None],
    *,
    deadline: float,
    check: Callable[[], None] | None = None,
    interval: float = POLL,
) -> T | None:
    """Call ``probe`` until it returns something truthy and return that, or None once
    ``time.monotonic()`` reaches ``deadline``. ``check`` runs after every miss and may raise
    (say, because the process that should answer has exited)."""
    while True:
        value = probe()
        if value:
            return value
        if check is not None:
            check()
        if time.monotonic() >= deadline:
            return None
        time.sleep(interval)


def signal_group(pid: int, sig: int) -> None:
    """Signal the process group ``pid`` leads (its own session made pgid == pid)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def _wait_gone(pids: list[int], deadline: float) -> list[int]:
    while True:
        pids = [pid for pid in pids if alive(pid)]
        if not pids or time.monotonic() >= deadline:
            return pids
        time.sleep(POLL)


def stop_groups(
    pids: Sequence[int],
    *,
    sig: int = signal.SIGTERM,
    grace: float = STOP_GRACE,
    kill_grace: float = KILL_GRACE,
    on_kill: Callable[[int], None] | None = None,
) -> list[int]:
    """Stop the groups these session leaders lead, all at once: ``sig``, then SIGKILL to any
    still running after ``grace`` (``on_kill(pid)`` says so first). Returns the pids that
    survived even SIGKILL for ``kill_grace``.

    Once a leader is gone, its group gets SIGKILL too: stragglers it left behind.
    """
    for pid in pids:
        signal_group(pid, sig)
    stubborn = _wait_gone(list(pids), time.monotonic() + grace)
    for pid in stubborn:
        if on_kill is not None:
            on_kill(pid)
        signal_group(pid, signal.SIGKILL)
    survivors = _wait_gone(stubborn, time.monotonic() + kill_grace)
    for pid in pids:
        signal_group(pid, signal.SIGKILL)
    return survivors


def run_logged(
    argv: Sequence[str], log: Path, *, cwd: Path | None = None, deadline: float
) -> int | None:
    """Run a one-shot tool, its output appended to ``log``; its exit code, None if it was
    still running at ``deadline`` (it is killed then)."""
    try:
        with open(log, "ab") as out:
            return subprocess.run(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                timeout=max(1.0, deadline - time.monotonic()),
                check=False,
            ).returncode
    except subprocess.TimeoutExpired:
        return None


class Child:
    """One child process with its output (stdout and stderr) appended to ``log``
    (``os.devnull`` discards it); ``env`` None inherits ours."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        env: Mapping[str, str] | None,
        log: Path,
        *,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.env = dict(env) if env is not None else None
        self.log = log
        self.cwd = cwd
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Self:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                self.argv,
                env=self.env,
                cwd=self.cwd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None, "not started"
        return self.proc.pid

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def returncode(self) -> int | None:
        """The exit code once it has exited (reaping it), else None."""
        return None if self.proc is None else self.proc.poll()

    def wait(self, timeout: float) -> int:
        assert self.proc is not None, "not started"
        return self.proc.wait(timeout)

    def wait_ready(
        self, probe: Callable[[], object], *, timeout: float, what: str, interval: float = POLL
    ) -> None:
        """Poll ``probe`` until it answers truthy; raise ProcessExited if the child ends
        first, TimeoutError at the deadline (both with the log tail)."""

        def running() -> None:
            if not self.alive:
                raise ProcessExited(f"{self.name} exited with {self.returncode}\n{self.tail()}")

        deadline = time.monotonic() + timeout
        if not wait_until(probe, deadline=deadline, check=running, interval=interval):
            raise TimeoutError(f"{self.name}: no {what} within {timeout:.0f}s\n{self.tail()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = STOP_GRACE) -> int | None:
        """Send ``sig`` to its process group, SIGKILL it if it has not exited after
        ``timeout``; returns its exit code (None if it never started)."""
        stop_all([self], sig=sig, timeout=timeout)
        return self.returncode

    def tail(self, lines: int = 40) -> str:
        try:
            text = self.log.read_text(errors="replace").splitlines()
        except OSError:
            return f"(no {self.name} log at {self.log})"
        return f"{self.name} log tail ({self.log}):\n" + "\n".join(text[-lines:])


def stop_all(
    children: Iterable[Child], *, sig: int = signal.SIGTERM, timeout: float = STOP_GRACE
) -> None:
    """Stop these children at once (see ``stop_groups``) and reap them; a child that already
    exited is only reaped, never signalled (its pid may be someone else's by now)."""
    running = [child for child in children if child.alive]
    survivors = stop_groups([child.pid for child in running], sig=sig, grace=timeout)
    for child in running:
        if child.pid in survivors:
            raise RuntimeError(f"{child.name} (pid {child.pid}) survived SIGKILL")
        child.wait(KILL_GRACE)


class Children:
    """Several children watched as one (workers of one consumer group): alive only while
    every one is, and a tail of each."""

    def __init__(self, children: Sequence[Child]) -> None:
        self.children = list(children)
        self.name = f"{len(self.children)} x {self.children[0].name}" if children else "nobody"

    @property
    def alive(self) -> bool:
        return all(c.alive for c in self.children)

    def tail(self, lines: int = 40) -> str:
        return "\n".join(c.tail(lines) for c in self.children)


class Supervisor:
    """A command that runs children in the foreground (``rfm demo``, ``rfm bench``): each
    child ``start``ed through it is stopped on every way out of the ``with`` block
    (``stop_all``: SIGTERM, ``grace``, SIGKILL).

    Within the block SIGTERM and SIGHUP end the command as Ctrl-C does, by raising
    KeyboardInterrupt in the main thread, so the clean-up on the way runs for all three (by
    default SIGTERM and SIGHUP would end the process on the spot, and its children, in
    sessions of their own, would keep running). Only the first raises: later ones are
    ignored while the clean-up it started runs, and so are those arriving while the children
    are being stopped. A signal the command was started ignoring (``nohup``, a background
    job) stays ignored. ``signalled`` names the signal that ended the block, if one did.
    """

    def __init__(self, *, grace: float = STOP_GRACE) -> None:
        self.grace = grace
        self.children: list[Child] = []
        self.signalled: signal.Signals | None = None
        self._saved: dict[int, Any] = {}

    def start(self, child: Child) -> Child:
        self.children.append(child)
        return child.start()

    def __enter__(self) -> Self:
        for sig in STOP_SIGNALS:
            if signal.getsignal(sig) is not signal.SIG_IGN:
                self._saved[sig] = signal.signal(sig, self._interrupt)
        return self

    def _ignore(self) -> None:
        for sig in self._saved:
            signal.signal(sig, signal.SIG_IGN)

    def _interrupt(self, signum: int, _frame: FrameType | None) -> None:
        self._ignore()
        self.signalled = signal.Signals(signum)
        raise KeyboardInterrupt(self.signalled.name)

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._ignore()
        try:
            stop_all(self.children, timeout=self.grace)
        finally:
            for sig, handler in self._saved.items():
                signal.signal(sig, handler)


async def until_stopped(work: Coroutine[Any, Any, None]) -> bool:
    """Run ``work`` until it ends or a stop signal comes; True when a signal ended it.

    Inside ``Supervisor`` a signal raises KeyboardInterrupt wherever the main thread is, and
    Python swallows an exception raised in some places (a weakref callback run by the
    garbage collector: "Exception ignored in ..."), which would leave the command running.
    The event loop's own signal handling cancels the work from the loop instead, so no
    signal is lost while it runs; the handlers in force before are put back after."""
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(work)
    saved = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    stopped = False

    def stop() -> None:
        nonlocal stopped
        stopped = True
        cancel()

    def cancel() -> None:
        # again every second until the work ends: code under it may take one cancellation
        # for its own (an ``asyncio.timeout`` expiring in the same turn turns it into a
        # TimeoutError, which a retry loop then absorbs), and the demo ran on
        if not task.done():
            task.cancel()
            loop.call_later(RECANCEL_S, cancel)

    watched = [sig for sig, handler in saved.items() if handler is not signal.SIG_IGN]
    for sig in watched:
        loop.add_signal_handler(sig, stop)
    try:
        await task
    except asyncio.CancelledError:
        if not (stopped and task.cancelled()):  # not ours, or this coroutine is cancelled
            task.cancel()
            raise
    finally:
        for sig in watched:
            loop.remove_signal_handler(sig)
            signal.signal(sig, saved[sig])
    return stopped
