"""`rfm dlq` and `rfm dlq replay`: read the dead letters (input the worker rejected, with its
reason) and send chosen ones back to their topic, as they were or fixed.

Reads go to the topic's current end and stop, without a consumer group (nothing committed,
no group disturbed). The dead letters stay in the topic after a replay: the topic is a
record of what was rejected, and replaying an event twice is harmless (the worker drops a
repeated event id)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, BinaryIO, TypeVar

import click

from stream.cli.group import main, settings_or_exit
from stream.config import Settings
from stream.deadletters import Letter, Selection, in_time_order, parse_id, parse_moment

F = TypeVar("F", bound=Callable[..., Any])


def _moment(ctx: click.Context, param: click.Parameter, value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return parse_moment(value, time.time_ns() // 1_000_000)
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx=ctx, param=param) from None


def _ids(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> frozenset[Any]:
    try:
        return frozenset(parse_id(text) for text in value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx=ctx, param=param) from None


def _filters(command: F) -> F:
    """The options that choose dead letters, the same for showing and for replaying."""
    for option in reversed(
        [
            click.option(
                "--reason", metavar="TEXT", help="Only reasons containing TEXT (any case)."
            ),
            click.option(
                "--since",
                metavar="TIME",
                callback=_moment,
                help="Only those dead-lettered at or after TIME: RFC 3339, epoch ms, or an "
                "age (30m, 1h, 2d; units s m h d w).",
            ),
            click.option(
                "--until",
                metavar="TIME",
                callback=_moment,
                help="Only those dead-lettered before TIME (same forms as --since).",
            ),
        ]
    ):
        command = option(command)
    return command


def _count(n: int) -> str:
    return f"{n} dead letter{'' if n == 1 else 's'}"


def _read(
    settings: Settings, selection: Selection, limit: int | None
) -> tuple[list[Letter], int, int]:
    """(the chosen dead letters oldest first, how many matched, how many were read)."""
    from stream.kafka.dead_letters import read_letters
    from stream.kafka.topics import Topics

    async def run() -> tuple[list[Letter], int, int]:
        kept: list[Letter] = []
        matched = read = 0
        topic = Topics(settings.topic_prefix).dlq
        async for letter in read_letters(settings, topic, since_ms=selection.since):
            read += 1
            if selection.matches(letter):
                matched += 1
                kept.append(letter)
                if limit is not None and len(kept) >= 2 * limit:
                    kept = in_time_order(kept, limit)  # memory bounded by the limit
        return in_time_order(kept, limit), matched, read

    return asyncio.run(run())


@main.group("dlq", invoke_without_command=True)
@_filters
@click.option("--limit", type=click.IntRange(min=1), help="Only the newest N of those that match.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["human", "jsonl"]),
    default="human",
    show_default=True,
    help="jsonl: one JSON object a line, the record as written plus id, time and key.",
)
@click.pass_context
def dlq(
    ctx: click.Context,
    reason: str | None,
    since: int | None,
    until: int | None,
    limit: int | None,
    fmt: str,
) -> None:
    """Show the dead letters: input records the worker rejected, with the reason, the
    original topic, partition and offset, and the payload; oldest first. Each has an id
    (PARTITION:OFFSET in the dead-letter topic) for `rfm dlq replay`."""
    import logging

    logging.getLogger("aiokafka").setLevel(logging.WARNING)  # its assignment notices
    if ctx.invoked_subcommand is not None:
        if any(x is not None for x in (reason, since, until, limit)) or fmt != "human":
            raise click.UsageError(f"options go after `{ctx.invoked_subcommand}`")
        return
    from stream.deadletters import human, jsonl
    from stream.kafka.topics import Topics

    settings = settings_or_exit()
    selection = Selection(reason=reason, since=since, until=until)
    letters, matched, read = _read(settings, selection, limit)
    out = click.get_text_stream("stdout")
    for n, letter in enumerate(letters):
        if fmt == "jsonl":
            click.get_binary_stream("stdout").write(jsonl(letter))
        else:
            out.write(("\n" if n else "") + human(letter) + "\n")
    topic = Topics(settings.topic_prefix).dlq
    summary = f"{_count(read)} read from {topic}"
    if selection.narrows:
        summary += f", {matched} matching"
    if len(letters) < matched:
        summary += f", the newest {len(letters)} shown"
    click.echo(summary, err=True)


@dlq.command("replay")
@click.argument("ids", nargs=-1, metavar="[ID]...", callback=_ids)
@_filters
@click.option("--all", "everything", is_flag=True, help="Every dead letter (no other choice).")
@click.option(
    "--payload",
    type=click.File("rb"),
    help="Send this fixed event (a file, or - for stdin) instead of the dead letter's own "
    "payload; exactly one dead letter must be chosen.",
)
@click.option(
    "--skip-refused", is_flag=True, help="Replay the others when some would be rejected again."
)
@click.option("--dry-run", is_flag=True, help="Check and list, produce nothing.")
def replay(
    ids: frozenset[tuple[int, int]],
    reason: str | None,
    since: int | None,
    until: int | None,
    everything: bool,
    payload: BinaryIO | None,
    skip_refused: bool,
    dry_run: bool,
) -> None:
    """Send chosen dead letters back to their original topic, keyed by customer id.

    Choose them by ID (as `rfm dlq` shows, e.g. 2:17), by --reason/--since/--until, or --all.
    Each event is first checked by the worker's own parser; one it would reject again is
    refused with the reason, and then nothing is sent unless --skip-refused. A rejection the
    parser cannot foresee (a refund of an order the worker does not know) is dead-lettered
    again by the worker. The dead letters stay in the topic; replaying one twice is harmless."""
    from stream.deadletters import ReplayRefused, replay_of
    from stream.kafka.dead_letters import produce_replays
    from stream.kafka.topics import Topics

    selection = Selection(reason=reason, since=since, until=until, ids=ids)
    if everything == selection.narrows:
        raise click.UsageError(
            "choose the dead letters: their ids (as `rfm dlq` shows them), --reason, "
            "--since/--until, or --all for every one"
            if not everything
            else "--all goes alone: without ids, --reason, --since or --until"
        )
    fixed = None if payload is None else payload.read()
    settings = settings_or_exit()
    topics = Topics(settings.topic_prefix)
    letters, _, _ = _read(settings, selection, None)
    absent = sorted(ids - {(x.partition, x.offset) for x in letters})
    if absent:
        named = ", ".join(f"{p}:{o}" for p, o in absent)
        raise click.ClickException(f"no dead letter {named} in {topics.dlq}")
    if not letters:
        raise click.ClickException(f"no dead letter in {topics.dlq} matches")
    if fixed is not None and len(letters) != 1:
        raise click.UsageError(
            f"--payload replaces one dead letter's payload, and {len(letters)} match: "
            "name one by its id"
        )
    now = time.time_ns() // 1_000_000
    replays, refused = [], 0
    for letter in letters:
        try:
            replays.append(replay_of(letter, fixed, topics, settings.store, now))
        except ReplayRefused as exc:
            refused += 1
            click.echo(f"dead letter {letter.id}: {exc}", err=True)
    if refused and not skip_refused:
        raise click.ClickException(
            f"nothing replayed: {refused} of {len(letters)} refused (--skip-refused replays "
            "the others)"
        )
    if dry_run:
        for r in replays:
            key = r.key.decode("utf-8", "replace")
            click.echo(f"would replay dead letter {r.letter.id} to {r.topic} (key {key})")
        return
    placed = asyncio.run(produce_replays(settings, replays)) if replays else []
    for r, (partition, offset) in zip(replays, placed, strict=True):
        key = r.key.decode("utf-8", "replace")
        click.echo(
            f"replayed dead letter {r.letter.id} to {r.topic} partition {partition} "
            f"offset {offset} (key {key})"
        )
    click.echo(f"replayed {len(replays)} of {_count(len(letters))}", err=True)
