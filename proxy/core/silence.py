"""Silence: a pool that stops answering, or stops sending jobs, is left on suspicion.

Moving rigs costs them nothing (the switch is invisible), so the proxy need not wait the
old fixed 4 s while every share the farm finds goes to a pool that may never answer.  A
request unanswered for longer than the pool's own latency allows (``health.silent_bound``:
a multiple of its recent p99, between a floor and a ceiling), or no new job for longer than
its own pace allows (``health.job_bound``), makes the pool *suspect*: the rigs move at once,
its connections stay open.  If it answers after all, it was slow, not dead: its late answers
count, and it gets the rigs back after ``suspect_hold_s``.  Suspected ``suspect_limit``
times within ``suspect_window_s``, it is degraded instead (bursty latency must not make the
farm flap).  Still silent at the ceiling: it is down, as before.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .health import PoolHealth, job_bound, silent_bound
from .sharepath import ShareDesk

if TYPE_CHECKING:
    from .coordinator import ProxyCore
    from .pool import PoolState
    from .upstream import PoolConnection

ANSWERS = "answers"
JOBS = "jobs"


class SilenceWatch:
    """Watches every request and every pool's job pace for one core."""

    __slots__ = ("core",)

    def __init__(self, core: ProxyCore) -> None:
        self.core = core

    def watch(self, sent_at: float, conn: PoolConnection, msg_id: int) -> None:
        """A request went to a pool (the connection's ``watch`` hook)."""
        pool = conn.pool
        pool.requests.append((sent_at, conn, msg_id))
        if len(pool.requests) == 1:
            self.core.timers.due(sent_at + (pool.suspect_after or self.core.settings.silent_ceiling_s))

    def check(self, now: float) -> None:
        """Suspect, clear or fail what is due, pool by pool."""
        core = self.core
        for pool in list(core.pools.values()):
            pool.suspect_after, silent_after, how = silent_bound(pool, core.settings, now)
            pool.suspect_reason = how
            oldest = self._oldest_pending(pool)
            if oldest is not None:
                sent_at, conn = oldest
                waited = now - sent_at
                if waited > silent_after:
                    ShareDesk.timed_out(conn)
                    core.upstreams.fail(conn, f"silent: no answer for {silent_after:g}s", now)
                    continue
                if waited > pool.suspect_after and pool.health.state is PoolHealth.HEALTHY:
                    self.suspect(pool, ANSWERS, f"suspect: a request unanswered for {waited:.2f} s, "
                                                f"over its bound {pool.suspect_after:.2f} s ({how})", now)
                    continue
            bound = job_bound(pool, core.settings) if core.settings.silent_timeout_s == "auto" else None
            quiet = now - pool.last_job_at
            if (bound is not None and pool.last_job_at and quiet > bound
                    and pool.health.state is PoolHealth.HEALTHY and pool.has_ready):
                self.suspect(pool, JOBS, f"suspect: no new job for {quiet:.1f} s, over 3 x its "
                                         f"median job interval ({bound:.1f} s)", now)

    @staticmethod
    def _oldest_pending(pool: PoolState) -> tuple[float, PoolConnection] | None:
        requests = pool.requests
        while requests:
            sent_at, conn, msg_id = requests[0]
            if conn.alive and msg_id in conn.pending:
                return sent_at, conn
            requests.popleft()
        return None

    def next_deadline(self) -> float | None:
        """When the next suspicion or failure could be due."""
        times = []
        ceiling = self.core.settings.silent_ceiling_s
        for pool in self.core.pools.values():
            if pool.requests:
                after = pool.suspect_after if pool.health.state is PoolHealth.HEALTHY else 0.0
                times.append(pool.requests[0][0] + (after or ceiling))
                if self.core.settings.silent_timeout_s == "auto":
                    times.append(pool.requests[0][0] + ceiling)
            bound = job_bound(pool, self.core.settings)
            if bound is not None and pool.last_job_at and pool.health.state is PoolHealth.HEALTHY:
                times.append(pool.last_job_at + bound)
        return min(times) if times else None

    def suspect(self, pool: PoolState, by: str, reason: str, now: float) -> None:
        """Move the rigs off a pool that went quiet, keeping its connections; a pool
        suspected too often within the window is degraded instead."""
        core = self.core
        s = core.settings
        count = pool.health.suspected(now, s.suspect_window_s)
        if count >= s.suspect_limit:
            core.set_health(pool, PoolHealth.DEGRADED, f"suspected {count} times within "
                                                       f"{s.suspect_window_s:g} s; last: {reason}", now)
            core.timers.due(now + s.health_window_s)
        else:
            core.set_health(pool, PoolHealth.SUSPECT, reason, now)
            pool.health.suspected_by = by
        core.reroute(now, f"{pool.name}: {reason}", force=True)

    def heard(self, pool: PoolState, by: str, detail: str, now: float) -> None:
        """The pool answered (``by`` = ANSWERS) or sent a job (JOBS): a suspicion of that
        kind is cleared, with the short hold-down."""
        health = pool.health
        if health.state is not PoolHealth.SUSPECT or health.suspected_by != by:
            return
        core = self.core
        hold = core.settings.suspect_hold_s
        event = health.transition(PoolHealth.HEALTHY, f"slow, not dead: {detail}; rigs return after "
                                                      f"{hold:g} s", now, hold_s=hold)
        if event is not None:
            core.publish(event, now)
        core.reroute(now, f"{pool.name}: {detail}")
