"""`rfm import` checks every line with the worker's parser before anything is produced: each
rejected line is reported by its number, the good ones are published byte-for-byte under the
customer id the parser read, and the store settings and the wall clock are the worker's."""

from __future__ import annotations

import random
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson

from stream.config import StoreSettings
from stream.core.events import parse_interaction, parse_order
from stream.importer import (
    SHOWN_REJECTS,
    CsvMapping,
    check_lines,
    checked_records,
    csv_lines,
    jsonl_lines,
)

NOW = 1_795_000_000_000  # 2026-11-19T...Z, the wall clock of the check
STORE = StoreSettings()


def order(n: int, cid: str, **over: Any) -> dict[str, Any]:
    doc = {
        "event_id": f"e{n}",
        "type": "order_completed",
        "order_id": f"o{n}",
        "customer_id": cid,
        "amount": "10.00",
        "currency": "TWD",
        "occurred_at": NOW - 86_400_000,
    }
    doc.update(over)
    return {k: v for k, v in doc.items() if v is not None}


def test_rejects_are_numbered_by_file_line_and_good_lines_keep_their_bytes(
    tmp_path: Path,
) -> None:
    rng = random.Random(20261206)
    ids = ["00042", "顧客-王小明", "客戶🙂", "c-1", "x" * 128]
    file_lines: list[bytes] = []
    expected_rejects: list[tuple[int, str]] = []
    expected_good: list[tuple[bytes, bytes]] = []
    bad = [
        (b"not json", "not valid JSON"),
        (orjson.dumps(order(1, "c-1", channel="shopify")), "unknown channel 'shopify'"),
        (orjson.dumps(order(2, "c-1", event_id=None, occurred_at=None)), "missing fields"),
        (orjson.dumps(order(3, "c-1", currency="USD")), "USD"),
        (orjson.dumps(order(4, "c-1", occurred_at=NOW + 3_600_000)), "in the future"),
        (orjson.dumps(order(5, "c-1", customer_id=42)), "customer_id must be a string, got number"),
    ]
    for n in range(400):
        roll = rng.random()
        if roll < 0.05:
            file_lines.append(rng.choice([b"", b"   ", b"\t"]))  # blank: neither good nor bad
        elif roll < 0.2:
            payload, words = rng.choice(bad)
            file_lines.append(payload)
            expected_rejects.append((len(file_lines), words))
        else:
            cid = rng.choice(ids)
            line = orjson.dumps(order(100 + n, cid))
            file_lines.append(b"  " + line if n % 7 == 0 else line)  # stripped when published
            expected_good.append((cid.encode(), line))
    path = tmp_path / "orders.jsonl"
    path.write_bytes(b"\n".join(file_lines) + b"\n")

    check = check_lines(jsonl_lines(path), parse_order, STORE, NOW)
    assert check.rejects == len(expected_rejects) <= SHOWN_REJECTS
    assert [line for line, _ in check.rejected] == [line for line, _ in expected_rejects]
    for (_, reason), (_, words) in zip(check.rejected, expected_rejects, strict=True):
        assert words in reason, (words, reason)
    assert check.events == len(expected_good)

    published = list(checked_records(jsonl_lines(path), check))
    assert [(k, v) for k, v, _ in published if v] == expected_good
    assert all(k is None for k, v, _ in published if not v)
    assert sum(size for _, _, size in published) == path.stat().st_size


def test_past_the_first_hundred_rejects_are_counted_not_kept(tmp_path: Path) -> None:
    path = tmp_path / "orders.jsonl"
    path.write_bytes(b"nope\n" * 250 + orjson.dumps(order(1, "c-1")) + b"\n")
    check = check_lines(jsonl_lines(path), parse_order, STORE, NOW)
    assert (len(check.rejected), check.rejects, check.events) == (100, 250, 1)
    assert [line for line, _ in check.rejected] == list(range(1, 101))


def test_the_store_settings_and_the_kind_decide_like_the_worker(tmp_path: Path) -> None:
    path = tmp_path / "orders.jsonl"
    path.write_bytes(orjson.dumps(order(1, "c-1", currency="USD", amount="1.5")) + b"\n")
    dollars = replace(STORE, currency="USD")
    assert check_lines(jsonl_lines(path), parse_order, dollars, NOW).rejects == 0
    ((_, reason),) = check_lines(jsonl_lines(path), parse_order, STORE, NOW).rejected
    assert reason == "currency 'USD' is not the store currency (allowed: TWD)"
    ((_, reason),) = check_lines(jsonl_lines(path), parse_interaction, dollars, NOW).rejected
    assert reason == "unknown type 'order_completed' (allowed: interaction)"


def test_csv_rows_are_numbered_by_their_first_line(tmp_path: Path) -> None:
    path = tmp_path / "orders.csv"
    path.write_text(
        "member,order,total,ts,note\n"  # line 1
        "m-1,A1,120.50,1700000000000,plain\n"  # line 2
        "\n"  # line 3: blank
        'm-2,A2,9,1700000000001,"a note\nover two lines"\n'  # lines 4-5
        "m-3,A3,-1,1700000000002,x\n"  # line 6: negative amount
        ",A4,1,1700000000003,x\n",  # line 7: no customer
        encoding="utf-8",
    )
    mapping = CsvMapping(
        {"customer_id": "member", "order_id": "order", "amount": "total", "occurred_at": "ts"},
        {"currency": "TWD"},
    )
    lines = list(csv_lines(path, "orders", mapping))
    assert [line for line, _, _ in lines] == [2, 4, 6, 7]
    check = check_lines(lines, parse_order, STORE, NOW)
    assert check.rejected == [(6, "amount is negative"), (7, "missing field customer_id")]
    published = [orjson.loads(v) for _, v, _ in checked_records(lines, check) if v]
    assert [(d["customer_id"], d["order_id"]) for d in published] == [("m-1", "A1"), ("m-2", "A2")]
