"""`rfm refresh` and `rfm fit`: work that normally runs on its own, forced now; `rfm reset`:
a namespace's keys, topics and consumer groups removed."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import click

from stream.cli.group import main, settings_or_exit
from stream.config import Settings


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

    settings = settings_or_exit()
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
@click.option(
    "--holdout",
    default=None,
    help="Also check the model on a holdout: fit on all but this last stretch (e.g. 13w, "
    "90d) and compare its expected repeat purchases there with the actual ones.",
)
@click.option("--timeout", default=120.0, show_default=True, help="Seconds to wait for the lease.")
def fit_cmd(as_of: str | None, holdout: str | None, timeout: float) -> None:
    """Refit the CLV model (BG/NBD + Gamma-Gamma) now and publish it as a new version,
    with its checks (GET /api/model/checks)."""
    from stream.shell.refit import refit

    settings = settings_or_exit()
    at = None if as_of is None else _instant("--as-of", as_of)
    holdout_ms = None if holdout is None else _holdout_ms(holdout)
    report = asyncio.run(
        _under_lease(
            settings,
            lambda processor: refit(processor, as_of=at, holdout_ms=holdout_ms),
            timeout,
        )
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
    found = report.checks
    if found is None:
        return
    if found.drift.flagged:
        moved = ", ".join(f"{k} {v:.0%}" for k, v in found.drift.moves.items())
        click.echo(
            f"drift: parameters moved more than {found.drift.share:.0%} from "
            f"v{found.drift.previous_version} ({moved})"
        )
    if found.holdout_unavailable:
        click.echo(f"holdout: not computed: {found.holdout_unavailable}")
    h = found.holdout
    if h is not None:
        click.echo(
            f"holdout {h.weeks:.1f} weeks: {h.customers} calibration customers "
            f"({h.unsplit} without every order kept, left out); repeat purchases expected "
            f"{h.expected_total:.0f}, actual {h.actual_total}"
        )
        for b in h.buckets:
            click.echo(
                f"  calibration {b.label:>3}: {b.customers:>7} customers, per customer "
                f"expected {b.expected:.3f}, actual {b.actual:.3f}"
            )


def _holdout_ms(text: str) -> int:
    from stream.config import ConfigError
    from stream.config.checks import parse_duration

    try:
        seconds = parse_duration("--holdout", text)
    except ConfigError as exc:
        raise click.BadParameter(str(exc), param_hint="--holdout") from None
    if seconds < 86_400:
        raise click.BadParameter(
            f"expected at least one day (purchases count by day), e.g. 13w or 90d, got {text!r}",
            param_hint="--holdout",
        )
    return int(seconds * 1000)


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


@main.command("reset")
@click.option(
    "--namespace",
    "name",
    required=True,
    help="The namespace NAME: topics NAME.*, Redis keys NAME:*, consumer groups NAME.*.",
)
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def reset_cmd(name: str, yes: bool) -> None:
    """Remove a namespace: its Redis keys, Kafka topics and consumer groups (refused while
    a worker or consumer of it runs)."""
    from stream.namespace import Namespace, NamespaceError, reset, survey

    try:
        ns = Namespace(name)
    except NamespaceError as exc:
        raise click.UsageError(str(exc)) from None
    settings = settings_or_exit()
    found = asyncio.run(survey(settings, ns))
    if found.active:
        busy = ", ".join(f"{g} ({n} members)" for g, n in found.active.items())
        raise click.ClickException(
            f"namespace {name!r} is in use (consumer groups {busy}): stop its workers, "
            "demo or campaign consumer first; nothing removed"
        )
    if found.empty:
        click.echo(f"namespace {name!r} is empty: nothing to remove")
        return
    click.echo(
        f"namespace {name!r} on {settings.kafka_bootstrap} and {_redis_host(settings.redis_url)}:"
        f" {found.keys:,} Redis keys under {ns.key_prefix!r}, {len(found.topics)} topics under "
        f"{ns.topic_prefix!r}, consumer groups: {', '.join(found.groups) or 'none'}"
    )
    if ns.holds(settings):
        click.echo("this is the namespace your settings point at (RFM_TOPIC_PREFIX/RFM_KEY_PREFIX)")
    if not yes:
        click.confirm("Remove all of it for good?", abort=True)
    try:
        removed = asyncio.run(reset(settings, ns))
    except NamespaceError as exc:
        raise click.ClickException(f"{exc}; nothing removed") from None
    click.echo(
        f"removed namespace {name!r}: {removed.keys:,} keys, {len(removed.topics)} topics, "
        f"{len(removed.groups)} consumer groups"
    )


def _redis_host(url: str) -> str:
    """The URL without credentials, for the confirmation line."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return f"redis {parts.hostname or parts.path}:{parts.port or 6379}"
