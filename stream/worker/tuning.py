"""Process-wide settings for the long-running consumers (worker, raw baseline).

Both are set once at start-up, before any event loop exists, and both are measured
(``rfm bench``); the worker and the baseline take the same ones, so the two differ only
by Faust.
"""

from __future__ import annotations

import asyncio
import gc


def tune_gc() -> None:
    """After start-up. Folding a batch allocates a few short-lived objects per event, almost
    none in cycles; Python's default gen-0 threshold (700) ran a collection every few
    customers and a full one every ~70,000 allocations, each walking every module and
    framework object. Freezing start-up objects and collecting less often: 3,700 -> 4,400
    events/s in-process (100k orders, 50k customers)."""
    gc.freeze()
    gc.set_threshold(50_000, 20, 10)


def use_uvloop() -> bool:
    """Event loops created from now on (Faust's main loop and its consumer thread's) are
    uvloop's. Half the worker's CPU was asyncio's pure-Python loop, selector and socket
    transports running Faust's per-message tasks; uvloop does that in C. Returns False
    where uvloop is not installed (it has no Windows build): the standard loop is kept."""
    try:
        import uvloop
    except ImportError:
        return False
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return True
