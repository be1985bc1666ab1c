"""What one `rfm bench` run is asked to do: sizes, rates and switches, from the command line."""

from __future__ import annotations

from dataclasses import dataclass

from bench import (
    BenchError,
)


@dataclass(frozen=True)
class Options:
    customers: int = 100_000
    events: int = 200_000
    latency_rate: float = 2000.0
    latency_seconds: float = 10.0
    refresh_sizes: tuple[int, ...] = (10_000, 100_000)
    refresh_newcomers: int = 20  # top buyers added before the timed refresh
    profile: bool = False
    quick: bool = False
    workers: int = 1  # > 1: end to end once more with this many workers in one group
    keep_collector_topics: bool = False  # left for the caller to read, then delete

    @classmethod
    def make(
        cls,
        *,
        customers: int | None = None,
        events: int | None = None,
        quick: bool = False,
        refresh_sizes: tuple[int, ...] = (),
        refresh_newcomers: int = 20,
        profile: bool = False,
        workers: int = 1,
        keep_collector_topics: bool = False,
    ) -> Options:
        """Defaults for a full or a quick (< 60 s) run; explicit values win.

        Refresh populations default to a tenth of the customers and the customers (at least
        1,000 and 10,000): big enough to show whether the cost follows the population.
        """
        if quick:
            customers = customers or 2_000
            events = events or 4_000
            seconds = 3.0
        else:
            customers = customers or cls.customers
            events = events or cls.events
            seconds = cls.latency_seconds
        if customers < 1 or events < 1 or any(n < 100 for n in refresh_sizes):
            raise BenchError("--customers and --events must be >= 1, refresh sizes >= 100")
        if workers < 1:
            raise BenchError("--workers must be >= 1")
        customers = min(customers, events)
        sizes = refresh_sizes or (max(1_000, customers // 10), max(10_000, customers))
        return cls(
            customers=customers,
            events=events,
            latency_seconds=seconds,
            refresh_sizes=tuple(sorted(set(sizes))),
            refresh_newcomers=refresh_newcomers,
            profile=profile,
            quick=quick,
            workers=workers,
            keep_collector_topics=keep_collector_topics,
        )


def parse_sizes(text: str) -> tuple[int, ...]:
    """``"100000,1000000"`` -> ``(100000, 1000000)``; empty means the defaults."""
    try:
        return tuple(int(part.replace("_", "")) for part in text.split(",") if part.strip())
    except ValueError:
        raise BenchError(
            f"--refresh-sizes: expected numbers like 10000,100000; got {text!r}"
        ) from None
