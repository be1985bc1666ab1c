"""A platform's order export as a preset: its columns, how its rows make an order, and the
walk from rows to outcomes (events to publish, orders skipped, orders rejected by line).

No I/O: rows come in as (line number, cells by column) and outcomes go out.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import tzinfo

from stream.collect.outgoing import MappingContext, Outgoing, PayloadError
from stream.exports.cells import CellError, text
from stream.exports.order import ExportedOrder, Unpaid, buyer, events

Row = tuple[int, Mapping[str, str | None]]  # (line number in the file, cells by column)


@dataclass(frozen=True)
class Preset:
    name: str  # e.g. "shopify-orders"
    platform: str  # in event ids, as the collector writes it: "shopify"
    group_by: str  # the column that is the same on every row of one order
    required: tuple[str, ...]
    optional: tuple[str, ...]
    read: Callable[[Sequence[Row], tzinfo | None], ExportedOrder | Unpaid]

    def missing(self, header: Sequence[str]) -> list[str]:
        return [column for column in self.required if column not in header]


@dataclass(frozen=True)
class Published:
    line: int  # the order's first line
    events: tuple[Outgoing, ...]


@dataclass(frozen=True)
class Skipped:
    line: int
    reason: str  # short and shared by many orders: it is counted, e.g. "not paid (pending)"


@dataclass(frozen=True)
class Rejected:
    line: int
    reason: str


Outcome = Published | Skipped | Rejected


def grouped(rows: Iterable[Row], column: str) -> Iterator[list[Row]]:
    """Runs of consecutive rows with the same ``column``: one order and its line items."""
    run: list[Row] = []
    for row in rows:
        if run and text(row[1], column) != text(run[0][1], column):
            yield run
            run = []
        run.append(row)
    if run:
        yield run


def outcomes(
    rows: Iterable[Row],
    preset: Preset,
    ctx: MappingContext,
    zone: tzinfo | None = None,
    accounts: Callable[[str], str | None] | None = None,
) -> Iterator[Outcome]:
    """One outcome per order, in file order. An order seen before (its id on an earlier
    line) is rejected: rows of one order belong together, as the platforms write them.
    ``accounts``: the account id of an e-mail (a customers export), else guests' keys."""
    first_line: dict[str, int] = {}
    for run in grouped(rows, preset.group_by):
        line = run[0][0]
        if not text(run[0][1], preset.group_by):
            yield Rejected(line, f"{preset.group_by} is empty")
            continue
        try:
            order = preset.read(run, zone)
            if isinstance(order, Unpaid):
                yield Skipped(line, f"not paid ({order.status or 'no status'})")
                continue
            earlier = first_line.setdefault(order.order_id.text, line)
            if earlier != line:
                yield Rejected(
                    line, f"{order.order_id.column} {order.order_id.text} is also on line {earlier}"
                )
                continue
            customer_id = buyer(order, ctx, accounts)
            if customer_id is None:
                yield Skipped(line, "no e-mail (an anonymous sale)")
                continue
            yield Published(line, tuple(events(order, preset.platform, customer_id, ctx)))
        except (CellError, PayloadError) as exc:
            yield Rejected(line, str(exc))


@dataclass
class Tally:
    """What an import did, for the operator."""

    completions: int = 0
    refunds: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    rejected: list[Rejected] = field(default_factory=list)

    def add(self, outcome: Outcome) -> None:
        if isinstance(outcome, Published):
            for event in outcome.events:
                if event.doc["type"] == "order_completed":
                    self.completions += 1
                else:
                    self.refunds += 1
        elif isinstance(outcome, Skipped):
            self.skipped[outcome.reason] += 1
        else:
            self.rejected.append(outcome)

    def summary(self) -> str:
        skipped = sum(self.skipped.values())
        why = ", ".join(f"{n} {reason}" for reason, n in sorted(self.skipped.items()))
        return (
            f"{self.completions} orders, {self.refunds} refunds; "
            f"skipped {skipped}{f' ({why})' if why else ''}; rejected {len(self.rejected)}"
        )
