"""The `rfm` command line (SPEC section 8). Thin: parse options, call the modules."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from stream.config import ConfigError, Settings, load_settings


def _settings() -> Settings:
    try:
        return load_settings()
    except ConfigError as exc:
        raise click.ClickException(f"configuration error: {exc}") from None


class _Cli(click.Group):
    """Unreachable infrastructure is an operator's problem, not a bug: one line, no traceback
    (the messages name host and port, never credentials)."""

    def invoke(self, ctx: click.Context) -> Any:
        from aiokafka.errors import KafkaConnectionError
        from redis.exceptions import ConnectionError as RedisConnectionError

        from stream.store.keys import LayoutMismatch

        try:
            return super().invoke(ctx)
        except LayoutMismatch as exc:
            raise click.ClickException(f"configuration error: {exc}") from None
        except RedisConnectionError as exc:
            raise click.ClickException(f"Redis (RFM_REDIS_URL): {exc}") from None
        except KafkaConnectionError as exc:
            raise click.ClickException(f"Kafka (RFM_KAFKA_BOOTSTRAP): {exc}") from None


@click.group(cls=_Cli)
def main() -> None:
    """Streaming RFM/RFIM scorer: Kafka in, Redis state, segment changes out."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


# ---- local stack -----------------------------------------------------------------------


@main.group()
def stack() -> None:
    """Local Apache Kafka (KRaft) + Redis on loopback, provisioned on first use."""


def _stack_call(name: str) -> Any:
    from stream import stack as local

    try:
        return getattr(local, name)()
    except local.StackError as exc:
        raise click.ClickException(str(exc)) from None


@stack.command("up")
def stack_up() -> None:
    """Start Kafka and Redis (harmless if already running)."""
    _stack_call("up")


@stack.command("down")
def stack_down() -> None:
    """Stop the processes `rfm stack up` started."""
    _stack_call("down")


@stack.command("status")
def stack_status() -> None:
    """Report whether Kafka and Redis are running."""
    status = _stack_call("status")
    for part in (status.kafka, status.redis):
        state = f"running (pid {part.pid})" if part.running else "not running"
        click.echo(f"{part.name:<6} {part.address:<16} {state}  log: {part.log}")
    click.echo(f"state  {status.state_dir}")
    if not status.running:
        sys.exit(1)


# ---- processes -------------------------------------------------------------------------


@main.command()
@click.option(
    "--loglevel", default="warn", type=click.Choice(["crit", "error", "warn", "info", "debug"])
)
def worker(loglevel: str) -> None:
    """Run the stream processor (Faust); several may run as one consumer group."""
    from stream.schemes import SchemeError
    from stream.worker.app import run_worker

    settings = _settings()
    try:
        run_worker(settings, loglevel)
    except SchemeError as exc:
        raise click.ClickException(f"configuration error: scoring.scheme: {exc}") from None


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
    "--skip-rejects",
    is_flag=True,
    help="With --preset: publish the orders that map even when others are rejected.",
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
    skip_rejects: bool,
) -> None:
    """Publish CSV/JSONL history to Kafka (JSONL of SPEC events needs no options)."""
    from stream.importer import CsvMapping, csv_records, jsonl_records
    from stream.kafka.topics import Topics

    settings = _settings()

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
            file, preset, settings, pairs(columns, "--column"), shop, zone_name, skip_rejects
        )
        return
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
    records = jsonl_records(file) if fmt == "jsonl" else csv_records(file, kind, mapping)
    topics = Topics(settings.topic_prefix)
    topic = topics.orders if kind == "orders" else topics.interactions
    started = time.perf_counter()
    sent = _publish(settings, f"{file.name} -> {topic}", topic, records, file.stat().st_size)
    took = time.perf_counter() - started
    click.echo(
        f"published {sent} events to {topic} in {took:.1f}s ({sent / max(took, 1e-9):,.0f}/s)"
    )


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
    from rich.progress import BarColumn, Progress, TransferSpeedColumn

    from stream.importer import publish_records
    from stream.kafka import KafkaPublisher, ensure_topics

    async def run() -> int:
        await ensure_topics(settings)
        speed = (TransferSpeedColumn(),) if in_bytes else ()
        with Progress(*Progress.get_default_columns(), BarColumn(), *speed) as bar:
            task = bar.add_task(label, total=total)
            async with KafkaPublisher(settings) as publisher:
                return await publish_records(
                    publisher, topic, records, lambda n: bar.advance(task, n)
                )

    return asyncio.run(run())


