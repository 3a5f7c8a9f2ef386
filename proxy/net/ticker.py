"""The loop side of a sans-I/O core's clock: call ``tick(now)`` when the core says it next
needs to run (or sooner when it asks through ``CoreIO.wake``), capped so a deadline the
core did not announce is at most ``TICK_CAP_S`` late.  One per core (the SV1 core, each
GPU listener's core)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

log = logging.getLogger("proxy.service")

# the core says when it next needs to run; this caps the sleep (a deadline created between
# two runs that the core did not announce through CoreIO.wake is then at most this late)
TICK_CAP_S = 0.25
MIN_TICK_S = 0.001


class Ticker:
    """Runs ``tick`` (monotonic now -> next deadline) on the running loop until stopped."""

    __slots__ = ("tick", "name", "_handle", "_at", "_running")

    def __init__(self, tick: Callable[[float], float], name: str) -> None:
        self.tick = tick
        self.name = name
        self._handle: asyncio.TimerHandle | None = None
        self._at = 0.0
        self._running = False

    def start(self, at: float) -> None:
        """Start ticking, first at ``at``."""
        self._running = True
        self._schedule(at)

    def stop(self) -> None:
        """No more ticks."""
        self._running = False
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def wake(self, at: float) -> None:
        """The core's ``CoreIO.wake``: run no later than ``at``."""
        if at < self._at and self._running:
            self._schedule(at)

    def _schedule(self, at: float) -> None:
        if self._handle is not None:
            self._handle.cancel()
        now = time.monotonic()
        delay = min(max(at - now, MIN_TICK_S), TICK_CAP_S)
        self._at = now + delay
        self._handle = asyncio.get_running_loop().call_later(delay, self._run)

    def _run(self) -> None:
        self._handle = None
        next_at = time.monotonic() + TICK_CAP_S
        try:
            next_at = self.tick(time.monotonic())
        except Exception:
            log.exception("%s: tick failed", self.name)
        if self._running:
            self._schedule(next_at)
