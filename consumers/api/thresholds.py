"""The thresholds document: the edges scores are cut at, in the units an operator reads. Pure.

Stored edges are internal units (R = last order time in epoch ms, M = minor units); they are
shown as RFC 3339 times and decimal strings. A score is ``1 + #{k : value > edge_k}``.
"""

from __future__ import annotations

from typing import Any

from stream.config import Settings
from stream.core.changes import iso_ms
from stream.core.money import format_minor
from stream.core.scoring import Thresholds


def _edges(t: Thresholds, decimals: int) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for dim, edges in t.edges.items():
        if dim == "r":
            out[dim] = [iso_ms(e) for e in edges]
        elif dim == "m":
            out[dim] = [format_minor(e, decimals) for e in edges]
        else:
            out[dim] = list(edges)
    return out


def _version(t: Thresholds, decimals: int) -> dict[str, Any]:
    return {
        "version": t.version,
        "computed_at": iso_ms(t.computed_at) if t.computed_at else None,
        "population": dict(t.population),
        "edges": _edges(t, decimals),
    }


def thresholds_doc(current: Thresholds, settled: Thresholds, settings: Settings) -> dict[str, Any]:
    """Quantile mode: the current version and the settled base (the last version every
    customer has been re-scored against). Fixed mode: the configured edges (R in days since
    the last order, fewer is better; M in major units)."""
    scoring = settings.scoring
    doc: dict[str, Any] = {
        "mode": scoring.mode,
        "buckets": scoring.buckets,
        "scheme": scoring.scheme,
        "window_days": scoring.window_days,
        "clock": scoring.clock,
    }
    decimals = settings.store.currency_decimals
    if scoring.mode == "fixed":
        doc["edges"] = {dim: list(edges) for dim, edges in scoring.edges.items()}
        doc["units"] = {"r": "days since last order", "m": settings.store.currency}
    else:
        doc["current"] = _version(current, decimals)
        doc["settled"] = _version(settled, decimals)
        doc["units"] = {"r": "last order time", "m": settings.store.currency}
    return doc
