"""docs/getting-started.md, run as written: its marked shell blocks go, in order, into one
bash (as a reader's terminal: jobs, files and the working directory carry over) against a
real Kafka and Redis, and each step must show what the page says it shows.

Only two things differ from a reader's run: the deployment is this test's own namespace
(topic and key prefixes, consumer group, from the environment, as the page suggests), and
the API's port 8080 is replaced by a free one, so that the test never meets another API.
The set-up step installs system packages and starts the stack, so it is not run: each of
its commands is checked to exist instead.
"""

from __future__ import annotations

import os
import queue
import re
import shlex
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import orjson
import pytest

from stream.process import stop_groups
from tests.conftest import Isolated
from tests.support import wait_for

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "getting-started.md"
STEPS = [
    "setup",
    "start",
    "healthz",
    "publish",
    "customer",
    "bad-event",
    "dlq",
    "replay",
    "customer-after",
    "stop",
]
DONE = "::step-done::"
FAILED = "::command-failed::"


@dataclass(frozen=True)
class Step:
    name: str
    commands: str
    shown: str | None  # the block right after it: what the page says the reader sees
    shown_lang: str | None


def steps(text: str) -> list[Step]:
    """Every ``<!-- walkthrough: NAME -->`` + ```sh block, with the fenced text or JSON block
    that follows it directly (only blank lines between), if any."""
    marker = re.compile(r"<!-- walkthrough: ([\w-]+) -->\n```sh\n(.*?)```\n", re.S)
    fence = re.compile(r"\n*```(text|json)\n(.*?)```\n", re.S)
    found = []
    for m in marker.finditer(text):
        after = fence.match(text, m.end())
        shown, lang = (after.group(2), after.group(1)) if after else (None, None)
        found.append(Step(m.group(1), m.group(2), shown, lang))
    return found


