"""The checks every hand-read document here makes: unknown keys, value types, fixed choices.

Settings (``stream.config``), scheme files (``stream.schemes``) and campaign rule files
(``consumers.campaigns.rules``) refuse the same mistakes, each with its own error class and its
own way of saying where the mistake is. So every check takes ``fail``: given the key path
(``scoring.buckets``) and the problem, it returns the caller's exception, which the check
raises. The problems read the same in all three.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

__all__ = ["Fail", "choice", "expect_bool", "expect_int", "expect_table", "known_keys"]

Fail = Callable[[str, str], Exception]


def known_keys(
    table: Mapping[str, object],
    allowed: Sequence[str],
    path: str,
    fail: Fail,
    *,
    kind: str = "field",
) -> None:
    """Refuse the first key of ``table`` (at ``path``) not in ``allowed``, listing those."""
    for key in table:
        if key not in allowed:
            where = f"{path}.{key}" if path else str(key)
            raise fail(where, f"unknown {kind} (allowed: {', '.join(allowed)})")


def expect_table(value: object, path: str, fail: Fail) -> Mapping[str, Any]:
    """``value`` if it is a table (a TOML table, a YAML mapping)."""
    if not isinstance(value, Mapping):
        raise fail(path, f"expected a table, got {value!r}")
    return value


def expect_int(
    value: object, path: str, fail: Fail, lo: int | None = None, hi: int | None = None
) -> int:
    """``value`` if it is an integer (``true`` is not one), within ``lo..hi`` when given."""
    if lo is None or hi is None:
        if isinstance(value, bool) or not isinstance(value, int):
            raise fail(path, f"expected an integer, got {value!r}")
        return value
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise fail(path, f"expected an integer from {lo} to {hi}, got {value!r}")
    return value


def expect_bool(value: object, path: str, fail: Fail) -> bool:
    """``value`` if it is ``true`` or ``false``."""
    if not isinstance(value, bool):
        raise fail(path, f"expected true or false, got {value!r}")
    return value


def choice(value: object, allowed: Sequence[str], path: str, fail: Fail) -> str:
    """``value`` if it is one of ``allowed``."""
    if not isinstance(value, str) or value not in allowed:
        raise fail(path, f"must be one of {', '.join(allowed)}; got {value!r}")
    return value
