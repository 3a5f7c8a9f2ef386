"""``python -m benchmarks.loopwatch --stalls FILE -c CONFIG``: the proxy with a loop watchdog.

Runs exactly what ``python -m proxy run -c CONFIG`` runs (``proxy.cli._run`` on a uvloop
loop), plus one timer callback every ``PERIOD_S`` in the proxy's own event loop. Each run
of it notes how long ago the previous one ran: a gap longer than the period means the loop
was busy in something else (a callback, or one pass of callbacks) for that long, so no rig
or pool was served meanwhile. Every gap over ``period + THRESHOLD_S`` is appended to FILE
as ``<start> <gap ms> <cpu ms>``: ``start`` is ``time.monotonic()`` when the gap began
(CLOCK_MONOTONIC, one clock for every process here, so the harness can cut out the
failover window), ``cpu`` the proxy thread's own CPU time over the gap (close to the gap:
the proxy was working; much less: it was waiting for a core).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

PERIOD_S = 0.002
THRESHOLD_S = 0.003  # gaps up to period + this are the timer's granularity, not stalls


class LoopWatch:
    """A timer every ``period`` seconds that appends each late run to ``path``."""

    def __init__(self, path: str, period: float = PERIOD_S, threshold: float = THRESHOLD_S) -> None:
        self.period = period
        self.threshold = threshold
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self.loop: asyncio.AbstractEventLoop | None = None
        self.last = 0.0
        self.last_cpu = 0.0

    def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.last, self.last_cpu = time.monotonic(), time.thread_time()
        os.write(self.fd, b"# pid %d, a timer every %g ms\n" % (os.getpid(), self.period * 1000))
        self.loop.call_later(self.period, self._tick)

    def _tick(self) -> None:
        now, cpu = time.monotonic(), time.thread_time()
        gap = now - self.last
        if gap > self.period + self.threshold:
            os.write(self.fd, b"%.6f %.3f %.3f\n"
                     % (self.last, gap * 1000, (cpu - self.last_cpu) * 1000))
        self.last, self.last_cpu = now, cpu
        assert self.loop is not None
        self.loop.call_later(self.period, self._tick)


def read_stalls(path: Path, start: float, end: float, period: float = PERIOD_S) -> dict[str, Any]:
    """The longest stall overlapping [start, end] (monotonic seconds) in a watchdog file:
    ``stall_ms`` = gap - period, with the proxy's CPU over that gap, and how many stalls
    there were over 10 ms and over 100 ms (``stall_ms`` 0: none over period + threshold).
    ``watched``: the watchdog ran at all."""
    worst: tuple[float, float, float] | None = None
    over_10 = over_100 = 0
    lines = path.read_text().splitlines() if path.exists() else []
    for line in lines:
        if line.startswith("#"):
            continue
        at, gap_ms, cpu_ms = (float(x) for x in line.split())
        if at > end or at + gap_ms / 1000 < start:
            continue
        stall = gap_ms - period * 1000
        over_10 += stall > 10
        over_100 += stall > 100
        if worst is None or stall > worst[0]:
            worst = (stall, cpu_ms, at)
    return {"watched": bool(lines) and lines[0].startswith("#"),
            "stall_ms": round(worst[0], 1) if worst else 0.0,
            "stall_cpu_ms": round(worst[1], 1) if worst else None,
            "stall_at_s": round(worst[2] - start, 3) if worst else None,
            "stalls_over_10ms": over_10, "stalls_over_100ms": over_100}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.loopwatch", description=__doc__)
    parser.add_argument("--stalls", required=True, help="file the late watchdog runs go to")
    parser.add_argument("-c", "--config", required=True)
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(level=getattr(logging, args.log_level.upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import uvloop

    from proxy import cli
    from proxy.config import ConfigError, load

    try:
        config = load(args.config)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    watch = LoopWatch(args.stalls)

    async def run() -> int:
        watch.start()
        return await cli._run(config)

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(run())


if __name__ == "__main__":
    sys.exit(main())
