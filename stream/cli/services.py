"""`rfm worker`, `api`, `collect`, `campaigns` and `demo`: the long-running processes."""

from __future__ import annotations

from pathlib import Path

import click

from stream.cli.group import main, settings_or_exit
from stream.config import ConfigError, parse_duration


@main.command()
@click.option(
    "--loglevel", default="warn", type=click.Choice(["crit", "error", "warn", "info", "debug"])
)
def worker(loglevel: str) -> None:
    """Run the stream processor (Faust); several may run as one consumer group."""
    from stream.worker.app import run_worker

    run_worker(settings_or_exit(), loglevel)


@main.command()
@click.option(
    "--customers",
    default=2000,
    show_default=True,
    type=click.IntRange(1, 100_000),
    help="The shop's population: exactly this many customer ids, ever.",
)
@click.option(
    "--namespace",
    default="demo",
    show_default=True,
    help="Topic prefix NAME. and key prefix NAME: of everything the demo writes.",
)
@click.option(
    "--pace",
    default="6h",
    show_default=True,
    help="Shop time per wall-clock second (e.g. 1h, 6h, 1d), until the shop reaches today.",
)
@click.option("--duration", default=0.0, help="Stop after this many seconds (0 = until Ctrl-C).")
@click.option("--seed", default=7, show_default=True, help="The shop's random seed.")
def demo(customers: int, namespace: str, pace: str, duration: float, seed: int) -> None:
    """Stack + worker + api + campaigns + a simulated shop, in a namespace of its own;
    prints the dashboard URL."""
    from stream.demo import run_demo
    from stream.namespace import NamespaceError

    try:
        pace_ms = int(parse_duration("--pace", pace) * 1000)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    if pace_ms < 1000:
        raise click.UsageError(f"--pace: at least 1s of shop time a second, got {pace!r}")
    try:
        run_demo(
            settings_or_exit(),
            customers,
            namespace=namespace,
            pace_ms=pace_ms,
            duration=duration,
            seed=seed,
        )
    except NamespaceError as exc:
        raise click.ClickException(str(exc)) from None


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

    settings = settings_or_exit()
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
    """Serve the operator API and dashboard (bearer token when RFM_API_TOKEN is set; beyond
    loopback it must be, unless api.allow_unauthenticated)."""
    from consumers.api.app import run_api

    try:
        run_api(settings_or_exit(), host, port)
    except ConfigError as exc:
        raise click.ClickException(f"configuration error: {exc}") from None


@main.command()
@click.option("--host", default=None, help="Address to bind.  [default: collect.host, 127.0.0.1]")
@click.option(
    "--port", default=None, type=click.IntRange(1, 65535), help="[default: collect.port, 8090]"
)
def collect(host: str | None, port: int | None) -> None:
    """Serve the HTTP front door: SPEC events, storefront webhooks, tracking calls -> Kafka."""
    from stream.collect.app import serve

    settings = settings_or_exit()
    try:
        serve(settings, host or settings.collect.host, port or settings.collect.port)
    except ConfigError as exc:
        raise click.ClickException(f"configuration error: {exc}") from None
