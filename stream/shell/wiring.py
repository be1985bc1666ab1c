"""A processor wired from the deployment's settings: the one place that picks its store
and scheme, so the worker, the CLI, the benchmark and the tests all run the same thing."""

from __future__ import annotations

from stream.config import Settings
from stream.schemes import load_scheme
from stream.shell.ports import Publisher, Store
from stream.shell.processor import Processor
from stream.store.redis_store import open_store


def build_processor(
    settings: Settings,
    publisher: Publisher,
    store: Store | None = None,
    *,
    kind: type[Processor] = Processor,
) -> Processor:
    """A ``kind`` of processor over ``store`` (default: ``open_store(settings)``) with the
    configured scheme, publishing through ``publisher``. Closing the store is the caller's
    (``processor.store.aclose()``)."""
    scheme = load_scheme(settings.scoring.scheme, settings.scoring.buckets)
    return kind(settings, open_store(settings) if store is None else store, scheme, publisher)
