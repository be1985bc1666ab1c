"""Per-segment live counts and the segment report. Pure: records in, JSON documents out.

Money stays in integer minor units until it is formatted as a decimal string; averages are
integer divisions rounded half up, so no binary float ever touches an amount.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from stream.clv.prediction import Model
from stream.core.changes import iso_ms
from stream.core.money import format_minor
from stream.core.scheme import Scheme


def names(scheme: Scheme, segment: str) -> dict[str, str]:
    """Display names in English and Traditional Chinese; an id the scheme no longer has
    (stored before a scheme change) is shown as itself."""
    try:
        rule = scheme.rule(segment)
    except KeyError:
        return {"en": segment, "zh-TW": segment}
    return {"en": rule.name.get("en"), "zh-TW": rule.name.get("zh-TW")}


def ordered_segments(scheme: Scheme, present: Mapping[str, int]) -> list[str]:
    """The scheme's segments in rule order, then any other stored segment by id."""
    extra = sorted(s for s, n in present.items() if n and s not in scheme.ids)
    return [*scheme.ids, *extra]


def segments_doc(scheme: Scheme, counts: Mapping[str, int]) -> dict[str, Any]:
    rows = [
        {"id": seg, "name": names(scheme, seg), "customers": counts.get(seg, 0)}
        for seg in ordered_segments(scheme, counts)
    ]
    return {
        "scheme": {
            "id": scheme.id,
            "name": {"en": scheme.name.en, "zh-TW": scheme.name.get("zh-TW")},
        },
        "total": sum(r["customers"] for r in rows),
        "segments": rows,
    }


def average_minor(total: int, n: int) -> int | None:
    """``total / n`` rounded half up (away from zero for the non-negative sums we keep)."""
    if n <= 0:
        return None
    return (2 * total + n) // (2 * n)


def _money(minor: int | None, decimals: int) -> str | None:
    return None if minor is None else format_minor(minor, decimals)


def report_doc(
    scheme: Scheme,
    counts: Mapping[str, int],
    report: Mapping[str, int],
    decimals: int,
    model: Model | None = None,
) -> dict[str, Any]:
    """Customers, orders, revenue (net monetary in the window), average order value
    (revenue / orders), average monetary (revenue / customers), customers per channel, and
    the average predicted CLV as of the last model fit (``null`` before the first)."""
    values = {} if model is None else model.segments
    per: dict[str, dict[str, Any]] = {}
    for field, value in report.items():
        seg, _, what = field.partition("|")
        row = per.setdefault(seg, {"orders": 0, "monetary": 0, "channels": {}})
        if what == "orders":
            row["orders"] = value
        elif what == "monetary":
            row["monetary"] = value
        elif what.startswith("ch:") and value:
            row["channels"][what[3:]] = value
    present = {**counts, **{s: 1 for s in per}}
    rows = []
    totals = {"customers": 0, "orders": 0, "monetary": 0}
    for seg in ordered_segments(scheme, present):
        row = per.get(seg, {"orders": 0, "monetary": 0, "channels": {}})
        customers = counts.get(seg, 0)
        orders, monetary = row["orders"], row["monetary"]
        totals["customers"] += customers
        totals["orders"] += orders
        totals["monetary"] += monetary
        rows.append(
            {
                "id": seg,
                "name": names(scheme, seg),
                "customers": customers,
                "orders": orders,
                "revenue": format_minor(monetary, decimals),
                "average_order_value": _money(average_minor(monetary, orders), decimals),
                "average_monetary": _money(average_minor(monetary, customers), decimals),
                "channels": dict(sorted(row["channels"].items(), key=lambda kv: (-kv[1], kv[0]))),
                "predicted_clv_average": str(values[seg].average(decimals))
                if seg in values
                else None,
            }
        )
    return {
        "segments": rows,
        "prediction": None
        if model is None
        else {"model_version": model.version, "fitted_at": iso_ms(model.fitted_at)},
        "total": {
            "customers": totals["customers"],
            "orders": totals["orders"],
            "revenue": format_minor(totals["monetary"], decimals),
            "average_order_value": _money(
                average_minor(totals["monetary"], totals["orders"]), decimals
            ),
            "average_monetary": _money(
                average_minor(totals["monetary"], totals["customers"]), decimals
            ),
        },
    }