class Shell:
    """One bash fed step by step on stdin, its output read until the step's end marker.
    Every failing command is reported (an ERR trap), not only the last one's status."""

    def __init__(self, env: dict[str, str], cwd: Path) -> None:
        self.proc = subprocess.Popen(
            ["bash", "--norc", "--noprofile"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
            text=True,
            start_new_session=True,  # its jobs share its process group: stopped as one
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        assert self.proc.stdout is not None
        threading.Thread(target=self._pump, args=(self.proc.stdout,), daemon=True).start()
        self.run(f"trap 'echo \"{FAILED} $? $BASH_COMMAND\"' ERR")

    def _pump(self, out: IO[str]) -> None:
        for line in out:
            self.lines.put(line)
        self.lines.put(None)

    def run(self, commands: str, timeout: float = 120, *, check: bool = True) -> str:
        """The output of ``commands``; fails naming any command that failed (with ``check``;
        without, a failure is only left in the output, for a probe to retry)."""
        assert self.proc.stdin is not None
        # a new line first: output without a final one (curl's) must not hide the marker
        self.proc.stdin.write(commands.rstrip("\n") + f"\necho; echo {DONE}\n")
        self.proc.stdin.flush()
        out = self.read(timeout)
        failed = [line for line in out.splitlines() if line.startswith(FAILED)]
        assert not (check and failed), f"a command of the page failed:\n{out}"
        return out

    def read(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        got: list[str] = []
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(
                    f"no end of step within {timeout:.0f}s:\n{''.join(got)}"
                ) from None
            if line is None:
                raise AssertionError(f"the shell exited:\n{''.join(got)}")
            if line.strip() == DONE:
                return "".join(got)
            got.append(line)

    def members(self) -> list[int]:
        """Processes in the shell's group other than the shell itself."""
        out = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                text = stat.read_text()
            except OSError:
                continue
            fields = text[text.rfind(")") + 2 :].split()
            pid = int(stat.parent.name)
            if int(fields[2]) == self.proc.pid and pid != self.proc.pid and fields[0] != "Z":
                out.append(pid)
        return out

    def close(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
        stop_groups([self.proc.pid], grace=20)
        self.proc.wait(10)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def shell(isolated: Isolated) -> Iterator[Shell]:
    env = isolated.process_env()
    venv_bin = str(Path(sys.executable).parent)
    env["PATH"] = venv_bin + os.pathsep + env.get("PATH", "")
    sh = Shell(env, isolated.tmp)
    try:
        yield sh
    finally:
        sh.close()


def within(want: Any, got: Any) -> bool:
    """``got`` holds everything ``want`` shows (the page shortens JSON answers)."""
    if isinstance(want, dict):
        return isinstance(got, dict) and all(
            k in got and within(v, got[k]) for k, v in want.items()
        )
    return bool(want == got)


def customer_as_shown(sh: Shell, step: Step, commands: str) -> None:
    """Re-run the lookup, as a reader would, until the customer is what the page shows."""
    assert step.shown is not None and step.shown_lang == "json", f"{step.name}: no JSON shown"
    want = orjson.loads(step.shown)

    def probe() -> bool:
        try:
            return within(want, orjson.loads(sh.run(commands)))
        except orjson.JSONDecodeError:
            return False

    wait_for(probe, timeout=60, interval=0.5, what=f"{step.name}: the customer as the page shows")


def test_the_getting_started_page_runs_as_written(isolated: Isolated, shell: Shell) -> None:
    found = steps(DOC.read_text(encoding="utf-8"))
    assert [s.name for s in found] == STEPS
    by = {s.name: s for s in found}
    prefix = isolated.env["RFM_TOPIC_PREFIX"]
    port = free_port()

    def commands(name: str) -> str:
        return by[name].commands.replace("8080", str(port))

    # set-up: every command it names exists
    for line in by["setup"].commands.splitlines():
        words = shlex.split(line, comments=True)
        if words[0] == "source":
            assert (ROOT / words[1]).is_file(), line
        elif words[0] == "rfm":
            done = subprocess.run(
                [sys.executable, "-m", "stream.cli", *words[1:], "--help"],
                capture_output=True,
                check=False,
            )
            assert done.returncode == 0, f"{line}: {done.stderr.decode()}"
        else:
            assert os.access(ROOT / words[0], os.X_OK), line

    shell.run(commands("start"))
    healthy = (by["healthz"].shown or "").strip()
    assert healthy
    wait_for(
        lambda: shell.run(commands("healthz"), check=False).strip() == healthy,
        timeout=60,
        interval=0.5,
        what="the API's health as the page shows it",
    )

    out = shell.run(commands("publish"))
    assert re.search(rf"^published 3 events? to {re.escape(prefix)}orders\b", out, re.M), out
    assert re.search(rf"^published 1 events? to {re.escape(prefix)}interactions\b", out, re.M)
    customer_as_shown(shell, by["customer"], commands("customer"))

    out = shell.run(commands("bad-event"))
    assert re.search(rf"^published 1 events? to {re.escape(prefix)}orders\b", out, re.M), out

    shown = by["dlq"].shown
    assert shown is not None
    reason = re.search(r"^  reason:  (.*)$", shown, re.M)
    payload = re.search(r'"order_id": "#1002"', shown)
    assert reason is not None and payload is not None

    def dead_letter_shown() -> str | None:
        out = shell.run(commands("dlq"))
        return out if "  reason:  " in out else None

    out = wait_for(dead_letter_shown, timeout=60, interval=0.5, what="a dead letter in rfm dlq")
    assert re.search(rf"^dead letter \d+:\d+  at \S+  from {re.escape(prefix)}orders ", out, re.M)
    assert f"  reason:  {reason.group(1)}\n" in out, out
    assert payload.group(0) in out
    assert f"1 dead letter read from {prefix}dlq" in out

    out = shell.run(commands("replay"))
    assert re.search(
        rf"^replayed dead letter \d+:\d+ to {re.escape(prefix)}orders partition \d+ offset \d+"
        r" \(key c-42\)$",
        out,
        re.M,
    ), out
    customer_as_shown(shell, by["customer-after"], commands("customer-after"))

    assert shell.members(), "the worker and the API should still be running"
    shell.run(commands("stop"))
    wait_for(lambda: not shell.members(), timeout=60, what="the worker and the API to stop")
