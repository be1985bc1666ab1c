"""The uplift report: per rule, arm and segment at assignment, what the customers did after
it, and each arm against the control with a 95% interval (``intervals``). Pure.

Input is what ``uplift_ledger`` recorded: the assignments and the per-customer tallies.
Money stays in integer minor units and exact fractions; it leaves as decimal strings. Rows
per segment and one per arm over all segments (segment ``*``); an arm is compared with the
control row of the same segment.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal
from fractions import Fraction
from typing import Any

from consumers.campaigns.intervals import LEVEL, Interval, newcombe, welch
from consumers.campaigns.rules import CONTROL
from consumers.campaigns.uplift_ledger import Assignment, parse_assignment
from stream.core.money import format_minor

ALL_SEGMENTS = "*"
NO_SEGMENT = "-"  # assigned while the customer had no segment (yet)
METHODS = {
    "revenue_per_customer": "Welch's t interval on the difference of means",
    "repurchase_rate": "Newcombe's hybrid score interval (method 10) on the difference",
    "level": LEVEL,
}
CSV_COLUMNS = (
    "rule",
    "arm",
    "segment",
    "customers",
    "repurchasers",
    "repurchase_rate",
    "orders",
    "revenue",
    "revenue_per_customer",
    "moves_up",
    "moves_down",
    "revenue_per_customer_diff",
    "revenue_per_customer_low",
    "revenue_per_customer_high",
    "repurchase_rate_diff",
    "repurchase_rate_low",
    "repurchase_rate_high",
)


@dataclass
class Outcome:
    """One assigned customer's orders, net revenue (minor units) and moves in the window."""

    orders: int = 0
    revenue: int = 0
    moves: list[tuple[str, str]] = field(default_factory=list)


def _text(raw: bytes | str) -> str:
    return raw.decode() if isinstance(raw, bytes) else raw


def outcomes(tally: Mapping[Any, Any]) -> dict[str, Outcome]:
    """Decode ``cmp:tally:<rule>``: fields ``o|<c>``, ``r|<c>``, ``m|<c>``."""
    out: dict[str, Outcome] = {}
    for raw_field, raw_value in tally.items():
        kind, _, customer = _text(raw_field).partition("|")
        value = _text(raw_value)
        row = out.setdefault(customer, Outcome())
        if kind == "o":
            row.orders = int(value)
        elif kind == "r":
            row.revenue = int(value)
        elif kind == "m":
            row.moves = [
                (source, target)
                for move in value.split(";")
                for source, _, target in [move.partition(">")]
            ]
    return out


def assignments(raw: Mapping[Any, Any]) -> dict[str, Assignment]:
    return {_text(k): parse_assignment(v) for k, v in raw.items()}


def _money(minor: Fraction, decimals: int) -> str:
    """A fraction of minor units as a decimal string, rounded half-even to the currency."""
    exact = Decimal(minor.numerator) / Decimal(minor.denominator)
    return format_minor(int(exact.quantize(Decimal(1), rounding=ROUND_HALF_EVEN)), decimals)


def _rate(value: float) -> float:
    return round(value, 4)


def _span(interval: Interval | None, shown: Any) -> list[Any] | None:
    return None if interval is None else [shown(interval.low), shown(interval.high)]


@dataclass
class _Group:
    revenues: list[int] = field(default_factory=list)
    orders: int = 0
    repurchasers: int = 0
    up: int = 0
    down: int = 0

    def add(self, outcome: Outcome, rank: Mapping[str, int]) -> None:
        self.revenues.append(outcome.revenue)
        self.orders += outcome.orders
        self.repurchasers += outcome.orders > 0
        for source, target in outcome.moves:
            if source in rank and target in rank and rank[source] != rank[target]:
                if rank[target] < rank[source]:
                    self.up += 1
                else:
                    self.down += 1


