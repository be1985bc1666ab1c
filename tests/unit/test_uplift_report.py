"""The uplift report against an oracle written here: per (arm, segment) sums in Decimal, the
intervals from scipy and statsmodels, up/down from the scheme's order, and the CSV read back.
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats
from statsmodels.stats.proportion import confint_proportions_2indep

from consumers.campaigns.uplift import CSV_COLUMNS, csv_text, uplift_doc

ORDER = ["champions", "loyal", "at_risk", "lost"]
SEGMENTS = st.sampled_from([*ORDER, None])
CUSTOMER = st.fixed_dictionaries(
    {
        "arm": st.sampled_from(["control", "a", "treated"]),
        "segment": SEGMENTS,
        "orders": st.integers(0, 4),
        "cents": st.integers(0, 2_000_000),
        "moves": st.lists(st.tuples(SEGMENTS, SEGMENTS), max_size=3),
    }
)
CENT = Decimal("0.01")


def recorded(customers: list[dict[str, Any]]) -> tuple[dict[str, bytes], dict[str, str]]:
    """What the ledger would hold for these customers (its documented field layout)."""
    assign, tally = {}, {}
    for n, c in enumerate(customers):
        cid = f"c|{n}"  # a '|' inside an id must not confuse the fields
        assign[cid] = orjson.dumps({"arm": c["arm"], "at": 1000 + n, "segment": c["segment"]})
        if c["orders"]:
            tally[f"o|{cid}"] = str(c["orders"])
            tally[f"r|{cid}"] = str(c["cents"])
        if c["moves"]:
            tally[f"m|{cid}"] = ";".join(f"{a or '-'}>{b or '-'}" for a, b in c["moves"])
    return assign, tally


def spend(c: dict[str, Any]) -> int:
    return c["cents"] if c["orders"] else 0


@settings(max_examples=60, deadline=None)
@given(st.lists(CUSTOMER, min_size=1, max_size=40))
def test_the_report_is_the_oracle(customers: list[dict[str, Any]]) -> None:
    assign, tally = recorded(customers)
    doc = uplift_doc({"win_back": ({"window_s": "86400.0"}, assign, tally)}, ORDER, 2)
    [rule] = doc["rules"]
    assert rule["window_s"] == 86400.0
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for c in customers:
        groups[(c["arm"], c["segment"] or "-")].append(c)
        groups[(c["arm"], "*")].append(c)
    rows = {(r["arm"], r["segment"]): r for r in rule["rows"]}
    assert set(rows) == set(groups)
    for key, members in groups.items():
        row = rows[key]
        n = len(members)
        revenue = sum(spend(c) for c in members)
        buyers = sum(1 for c in members if c["orders"])
        up = down = 0
        for c in members:
            for a, b in c["moves"]:
                if a in ORDER and b in ORDER and a != b:
                    up += ORDER.index(b) < ORDER.index(a)
                    down += ORDER.index(b) > ORDER.index(a)
        per = (Decimal(revenue) / n / 100).quantize(CENT, ROUND_HALF_EVEN)
        assert row["customers"] == n
        assert row["repurchasers"] == buyers
        assert row["orders"] == sum(c["orders"] for c in members)
        assert row["revenue"] == str((Decimal(revenue) / 100).quantize(CENT))
        assert row["revenue_per_customer"] == str(per)
        assert (row["moves_up"], row["moves_down"]) == (up, down)
        control = groups.get(("control", key[1]))
        if key[0] == "control" or control is None:
            assert row["vs_control"] is None
            continue
        versus = row["vs_control"]
        base = Decimal(sum(spend(c) for c in control)) / len(control)
        diff = (Decimal(revenue) / n - base) / 100
        assert Decimal(versus["revenue_per_customer"]) == diff.quantize(CENT, ROUND_HALF_EVEN)
        treated = [spend(c) for c in members]
        held = [spend(c) for c in control]
        if min(n, len(control)) < 2 or len(set(treated)) == len(set(held)) == 1:
            assert versus["revenue_per_customer_interval"] is None
        else:
            low, high = stats.ttest_ind(treated, held, equal_var=False).confidence_interval()
            shown = [Decimal(x) for x in versus["revenue_per_customer_interval"]]
            assert abs(shown[0] - Decimal(low) / 100) <= CENT / 2 + Decimal("1e-9")
            assert abs(shown[1] - Decimal(high) / 100) <= CENT / 2 + Decimal("1e-9")
        kept = sum(1 for c in control if c["orders"])
        low, high = confint_proportions_2indep(
            buyers, n, kept, len(control), method="newcomb", compare="diff"
        )
        assert versus["repurchase_rate_interval"] == [round(low, 4), round(high, 4)]
        assert versus["repurchase_rate"] == round(buyers / n - kept / len(control), 4)


def test_the_csv_holds_the_rows() -> None:
    customers = [
        {"arm": arm, "segment": "loyal", "orders": k % 2, "cents": 1000 * k, "moves": []}
        for k, arm in enumerate(["control", "a"] * 5)
    ]
    assign, tally = recorded(customers)
    doc = uplift_doc({"r": ({}, assign, tally)}, ORDER, 2)
    rows = doc["rules"][0]["rows"]
    parsed = list(csv.DictReader(io.StringIO(csv_text(rows))))
    assert [tuple(p) for p in parsed] == [CSV_COLUMNS] * len(rows)
    for line, row in zip(parsed, rows, strict=True):
        assert (line["arm"], line["segment"], line["revenue"]) == (
            row["arm"],
            row["segment"],
            row["revenue"],
        )
        versus = row["vs_control"]
        if versus is None:
            assert line["revenue_per_customer_diff"] == line["repurchase_rate_low"] == ""
        else:
            assert line["revenue_per_customer_diff"] == versus["revenue_per_customer"]
            assert [line["revenue_per_customer_low"], line["revenue_per_customer_high"]] == (
                versus["revenue_per_customer_interval"]
            )
