"""`rfm stack`: the local Kafka and Redis on loopback."""

from __future__ import annotations

import sys
from typing import Any

import click

from stream.cli.group import main


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