def rule_report(
    rule_id: str,
    assigned: Mapping[str, Assignment],
    tallies: Mapping[str, Outcome],
    order: Sequence[str],
    decimals: int,
) -> list[dict[str, Any]]:
    """Rows sorted by segment (``*`` first), the control before the other arms."""
    rank = {segment: n for n, segment in enumerate(order)}
    groups: dict[tuple[str, str], _Group] = {}
    for customer, assignment in assigned.items():
        outcome = tallies.get(customer, Outcome())
        segment = assignment.segment or NO_SEGMENT
        for key in ((assignment.arm, segment), (assignment.arm, ALL_SEGMENTS)):
            groups.setdefault(key, _Group()).add(outcome, rank)

    def place(key: tuple[str, str]) -> tuple[int, int, str]:
        arm, segment = key
        at = -1 if segment == ALL_SEGMENTS else rank.get(segment, len(rank))
        return (at, arm != CONTROL, f"{segment}|{arm}")

    rows: list[dict[str, Any]] = []
    for arm, segment in sorted(groups, key=place):
        group = groups[(arm, segment)]
        n = len(group.revenues)
        row: dict[str, Any] = {
            "rule": rule_id,
            "arm": arm,
            "segment": segment,
            "customers": n,
            "repurchasers": group.repurchasers,
            "repurchase_rate": _rate(group.repurchasers / n),
            "orders": group.orders,
            "revenue": format_minor(sum(group.revenues), decimals),
            "revenue_per_customer": _money(Fraction(sum(group.revenues), n), decimals),
            "moves_up": group.up,
            "moves_down": group.down,
            "vs_control": None,
        }
        control = groups.get((CONTROL, segment))
        if arm != CONTROL and control is not None:
            row["vs_control"] = _versus(group, control, decimals)
        rows.append(row)
    return rows


def _versus(arm: _Group, control: _Group, decimals: int) -> dict[str, Any]:
    n1, n2 = len(arm.revenues), len(control.revenues)
    diff = Fraction(sum(arm.revenues), n1) - Fraction(sum(control.revenues), n2)
    rate = arm.repurchasers / n1 - control.repurchasers / n2

    def money(minor: float) -> str:
        return _money(Fraction(minor), decimals)

    return {
        "revenue_per_customer": _money(diff, decimals),
        "revenue_per_customer_interval": _span(welch(arm.revenues, control.revenues), money),
        "repurchase_rate": _rate(rate),
        "repurchase_rate_interval": _span(
            newcombe(arm.repurchasers, n1, control.repurchasers, n2), _rate
        ),
    }


def csv_text(rows: Iterable[Mapping[str, Any]]) -> str:
    """One line per report row; the comparison columns are empty for the control."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for row in rows:
        versus = row["vs_control"] or {}
        money = versus.get("revenue_per_customer_interval") or ["", ""]
        rate = versus.get("repurchase_rate_interval") or ["", ""]
        writer.writerow(
            [row[c] for c in CSV_COLUMNS[:11]]
            + [versus.get("revenue_per_customer", ""), *money]
            + [versus.get("repurchase_rate", ""), *rate]
        )
    return buffer.getvalue()


Recorded = tuple[Mapping[Any, Any], Mapping[Any, Any], Mapping[Any, Any]]


def uplift_doc(
    measured: Mapping[str, Recorded], order: Sequence[str], decimals: int
) -> dict[str, Any]:
    """``measured``: rule id -> (``cmp:measure``, ``cmp:assign``, ``cmp:tally``) as read."""
    rules: list[dict[str, Any]] = []
    for rule_id, (declared, assigned, tally) in sorted(measured.items()):
        meta = {_text(k): _text(v) for k, v in declared.items()}
        rules.append(
            {
                "rule": rule_id,
                "holdout": meta.get("holdout"),
                "window_s": float(meta["window_s"]) if "window_s" in meta else None,
                "rows": rule_report(
                    rule_id, assignments(assigned), outcomes(tally), order, decimals
                ),
            }
        )
    return {"methods": METHODS, "rules": rules}