def _import_export(
    file: Path,
    name: str,
    settings: Settings,
    renamed: dict[str, str],
    shop: str | None,
    zone_name: str | None,
    skip_rejects: bool,
) -> None:
    """``rfm import --preset``: check the whole file first, publish only when nothing is
    rejected (or --skip-rejects), then say what was published, skipped and rejected."""
    import re

    from stream.collect.outgoing import MappingContext
    from stream.exports import PRESETS, Outcome, Tally, outcomes
    from stream.exports.cells import zone
    from stream.importer import export_header, export_rows, outcome_records
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

    def mapped() -> Iterator[Outcome]:
        return outcomes(export_rows(file, renamed), preset, ctx, shop_zone)

    tally = Tally()
    for outcome in mapped():
        tally.add(outcome)
    shown = 100
    for rejected in tally.rejected[:shown]:
        click.echo(f"line {rejected.line}: {rejected.reason}", err=True)
    if len(tally.rejected) > shown:
        click.echo(f"... and {len(tally.rejected) - shown} more", err=True)
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


@main.command()
@click.option("--segment", default=None, help="Only customers in this segment id.")
@click.option("--format", "fmt", type=click.Choice(["jsonl", "csv"]), default="jsonl")
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), default=None)
def export(segment: str | None, fmt: str, output: Path | None) -> None:
    """Every customer with segment, seq, scores and metrics (JSONL or CSV)."""
    from stream.exporter import csv_header, csv_line, export_rows, jsonl_line
    from stream.store.redis_store import open_store

    settings = _settings()

    async def run() -> int:
        store = open_store(settings)
        await store.check_layout(record=False)
        n = 0
        with contextlib.ExitStack() as stack:
            out = stack.enter_context(output.open("wb")) if output else sys.stdout.buffer
            if fmt == "csv":
                out.write(csv_header().encode())
            async for row in export_rows(store, settings, segment):
                out.write(jsonl_line(row) if fmt == "jsonl" else csv_line(row).encode())
                n += 1
            out.flush()
        await store.redis.aclose()
        return n

    n = asyncio.run(run())
    click.echo(f"exported {n} customers", err=True)


async def _under_lease(settings: Settings, job: Any, timeout: float) -> Any:
    """Run ``job(processor)`` once the refresh lease is free (waiting up to ``timeout``)."""
    from stream.kafka import KafkaPublisher
    from stream.shell.refresh import LeaseBusy
    from stream.shell.wiring import build_processor
    from stream.store.redis_store import open_store

    store = open_store(settings)
    await store.check_layout()
    publisher = KafkaPublisher(settings)
    processor = build_processor(settings, publisher, store)  # a bad scheme fails here
    async with publisher:
        deadline = time.monotonic() + timeout
        while True:
            try:
                return await job(processor)
            except LeaseBusy:
                if time.monotonic() > deadline:
                    raise click.ClickException(
                        "another refresh held the lease until the timeout"
                    ) from None
                await asyncio.sleep(0.2)


@main.command("refresh")
@click.option("--timeout", default=120.0, show_default=True, help="Seconds to wait for the lease.")
def refresh_cmd(timeout: float) -> None:
    """Force a threshold refresh now and wait for it."""
    from stream.shell.refresh import refresh

    settings = _settings()
    if settings.scoring.mode != "quantile":
        raise click.ClickException("scoring.mode is 'fixed': there are no thresholds to refresh")
    report = asyncio.run(_under_lease(settings, refresh, timeout))
    click.echo(
        f"thresholds v{report.version}: re-scored {report.candidates} customers, "
        f"{report.changes} segment changes, {report.seconds:.3f}s"
    )


@main.command("fit")
@click.option(
    "--as-of",
    "as_of",
    default=None,
    help="Fit as of this time (RFC 3339 or epoch ms) instead of the scoring clock.",
)
@click.option("--timeout", default=120.0, show_default=True, help="Seconds to wait for the lease.")
def fit_cmd(as_of: str | None, timeout: float) -> None:
    """Refit the CLV model (BG/NBD + Gamma-Gamma) now and publish it as a new version."""
    from stream.shell.refit import refit

    settings = _settings()
    at = None if as_of is None else _instant("--as-of", as_of)
    report = asyncio.run(
        _under_lease(settings, lambda processor: refit(processor, as_of=at), timeout)
    )
    model = report.model
    if model is None:
        raise click.ClickException(f"no model published: {report.reason}")
    m = model.purchases
    click.echo(
        f"CLV model v{model.version}: {model.customers} buyers, {model.repeat_buyers} repeat; "
        f"BG/NBD r={m.r:.4f} alpha={m.alpha:.4f} a={m.a:.4f} b={m.b:.4f}"
    )
    if model.spend is not None:
        g = model.spend
        click.echo(f"Gamma-Gamma p={g.p:.4f} q={g.q:.4f} gamma={g.gamma:.4f}")
    click.echo(f"{report.changes} churn changes, {report.seconds:.2f}s")


def _instant(option: str, text: str) -> int:
    from datetime import datetime

    if text.isdigit():
        return int(text)
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter(
            f"expected RFC 3339 or epoch ms, got {text!r}", param_hint=option
        ) from None
    if parsed.tzinfo is None:
        raise click.BadParameter("needs a UTC offset, e.g. 1997-09-30T00:00:00Z", param_hint=option)
    return int(parsed.timestamp() * 1000)


