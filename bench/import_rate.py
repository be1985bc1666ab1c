"""`rfm import` events/s: the real command publishing the workload as a JSONL file.

Back-filling history is how a deployment starts, so how fast it goes matters on its own;
the figure is the command's own report (file read, keys extracted, records acknowledged by
the broker), parsed from its last line.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench import BenchError
from stream.process import Child

_REPORT = re.compile(rb"published (\d+) events to \S+ in [\d.]+s \(([\d,]+)/s\)")


@dataclass(frozen=True)
class ImportRate:
    events: int
    events_per_s: float
    seconds: float  # the whole command, interpreter start-up included


def measure(
    env: dict[str, str], values: Sequence[bytes], scratch: Path, timeout_s: float
) -> ImportRate:
    data = scratch / "orders.jsonl"
    data.write_bytes(b"\n".join(values) + b"\n")
    child = Child(
        "rfm import",
        [sys.executable, "-m", "stream.cli", "import", str(data), "--kind", "orders"],
        env,
        scratch / "import.log",
    )
    started = time.perf_counter()
    child.start()
    try:
        code = child.wait(timeout_s)
    except subprocess.TimeoutExpired:
        raise BenchError(f"rfm import did not finish in {timeout_s:.0f}s\n{child.tail()}") from None
    finally:
        child.stop()
    took = time.perf_counter() - started
    found = _REPORT.search(child.log.read_bytes())
    if code != 0 or found is None:
        raise BenchError(f"rfm import failed (exit {code})\n{child.tail()}")
    return ImportRate(int(found.group(1)), float(found.group(2).replace(b",", b"")), took)
