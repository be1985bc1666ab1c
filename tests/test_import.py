"""`rfm import` against a real broker: every line checked with the worker's parser first (a
file with a rejected line publishes nothing and exits non-zero, unless --skip-rejects, which
publishes exactly the good lines), then published once, byte-for-byte, each key in the
partition aiokafka's `send` puts it in (the worker and every other producer rely on that),
a customer's events in file order; CSV rows mapped and keyed the same way."""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict

import orjson
import pytest

from stream.kafka import ensure_topics
from stream.kafka.topics import Topics
from tests.conftest import Isolated
from tests.support import produce, read_topic, rfm, rfm_run

pytestmark = pytest.mark.integration


def customers(rng: random.Random) -> list[str]:
    ids = [f"{n:05d}" for n in range(300)]
    ids += [f"c{rng.randrange(10**9)}" for _ in range(300)]
    ids += ["顧客-王小明", "客戶🙂", "e\u0301", " ", "x" * 500, "長" * 200]
    alphabet = "abc019-_.中文台灣ñΩ🚀"
    ids += ["".join(rng.choices(alphabet, k=rng.randrange(1, 30))) for _ in range(200)]
    return sorted(set(ids))


def test_jsonl_lands_where_aiokafka_puts_each_key_in_file_order(isolated: Isolated) -> None:
    rng = random.Random(20261123)
    ids = [cid for cid in customers(rng) if len(cid) <= 128]  # longer ones the worker refuses
    good = [
        orjson.dumps(
            {
                "event_id": f"e{i}",
                "type": "order_completed",
                "order_id": f"o{i}",
                "customer_id": rng.choice(ids),
                "amount": f"{rng.randrange(100, 99999) / 100:.2f}",
                "currency": "TWD",
                "occurred_at": 1_700_000_000_000 + i,
            }
        )
        for i in range(6000)
    ]
    lines = list(good)
    bad = [
        b"not json",
        b'{"event_id":"no-customer"}',
        b'{"customer_id":42}',
        orjson.dumps({**orjson.loads(good[0]), "event_id": "x1", "channel": "shopify"}),
        orjson.dumps({**orjson.loads(good[1]), "event_id": "x2", "currency": "USD"}),
    ]
    for line in bad:
        lines.insert(rng.randrange(len(lines)), line)
    path = isolated.tmp / "orders.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n\n   \n")  # blank lines are skipped
    settings = isolated.settings()
    topics = Topics(settings.topic_prefix)
    asyncio.run(ensure_topics(settings))

    # one rejected line: nothing is published, and every reject is named by its line
    refused = rfm_run(isolated, None, "import", str(path), "--kind", "orders")
    assert refused.returncode != 0, refused.stdout
    assert read_topic(settings, topics.orders) == []
    assert "published" not in refused.stdout.replace("nothing published", "")
    numbered = [line for line in refused.stderr.splitlines() if line.startswith("line ")]
    assert [int(line.split(":")[0].split()[1]) for line in numbered] == [
        n for n, line in enumerate(lines, 1) if line in bad
    ]
    assert any("unknown channel 'shopify' (allowed: online, pos, app" in x for x in numbered)
    assert "nothing published: 5 of 6005 lines rejected" in refused.stderr

    # --skip-rejects: exactly the good lines, and the summary counts only those
    out = rfm(isolated, None, "import", str(path), "--kind", "orders", "--skip-rejects")
    assert f"published {len(good)} events" in out and "skipped 5 of 6005 lines rejected" in out
    got = read_topic(settings, topics.orders)
    assert sorted(m.value for m in got) == sorted(good)
    assert all(m.key is not None for m in got)

    # where aiokafka's own send puts the same keys (same partition count: both ours)
    keys = sorted({m.key for m in got if m.key is not None})
    assert len(keys) > 700
    produce(settings, [(topics.interactions, key, b"probe") for key in keys])
    by_send = {m.key: m.partition for m in read_topic(settings, topics.interactions)}
    assert len(set(by_send.values())) == settings.partitions
    wrong = [(m.key, m.partition, by_send[m.key]) for m in got if m.key is not None]
    wrong = [w for w in wrong if w[1] != w[2]]
    assert not wrong, f"{len(wrong)} records not where aiokafka's send puts the key: {wrong[:5]}"

    # each customer's events are in the partition in file order
    want: dict[bytes, list[bytes]] = defaultdict(list)
    for line in good:
        want[orjson.loads(line)["customer_id"].encode()].append(line)
    seen: dict[bytes, list[bytes]] = defaultdict(list)
    for m in sorted(got, key=lambda m: (m.partition, m.offset)):
        if m.key is not None:
            seen[m.key].append(m.value)
    assert seen == want


def test_csv_rows_are_mapped_and_keyed_by_customer(isolated: Isolated) -> None:
    rows = [("m-1", "A1", "120.50", "1700000000000"), ("顧客", "A2", "9", "1700000000001")]
    rows += [(f"m-{n % 7}", f"B{n}", "1.00", str(1700000000100 + n)) for n in range(200)]
    path = isolated.tmp / "orders.csv"
    path.write_text(
        "member_no,order_no,total,ts\n" + "".join(",".join(r) + "\n" for r in rows),
        encoding="utf-8",
    )
    out = rfm(
        isolated,
        None,
        "import",
        str(path),
        "--kind",
        "orders",
        *("--column", "customer_id=member_no", "--column", "order_id=order_no"),
        *("--column", "amount=total", "--column", "occurred_at=ts"),
    )
    assert f"published {len(rows)} events" in out

    settings = isolated.settings()
    topics = Topics(settings.topic_prefix)
    got = sorted(read_topic(settings, topics.orders), key=lambda m: (m.partition, m.offset))
    docs = [m.json() for m in got]
    assert all(m.key == d["customer_id"].encode() for m, d in zip(got, docs, strict=True))
    assert {d["currency"] for d in docs} == {"TWD"}
    assert {d["type"] for d in docs} == {"order_completed"}
    first = next(d for d in docs if d["order_id"] == "A1")
    assert (first["customer_id"], first["amount"], first["occurred_at"]) == (
        "m-1",
        "120.50",
        1700000000000,
    )
    assert first["event_id"].startswith("imp-")
    for cid in {d["customer_id"] for d in docs}:
        mine = [d["occurred_at"] for d in docs if d["customer_id"] == cid]
        assert mine == sorted(mine), f"{cid}: events out of file order"
    produce(settings, [(topics.interactions, m.key, b"probe") for m in got if m.key])
    by_send = {m.key: m.partition for m in read_topic(settings, topics.interactions)}
    assert all(by_send[m.key] == m.partition for m in got if m.key)
