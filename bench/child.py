"""A child process (worker, baseline consumer, importer, campaigns) with its output in a log.

Each runs in its own session, so stopping it reaches whatever it started and nothing else;
its log tail goes into the error when a measurement cannot finish.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Self


class Child:
    def __init__(self, name: str, argv: Sequence[str], env: dict[str, str], log: Path) -> None:
        self.name = name
        self.argv = list(argv)
        self.env = env
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Self:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                self.argv,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
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

    def wait(self, timeout: float) -> int:
        assert self.proc is not None, "not started"
        return self.proc.wait(timeout)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int | None:
        """Send ``sig`` to its process group, SIGKILL it if it has not exited after
        ``timeout``; returns its exit code (None if it never started)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        return self.proc.returncode

    def tail(self, lines: int = 40) -> str:
        try:
            text = self.log.read_text(errors="replace").splitlines()
        except OSError:
            return f"(no {self.name} log at {self.log})"
        return f"{self.name} log tail ({self.log}):\n" + "\n".join(text[-lines:])


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
