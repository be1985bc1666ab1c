"""The worker's process settings take effect (stream.worker.tuning)."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator

import pytest
import uvloop

from stream.worker.tuning import tune_gc, use_uvloop


@pytest.fixture
def restored() -> Iterator[None]:
    policy = asyncio.get_event_loop_policy()
    threshold = gc.get_threshold()
    yield
    asyncio.set_event_loop_policy(policy)
    gc.set_threshold(*threshold)
    gc.unfreeze()


def test_loops_made_after_use_uvloop_are_uvloop(restored: None) -> None:
    assert use_uvloop()
    loop = asyncio.new_event_loop()  # as Faust's worker and its consumer thread make theirs
    try:
        assert isinstance(loop, uvloop.Loop)
        assert loop.run_until_complete(asyncio.sleep(0, result=7)) == 7
    finally:
        loop.close()


def test_tune_gc_collects_gen0_rarely(restored: None) -> None:
    tune_gc()
    assert gc.get_threshold()[0] == 50_000
    assert gc.get_freeze_count() > 0