@main.command()
@click.option("--customers", default=2000, show_default=True)
@click.option("--rate", default=200.0, show_default=True, help="Live events per second.")
@click.option("--duration", default=0.0, help="Stop after this many seconds (0 = until Ctrl-C).")
def demo(customers: int, rate: float, duration: float) -> None:
    """Stack + worker + api + campaigns + synthetic traffic; prints the dashboard URL."""
    from stream.demo import run_demo

    run_demo(_settings(), customers=customers, rate=rate, duration=duration)


@main.command()
@click.option(
    "--rules",
    "rules_path",
    envvar="RFM_CAMPAIGNS",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Campaign rules file, TOML or YAML (default: $RFM_CAMPAIGNS).",
)
def campaigns(rules_path: Path) -> None:
    """Run the campaign-action consumer: signed webhooks on segment changes and orders."""
    from consumers.campaigns.rules import RuleError
    from consumers.campaigns.runner import run_campaigns

    settings = _settings()
    if settings.redis_cluster:
        # its ledger writes several keys per action in one MULTI: a single-slot layout only
        raise click.ClickException(
            "configuration error: RFM_REDIS_CLUSTER: the campaign consumer needs a single "
            "Redis server (give it its own RFM_REDIS_URL without RFM_REDIS_CLUSTER)"
        )
    try:
        run_campaigns(settings, rules_path)
    except RuleError as exc:
        raise click.ClickException(f"campaign rules: {exc}") from None


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(1, 65535))
def api(host: str, port: int) -> None:
    """Serve the operator API and dashboard (bearer token when RFM_API_TOKEN is set)."""
    from consumers.api.app import run_api
    from stream.schemes import SchemeError

    settings = _settings()
    try:
        run_api(settings, host, port)
    except SchemeError as exc:
        raise click.ClickException(f"configuration error: scoring.scheme: {exc}") from None


@main.command()
@click.option("--host", default=None, help="Address to bind.  [default: collect.host, 127.0.0.1]")
@click.option(
    "--port", default=None, type=click.IntRange(1, 65535), help="[default: collect.port, 8090]"
)
def collect(host: str | None, port: int | None) -> None:
    """Serve the HTTP front door: SPEC events, storefront webhooks, tracking calls -> Kafka."""
    from stream.collect.app import serve

    settings = _settings()
    try:
        serve(settings, host or settings.collect.host, port or settings.collect.port)
    except ConfigError as exc:
        raise click.ClickException(f"configuration error: {exc}") from None


@main.command("bench")
@click.option("--customers", type=click.IntRange(min=1), help="[default: 100000; quick 2000]")
@click.option("--events", type=click.IntRange(min=1), help="Orders. [default: 200000; quick 4000]")
@click.option("--refresh-sizes", default="", metavar="N,N", help="Refresh populations [C/10,C].")
@click.option(
    "--refresh-newcomers",
    type=click.IntRange(min=1),
    default=20,
    show_default=True,
    help="Top buyers added before the timed refresh: more move more customers.",
)
@click.option("--quick", is_flag=True, help="Small sizes for CI smoke runs (under a minute).")
@click.option("--profile", is_flag=True, help="Sample the worker and the baseline with py-spy.")
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Above 1: end to end again with this many workers in one group (scale-out).",
)
@click.option(
    "--json",
    "json_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the results here; the PNG chart goes beside them.",
)
@click.option(
    "--keep-collector-topics",
    is_flag=True,
    help="Leave the topics `rfm collect` and the bare producer wrote, to count them; "
    "delete them after.",
)
def bench_cmd(
    customers: int | None,
    events: int | None,
    refresh_sizes: str,
    refresh_newcomers: int,
    quick: bool,
    profile: bool,
    workers: int,
    json_path: Path | None,
    keep_collector_topics: bool,
) -> None:
    """Benchmark on the configured Kafka and Redis (SPEC section 10); PNG beside --json."""
    try:
        from bench import BenchError
        from bench.runner import Options, parse_sizes, run_bench
    except ImportError as exc:
        raise click.ClickException(
            f"rfm bench needs the bench extra ({exc.name}): pip install 'rfm-stream[bench]'"
        ) from None

    settings = _settings()
    try:
        options = Options.make(
            customers=customers,
            events=events,
            quick=quick,
            refresh_sizes=parse_sizes(refresh_sizes),
            refresh_newcomers=refresh_newcomers,
            profile=profile,
            workers=workers,
            keep_collector_topics=keep_collector_topics,
        )
        run_bench(settings, options, json_path)
    except BenchError as exc:
        raise click.ClickException(str(exc)) from None


if __name__ == "__main__":
    main()
