"""Bounded waiting on conditions, shared by the simulated pool, rigs and the tests.

Tests must never synchronise with bare sleeps (slow on a fast machine, flaky on a slow one),
and must never hang: every wait here has a deadline and fails with a message that says what
was being waited for.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

__all__ = ["wait_until"]


async def wait_until(predicate: Callable[[], bool], timeout: float, *,
                     what: str | None = None, event: asyncio.Event | None = None,
                     poll: float = 0.02) -> None:
    """Return as soon as ``predicate()`` is true; raise TimeoutError after ``timeout`` seconds.

    When ``event`` is given it is set by whoever changes the observed state, so we wake up
    at once instead of at the next poll; polling still runs (every ``poll`` s) because a
    predicate may also read state the event does not cover (another pool's counters).
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        if predicate():
            return
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise TimeoutError(f"timed out after {timeout:.1f}s waiting for "
                               f"{what or getattr(predicate, '__name__', 'condition')}")
        step = min(poll, remaining)
        if event is None:
            await asyncio.sleep(step)
            continue
        event.clear()
        if predicate():
            return
        try:
            async with asyncio.timeout(step):
                await event.wait()
        except TimeoutError:
            pass
