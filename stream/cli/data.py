"""`rfm import` and `rfm export`: history in, every customer out."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import click

from stream.cli.group import main, settings_or_exit
from stream.config import Settings

if TYPE_CHECKING:
    from stream.exports.accounts import Accounts
    from stream.importer import Line


@main.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--kind", type=click.Choice(["orders", "interactions"]), help="[required unless --preset]"
)
@click.option("--format", "fmt", type=click.Choice(["auto", "jsonl", "csv"]), default="auto")
@click.option(
    "--column",
    "columns",
    multiple=True,
    metavar="FIELD=COLUMN",
    help="CSV: read event FIELD from COLUMN (e.g. customer_id=member_no). With --preset: "
    "the preset's column is the file's COLUMN (e.g. Total=訂單合計).",
)
@click.option(
    "--default",
    "defaults",
    multiple=True,
    metavar="FIELD=VALUE",
    help="CSV: constant for a field the file lacks (e.g. currency=TWD).",
)
@click.option(
    "--preset",
    type=click.Choice(["shopify-orders", "shopline-orders", "woocommerce-orders"]),
    help="A storefront's own order export CSV, read as the platform writes it.",
)
@click.option(
    "--shop",
    metavar="NAME",
    help="With --preset: the shop's name in event ids, as in [collect.shops].  "
    "[default: the one configured shop of the platform]",
)
@click.option(
    "--timezone",
    "zone_name",
    metavar="ZONE",
    help="With --preset: the shop's time zone (Asia/Taipei, +08:00), for export times "
    "written without an offset (WooCommerce's).",
)
@click.option(
    "--customers",
    "customers_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="With --preset: the shop's customers export (Customer ID, Email), so orders the "
    "export names by e-mail go to the account id the webhooks use.",
)
@click.option(
    "--skip-rejects",
    is_flag=True,
    help="Publish the lines that pass the check even when others are rejected (without it, "
    "one rejected line and nothing is published).",
)
def import_(
    file: Path,
    kind: str | None,
    fmt: str,
    columns: tuple[str, ...],
    defaults: tuple[str, ...],
    preset: str | None,
    shop: str | None,
    zone_name: str | None,
    customers_file: Path | None,
    skip_rejects: bool,
) -> None:
    """Publish CSV/JSONL history to Kafka (JSONL of SPEC events needs no options).

    Every line is checked with the worker's parser first; a rejected line is reported by its
    number and reason, and then nothing is published unless --skip-rejects."""
    from stream.importer import CsvMapping, csv_lines, jsonl_lines

    settings = settings_or_exit()

    def pairs(items: tuple[str, ...], option: str) -> dict[str, str]:
        out = {}
        for item in items:
            name, sep, value = item.partition("=")
            if not sep or not name:
                raise click.BadParameter(f"expected FIELD=VALUE, got {item!r}", param_hint=option)
            out[name] = value
        return out

    if preset is not None:
        for given, option in (
            (kind == "interactions", "--kind interactions"),
            (fmt == "jsonl", "--format jsonl"),
            (bool(defaults), "--default"),
        ):
            if given:
                raise click.UsageError(f"{option} does not go with --preset (orders, CSV)")
        _import_export(
            file,
            preset,
            settings,
            pairs(columns, "--column"),
            shop,
            zone_name,
            customers_file,
            skip_rejects,
        )
        return
    if customers_file is not None:
        raise click.UsageError("--customers goes with --preset")
    if kind is None:
        ctx = click.get_current_context()
        raise click.MissingParameter(
            ctx=ctx, param=next(p for p in ctx.command.params if p.name == "kind")
        )
    if fmt == "auto":
        fmt = "csv" if file.suffix.lower() == ".csv" else "jsonl"

    mapping = CsvMapping(pairs(columns, "--column"), pairs(defaults, "--default"))
    if fmt == "csv" and "currency" not in mapping.defaults and kind == "orders":
        mapping = CsvMapping(
            mapping.columns, {"currency": settings.store.currency, **mapping.defaults}
        )

    def lines() -> Iterator[Line]:
        return jsonl_lines(file) if fmt == "jsonl" else csv_lines(file, kind, mapping)

    _import_lines(settings, file, kind, lines, skip_rejects)


def _import_lines(
    settings: Settings,
    file: Path,
    kind: str,
    lines: Callable[[], Iterator[Line]],
    skip_rejects: bool,
) -> None:
    """Check every line of ``lines()`` with the worker's parser, then publish the good ones
    (reading the file again) only when none was rejected, or --skip-rejects says so."""
    from stream.core.events import parse_interaction, parse_order
    from stream.importer import check_lines, checked_records
    from stream.kafka.topics import Topics

    topics = Topics(settings.topic_prefix)
    topic = topics.orders if kind == "orders" else topics.interactions
    parse = parse_order if kind == "orders" else parse_interaction
    size = file.stat().st_size
    started = time.perf_counter()
    now = int(time.time() * 1000)
    with _bar(f"checking {file.name}", size) as advance:
        check = check_lines(lines(), parse, settings.store, now, advance)
    _show_rejects(check.rejected, check.rejects)
    skipped = f"{check.rejects} of {len(check.keys)} lines rejected"
    if check.rejects and not skip_rejects:
        raise click.ClickException(
            f"nothing published: {skipped} (--skip-rejects publishes the other {check.events})"
        )
    records = checked_records(lines(), check)
    sent = _publish(settings, f"{file.name} -> {topic}", topic, records, size)
    took = time.perf_counter() - started
    summary = f"published {sent} events to {topic} in {took:.1f}s ({sent / max(took, 1e-9):,.0f}/s)"
    click.echo(summary + (f"; skipped {skipped}" if check.rejects else ""))


def _show_rejects(rejected: Iterable[tuple[int, str]], count: int) -> None:
    """``line N: reason`` for the rejects kept (the first 100), then how many more."""
    shown = 0
    for line, reason in rejected:
        click.echo(f"line {line}: {reason}", err=True)
        shown += 1
    if count > shown:
        click.echo(f"... and {count - shown} more", err=True)


@contextlib.contextmanager
def _bar(label: str, total: int, *, in_bytes: bool = True) -> Iterator[Callable[[int], None]]:
    """A progress bar of ``total`` (bytes read, else events); yields how to advance it."""
    from rich.progress import BarColumn, Progress, TransferSpeedColumn

    speed = (TransferSpeedColumn(),) if in_bytes else ()
    with Progress(*Progress.get_default_columns(), BarColumn(), *speed) as bar:
        task = bar.add_task(label, total=total)
        yield lambda n: bar.advance(task, n)


def _publish(
    settings: Settings,
    label: str,
    topic: str,
    records: Iterator[tuple[bytes | None, bytes, int]],
    total: int,
    *,
    in_bytes: bool = True,
) -> int:
    """Publish ``records`` under a progress bar of ``total`` (bytes read, else events)."""
    from stream.importer import publish_records
    from stream.kafka import KafkaPublisher, ensure_topics

    async def run() -> int:
        await ensure_topics(settings)
        with _bar(label, total, in_bytes=in_bytes) as advance:
            async with KafkaPublisher(settings) as publisher:
                return await publish_records(publisher, topic, records, advance)

    return asyncio.run(run())


def _import_export(
    file: Path,
    name: str,
    settings: Settings,
    renamed: dict[str, str],
    shop: str | None,
    zone_name: str | None,
    customers_file: Path | None,
    skip_rejects: bool,
) -> None:
    """``rfm import --preset``: check the whole file first, publish only when nothing is
    rejected (or --skip-rejects), then say what was published, skipped and rejected."""
    import re

    from stream.collect.outgoing import MappingContext
    from stream.exports import PRESETS, Outcome, Tally, outcomes
    from stream.exports.cells import zone
    from stream.importer import SHOWN_REJECTS, export_header, export_rows, outcome_records
    from stream.kafka.topics import Topics

    preset = PRESETS[name]
    key = settings.collect.guest_key
    if not key:
        raise click.ClickException(
            "RFM_COLLECT_GUEST_KEY is not set: --preset keys buyers by a keyed hash of their "
            "e-mail, under the same key as `rfm collect`"
        )
    if shop is None:
        names = [s.name for s in settings.collect.shops if s.platform == preset.platform]
        if len(names) != 1:
            raise click.UsageError(
                f"--shop NAME is required: {len(names)} {preset.platform} shops in "
                "[collect.shops] (the name goes into every event id)"
            )
        shop = names[0]
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", shop):
        raise click.BadParameter("1-64 letters, digits, '_' or '-'", param_hint="--shop")
    try:
        shop_zone = None if zone_name is None else zone(zone_name)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--timezone") from None
    missing = preset.missing(export_header(file, renamed))
    if missing:
        raise click.ClickException(
            f"{file.name} is not a {name} export: no column {', '.join(map(repr, missing))} "
            "(--column NAME=HEADER if the file names it otherwise)"
        )
    ctx = MappingContext(settings.store.currency, settings.store.currency_decimals, key, shop)
    known = None if customers_file is None else _accounts(customers_file, skip_rejects)

    def mapped() -> Iterator[Outcome]:
        account = None if known is None else known.account
        return outcomes(export_rows(file, renamed), preset, ctx, shop_zone, account)

    tally = Tally()
    for outcome in mapped():
        tally.add(outcome)
    _show_rejects(((r.line, r.reason) for r in tally.rejected[:SHOWN_REJECTS]), len(tally.rejected))
    if tally.rejected and not skip_rejects:
        raise click.ClickException(
            f"nothing published: {tally.summary()} (--skip-rejects publishes the rest)"
        )
    topic = Topics(settings.topic_prefix).orders
    started = time.perf_counter()
    total = tally.completions + tally.refunds
    records = outcome_records(mapped())
    sent = _publish(settings, f"{file.name} -> {topic}", topic, records, total, in_bytes=False)
    took = time.perf_counter() - started
    click.echo(f"published {sent} events to {topic} in {took:.1f}s: {tally.summary()}")


def _accounts(path: Path, skip_rejects: bool) -> Accounts:
    """The customers export read whole; a row whose id is unusable stops the import (its
    buyer's history would split) unless --skip-rejects."""
    from stream.exports.accounts import AccountsError, accounts, columns
    from stream.importer import export_header, export_rows

    try:
        id_column, email_column = columns(export_header(path))
    except AccountsError as exc:
        raise click.ClickException(f"--customers {path.name}: {exc}") from None
    found = accounts(export_rows(path), id_column, email_column)
    for line, reason in found.rejected[:100]:
        click.echo(f"{path.name} line {line}: {reason}", err=True)
    if found.rejected and not skip_rejects:
        raise click.ClickException(
            f"nothing published: --customers {path.name}: {found.summary()} "
            "(--skip-rejects keys those buyers as guests)"
        )
    click.echo(f"{path.name}: {found.summary()}")
    return found


@main.command()
@click.option("--segment", default=None, help="Only customers in this segment id.")
@click.option("--format", "fmt", type=click.Choice(["jsonl", "csv"]), default="jsonl")
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), default=None)
def export(segment: str | None, fmt: str, output: Path | None) -> None:
    """Every customer with segment, seq, scores and metrics (JSONL or CSV)."""
    from stream.exporter import csv_header, encoded_pages
    from stream.store.redis_store import open_store

    settings = settings_or_exit()

    async def run() -> int:
        store = open_store(settings)
        await store.check_layout(record=False)
        if (unfit := await store.unfit()) is not None:
            click.echo(unfit.describe()["message"], err=True)
        n = 0
        with contextlib.ExitStack() as stack:
            out = stack.enter_context(output.open("wb")) if output else sys.stdout.buffer
            if fmt == "csv":
                out.write(csv_header().encode())
            async for lines, data in encoded_pages(store, settings, segment, fmt):
                out.write(data)
                n += lines
            out.flush()
        await store.redis.aclose()
        return n

    n = asyncio.run(run())
    click.echo(f"exported {n} customers", err=True)
