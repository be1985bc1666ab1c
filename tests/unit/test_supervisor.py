"""``stream.process.Supervisor``: a command signalled (SIGTERM, SIGINT, SIGHUP) stops the
children it started in sessions of their own, and ends as after Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from stream.process import alive
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
