"""`rfm bench`: the benchmark (bench/)."""

from __future__ import annotations

from pathlib import Path

import click

from stream.cli.group import main, settings_or_exit


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

    from stream.process import Supervisor

    settings = settings_or_exit()
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
        # SIGTERM and SIGHUP, like Ctrl-C, run its clean-up: children stopped, topics removed
        with Supervisor():
            run_bench(settings, options, json_path)
    except BenchError as exc:
        raise click.ClickException(str(exc)) from None
