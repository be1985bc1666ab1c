"""Customer <-> Redis hash fields. Compact text fields; one hash per customer.

Fields: ``fo lo li`` first/last order and last interaction (epoch ms), ``ch`` channels,
``sc`` scores "r,f,m,i" (empty = not scored), ``sg`` segment, ``sq`` seq, ``v`` version,
``tl`` "orders,monetary" as last committed (its share of the segment report),
``lt`` lifetime purchases "purchase_days,spend,first_day_spend", ``cr`` "1" when at churn risk,
``o:<order_id>`` -> "at,amount,refunded,full", ``i:<at>`` -> weight,
``h:<seq>`` -> a change, in the older history layout (read by stream.store.history; never
written now, never loaded for scoring),
``e:<event_id>`` -> when that event's dedupe mark expires (epoch ms),
``x`` the score index entries "r,f,m,i" as last committed ("" = none): where the commit
script finds the customer's entries in the bucketed indexes (stream.store.buckets).
"""

from __future__ import annotations

from stream.core.customer import Customer, OrderRecord, day
from stream.core.scoring import NO_SCORES, Scores


def _opt_int(raw: str) -> int | None:
    return int(raw) if raw else None


def decode_fields(fields: dict[bytes, bytes]) -> dict[str, str]:
    return {k.decode("utf-8"): v.decode("utf-8") for k, v in fields.items()}


def decode_customer(customer_id: str, fields: dict[bytes, bytes]) -> Customer:
    return customer_from_fields(customer_id, decode_fields(fields))


def customer_from_fields(customer_id: str, fields: dict[str, str]) -> Customer:
    """The hot half of loading: the decoded fields also serve as the commit's ``before``."""
    c = Customer(customer_id=customer_id)
    orders = c.orders
    for key, value in fields.items():
        head = key[:2]
        if head == "o:":
            at, amount, refunded, full = value.split(",")
            orders[key[2:]] = OrderRecord(int(at), int(amount), int(refunded), full == "1")
        elif head == "i:":
            c.interactions[int(key[2:])] = int(value)
        elif head == "e:":
            c.marks[key[2:]] = int(value)
        elif key == "fo":
            c.first_order_at = int(value)
        elif key == "lo":
            c.last_order_at = int(value)
        elif key == "li":
            c.last_interaction_at = int(value)
        elif key == "ch":
            c.channels = set(value.split(",")) if value else set()
        elif key == "sc":
            r, f, m, i = [_opt_int(x) for x in value.split(",")]
            c.scores = Scores(r, f, m, i)
        elif key == "sg":
            c.segment = value or None
        elif key == "sq":
            c.seq = int(value)
        elif key == "v":
            c.version = int(value)
        elif key == "tl":
            n, monetary = value.split(",")
            c.tally = (int(n), int(monetary))
        elif key == "lt":
            days, spend, first = value.split(",")
            c.purchase_days, c.spend, c.first_day_spend = int(days), int(spend), int(first)
        elif key == "cr":
            c.churn_risk = value == "1"
    if c.purchase_days == 0 and c.orders:
        _derive_lifetime(c)
    return c


def _derive_lifetime(c: Customer) -> None:
    """Customers stored before lifetime statistics existed: rebuild them from the orders
    still on record (exact with ``window_days = 0``, else the window's part)."""
    days = {day(r.at) for r in c.orders.values()}
    first = min(days)
    c.purchase_days = len(days)
    c.spend = sum(r.amount - r.refunded for r in c.orders.values())
    c.first_day_spend = sum(r.amount - r.refunded for r in c.orders.values() if day(r.at) == first)


def _s(v: int | None) -> str:
    return "" if v is None else str(v)


def index_text(index: dict[str, int | None]) -> str:
    """The ``x`` field: a customer's index entries in DIMS order."""
    return ",".join(_s(index.get(d)) for d in ("r", "f", "m", "i"))


def stored_index(text: str | None) -> list[int | None] | None:
    """The ``x`` field read back (``None`` when absent: stored before indexes were bucketed)."""
    if text is None:
        return None
    return [_opt_int(part) for part in text.split(",")]


# The fields a re-score against new thresholds can change; it reads the others but they
# stay as they are (a re-score from the standing writes only these, see commits.commit_doc).
RESCORED = ("sc", "sg", "sq", "cr")


def rescored_fields(c: Customer) -> dict[str, str]:
    """Scores, segment, seq and churn flag as stored (absent ones left out)."""
    out: dict[str, str] = {}
    s = c.scores
    if s != NO_SCORES:
        out["sc"] = f"{_s(s.r)},{_s(s.f)},{_s(s.m)},{_s(s.i)}"
    if c.segment is not None:
        out["sg"] = c.segment
    if c.seq:
        out["sq"] = str(c.seq)
    if c.churn_risk:
        out["cr"] = "1"
    return out


def encode_customer(c: Customer) -> dict[str, str]:
    """All persistent fields except ``v`` (the commit script owns the version)."""
    out: dict[str, str] = {}
    if c.first_order_at is not None:
        out["fo"] = str(c.first_order_at)
    if c.last_order_at is not None:
        out["lo"] = str(c.last_order_at)
    if c.last_interaction_at is not None:
        out["li"] = str(c.last_interaction_at)
    if c.channels:
        out["ch"] = ",".join(sorted(c.channels))
    if c.tally is not None:
        out["tl"] = f"{c.tally[0]},{c.tally[1]}"
    if c.purchase_days:
        out["lt"] = f"{c.purchase_days},{c.spend},{c.first_day_spend}"
    out.update(rescored_fields(c))
    for order_id, r in c.orders.items():
        out[f"o:{order_id}"] = f"{r.at},{r.amount},{r.refunded},{int(r.full)}"
    for at, weight in c.interactions.items():
        out[f"i:{at}"] = str(weight)
    for event_id, expires in c.marks.items():
        out[f"e:{event_id}"] = str(expires)
    return out


def diff(before: dict[str, str], after: dict[str, str]) -> tuple[list[str], list[str]]:
    """(HSET field/value pairs flattened, HDEL fields) turning ``before`` into ``after``."""
    sets: list[str] = []
    for k, v in after.items():
        if before.get(k) != v:
            sets.extend((k, v))
    dels = [k for k in before if k not in after]
    return sets, dels


def report_share(fields: dict[str, str]) -> list[object] | None:
    """What a stored customer adds to the operator aggregates: segment, orders, monetary,
    channels and R x F cell; ``None`` when it has no segment (counts nowhere)."""
    segment = fields.get("sg")
    if not segment:
        return None
    orders, monetary = (fields.get("tl") or "0,0").split(",")
    r, f = (fields.get("sc") or ",,,").split(",")[:2]
    channels = [c for c in (fields.get("ch") or "").split(",") if c]
    return [segment, orders, monetary, channels, f"{r}:{f}" if r and f else ""]
