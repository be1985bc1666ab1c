"""Optional py-spy sampling of a consumer process during its timed window (``--profile``).

The throughput figures say how fast; this says where the time goes. py-spy attaches to the
running worker (or baseline) without restarting it and writes collapsed stacks, which are
summed here into each function's share of the on-CPU samples (idle waits in the event
loop are not sampled), so the hot spots can be named in numbers.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from stream.process import Child


@dataclass(frozen=True)
class HotSpot:
    function: str  # "path/file.py:function"
    inclusive: float  # share of samples with the function anywhere on the stack
    own: float  # share of samples with the function on top


def py_spy() -> str | None:
    found = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
    return found


class Profiler:
    """``py-spy record`` on ``pid`` from ``start()`` until ``stop()``; stacks to ``out``."""

    def __init__(self, pid: int, out: Path, rate: int = 200) -> None:
        self.pid = pid
        self.out = out
        self.rate = rate
        self.child: Child | None = None

    def start(self) -> bool:
        exe = py_spy()
        if exe is None:
            return False
        argv = [exe, "record", "--pid", str(self.pid), "--rate", str(self.rate)]
        argv += ["--nonblocking", "--format", "raw", "--output", str(self.out)]
        self.child = Child("py-spy", argv, None, Path(os.devnull)).start()
        return True

    def stop(self) -> Path | None:
        if self.child is None:
            return None
        self.child.stop(signal.SIGINT)  # py-spy writes its output on Ctrl-C
        return self.out if self.out.exists() else None


def _frame(raw: str) -> str:
    """``"fold (/x/stream/shell/processor.py:294)"`` -> ``"stream/shell/processor.py:fold"``."""
    name, _, where = raw.rpartition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    parts = Path(path).parts
    for anchor in ("site-packages", "stream", "bench", "consumers"):
        if anchor in parts:
            at = parts.index(anchor)
            parts = parts[at + 1 :] if anchor == "site-packages" else parts[at:]
            break
    else:
        parts = parts[-2:]
    return f"{'/'.join(parts)}:{name or raw}"


def hot_spots(folded: Path, top: int = 12) -> list[HotSpot]:
    """Our functions by inclusive share, then the top frames of any code by own share."""
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in folded.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [_frame(f) for f in stack.split(";") if f]
        if not frames:
            continue
        total += n
        for name in set(frames):
            inclusive[name] += n
        own[frames[-1]] += n
    if not total:
        return []
    ours = [name for name, _ in inclusive.most_common() if name.startswith(("stream/", "bench/"))]
    leaves = [name for name, _ in own.most_common(top)]
    picked = ours[:top] + [name for name in leaves if name not in ours[:top]]
    return [HotSpot(name, inclusive[name] / total, own[name] / total) for name in picked]
