"""Every command checks the settings the same way before it does anything: a scheme setting
the worker would refuse stops `rfm export` or `rfm import` too, with the same one line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
REFUSAL = (
    "Error: configuration error: scoring.scheme: scheme 'rfm_classic': not a preset "
    "(rfm-classic, rfim, simple) nor a file"
)


@pytest.mark.parametrize(
    "command",
    [
        ["export"],
        ["import", "{events}", "--kind", "orders"],
        ["refresh"],
        ["worker"],
        ["api"],
        ["collect"],
        ["campaigns", "--rules", "{rules}"],
    ],
)
def test_a_scheme_the_worker_refuses_stops_every_command(
    command: list[str], tmp_path: Path
) -> None:
    config = tmp_path / "rfm.toml"
    config.write_text('[scoring]\nscheme = "rfm_classic"\n', encoding="utf-8")
    events = tmp_path / "orders.jsonl"
    events.write_text("", encoding="utf-8")
    rules = tmp_path / "rules.toml"
    rules.write_text("", encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RFM_")}
    # nothing listens there: a command that went on would fail on the connection instead
    env.update(
        RFM_CONFIG=str(config),
        RFM_KAFKA_BOOTSTRAP="127.0.0.1:1",
        RFM_REDIS_URL="redis://127.0.0.1:1/0",
    )
    args = [part.format(events=events, rules=rules) for part in command]
    done = subprocess.run(
        [sys.executable, "-m", "stream.cli", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert REFUSAL in done.stderr.splitlines(), done.stderr
    assert "Traceback" not in done.stderr
