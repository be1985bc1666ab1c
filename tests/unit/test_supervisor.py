"""``stream.process.Supervisor``: a command signalled (SIGTERM, SIGINT, SIGHUP) stops the
children it started in sessions of their own, and ends as after Ctrl-C."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from stream.process import alive, until_stopped
from tests.support import wait_for

COMMAND = """
import sys, time
from pathlib import Path
from stream.process import Child, Supervisor
with Supervisor(grace=5) as children:
    try:
        child = children.start(Child("sleeper", ["sleep", "300"], None, Path(sys.argv[1])))
        print(child.pid, flush=True)
        time.sleep(300)
    except KeyboardInterrupt:
        pass
"""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_a_signalled_command_stops_its_children_and_exits_0(
    tmp_path: Path, sig: signal.Signals
) -> None:
    command = subprocess.Popen(
        [sys.executable, "-c", COMMAND, str(tmp_path / "child.log")],
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        assert command.stdout is not None
        child = int(command.stdout.readline())
        assert alive(child)
        os.kill(command.pid, sig)
        assert command.wait(30) == 0
        wait_for(lambda: not alive(child), timeout=10, what="the child stopped")
    finally:
        if command.poll() is None:
            os.killpg(command.pid, signal.SIGKILL)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_a_stop_signal_cancels_the_work_from_the_loop_and_handlers_come_back(
    sig: signal.Signals,
) -> None:
    """``until_stopped``: the signal ends the work through the loop (no KeyboardInterrupt
    thrown into whatever code runs), says so, and leaves the handlers as it found them."""
    seen: list[str] = []

    def mine(_signum: int, _frame: object) -> None:
        seen.append("handler before")

    async def forever() -> None:
        asyncio.get_running_loop().call_later(0.05, os.kill, os.getpid(), sig)
        try:
            await asyncio.Event().wait()
        finally:
            seen.append("work cancelled")

    before = {s: signal.signal(s, mine) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    try:
        assert asyncio.run(asyncio.wait_for(until_stopped(forever()), 10)) is True
        assert seen == ["work cancelled"]
        assert all(signal.getsignal(s) is mine for s in before)

        async def brief() -> None:
            await asyncio.sleep(0)

        assert asyncio.run(until_stopped(brief())) is False
    finally:
        for s, handler in before.items():
            signal.signal(s, handler)


def test_work_that_swallows_a_cancellation_is_cancelled_again() -> None:
    """Code under the work may take a cancellation for its own (a timeout expiring in the
    same turn, then a retry): the stop is repeated until the work ends."""
    swallowed = 0
    late: list[str] = []  # the deadline passed before the work ended

    async def stubborn() -> None:
        nonlocal swallowed
        loop = asyncio.get_running_loop()
        loop.call_later(0.05, os.kill, os.getpid(), signal.SIGTERM)
        loop.call_later(8, late.append, "deadline")
        while True:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                swallowed += 1
                if swallowed > 1:
                    raise

    before = signal.getsignal(signal.SIGTERM)
    try:
        assert asyncio.run(asyncio.wait_for(until_stopped(stubborn()), 10)) is True
    finally:
        signal.signal(signal.SIGTERM, before)
    assert swallowed == 2
    assert late == [], "the stop was not repeated: the work ran to the deadline"
