"""What every settings section shares: the error that names a setting, durations, and the
shared checks (``stream.validation``) bound to that error."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from stream.validation import choice, expect_int, expect_table, known_keys


class ConfigError(ValueError):
    """A setting is unknown or has a bad value; the message names it."""


def fail(setting: str, problem: str) -> ConfigError:
    return ConfigError(f"{setting}: {problem}")


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_MAX_DURATION_S = 10 * 366 * 86400.0
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0, None: 1.0}


def parse_duration(name: str, value: Any) -> float:
    """Seconds from ``"60s"``, ``"5m"``, ``"30d"``, ``"13w"``, ``"250ms"`` or a bare number
    of seconds."""
    if isinstance(value, bool):
        raise ConfigError(f"{name}: expected a duration like '60s', got {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value))
        if not match:
            raise ConfigError(f"{name}: expected a duration like '60s' or '5m', got {value!r}")
        seconds = float(match.group(1)) * _UNIT_S[match.group(2)]
    if not math.isfinite(seconds) or seconds < 0 or seconds > _MAX_DURATION_S:
        raise ConfigError(f"{name}: must be a finite duration from 0 to 10 years, got {value!r}")
    return seconds


def as_int(name: str, value: Any, lo: int, hi: int) -> int:
    return expect_int(value, name, fail, lo, hi)


def as_choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    return choice(value, choices, name, fail)


def as_table(name: str, value: Any, allowed: tuple[str, ...]) -> Mapping[str, Any]:
    table = expect_table(value, name, fail)
    known_keys(table, allowed, name, fail, kind="setting")
    return table
