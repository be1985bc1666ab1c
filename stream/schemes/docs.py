"""Schemes as Markdown: the preset tables of docs/schemes.md are generated from the files, not
hand-kept (``tests/test_readme.py`` holds them equal)."""

from __future__ import annotations

from stream.core.scheme import SCORE_FIELDS, Range, Scheme, SegmentRule
from stream.schemes.load import PRESETS, load_scheme

__all__ = ["describe_conditions", "describe_range", "presets_markdown", "scheme_table_markdown"]


def describe_range(cond: Range, label: str) -> str:
    """``R 4–5``, ``FM = 5``, ``orders ≥ 2``, ``orders ≤ 1``."""
    if cond.hi is None:
        return f"{label} ≥ {cond.lo}"
    if cond.lo == cond.hi:
        return f"{label} = {cond.lo}"
    if cond.lo == 0 and label == "orders":
        return f"{label} ≤ {cond.hi}"
    return f"{label} {cond.lo}–{cond.hi}"


def describe_conditions(rule: SegmentRule) -> str:
    """Human-readable conditions, e.g. ``R 4–5, FM = 5``."""
    parts: list[str] = []
    for dim in SCORE_FIELDS:
        cond = rule.score_range(dim)
        if cond is not None:
            parts.append(describe_range(cond, dim.upper()))
    if rule.orders is not None:
        parts.append(describe_range(rule.orders, "orders"))
    if rule.has_orders is not None:
        parts.append("has orders" if rule.has_orders else "no orders")
    if rule.has_interactions is not None:
        parts.append("has interactions" if rule.has_interactions else "no interactions")
    return ", ".join(parts) if parts else "anyone else (catch-all)"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def scheme_table_markdown(scheme: Scheme) -> str:
    """A Markdown table of the rules in match order."""
    lines = [
        "| # | segment id | English | 繁體中文 | conditions | suggested action |",
        "|---|---|---|---|---|---|",
    ]
    for n, rule in enumerate(scheme.rules, 1):
        cells = (
            str(n),
            f"`{rule.id}`",
            rule.name.en,
            rule.name.get("zh-TW"),
            describe_conditions(rule),
            rule.action.en,
        )
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def presets_markdown(buckets: int = 5) -> str:
    """Headed tables for every preset (the generated part of docs/schemes.md)."""
    parts: list[str] = []
    for preset in PRESETS:
        scheme = load_scheme(preset, buckets)
        parts.append(f"## `{scheme.id}` — {scheme.name.en} / {scheme.name.get('zh-TW')}\n")
        if scheme.description is not None:
            parts.append(scheme.description.en + "\n")
        parts.append(scheme_table_markdown(scheme))
    return "\n".join(parts)
