"""Time in the core: what is due, and when the core next needs to run (as aioquic's
``get_timer``), so the glue sleeps until then instead of polling.

Deadlines are kept in arrival order, so finding what is due is O(1) however many rigs and
connections there are: requests to pools (a pool that answers none for ``silent_timeout_s``
is silent), jobs (a connection with no new job for ``max_job_age_s`` is stale), rigs that
must finish their handshake, held subscribes, the failback hold-down, a degraded pool's
window, redials after backoff, the weighted split's slices and the keepalive scan.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .admission import Admission
from .handover import keep_alive
from .health import PoolHealth
from .rigstats import EXACT_UP_TO
from .upstream import ConnState

if TYPE_CHECKING:
    from .coordinator import ProxyCore
    from .rig import RigSession

KEEPALIVE_SCAN_S = 1.0
LARGE_FARM_TICK_S = 0.05  # the hashrate sums of a large farm are built a slice per tick
SLO_CHECK_S = 0.5


class Timers:
    """Runs what is due for one core and says when it is next needed."""

    def __init__(self, core: ProxyCore, now: float) -> None:
        self.core = core
        self.admission = Admission(core.settings)
        self.hold_check_at: float | None = None
        self.next_split_at = now
        self.last_keepalive = now
        self.armed_at = now  # when the glue will call tick next

    # ------------------------------------------------------------------ registration

    def due(self, at: float) -> None:
        """Something must run at ``at``: wake the glue earlier if it would sleep past it."""
        if at < self.armed_at:
            self.armed_at = at
            self.core.io.wake(at)

    def admit(self, rig: RigSession, rigs_now: int, now: float) -> str:
        """Admit a new rig (see ``Admission.admit``) and wake for its handshake deadline."""
        refusal = self.admission.admit(rig, rigs_now, now)
        if not refusal:
            self.due(now + self.core.settings.auth_timeout_s)
        return refusal

    def release(self, rig: RigSession) -> None:
        """A rig closed: give back its admission slot."""
        self.admission.release(rig)

    # ------------------------------------------------------------------ running

    def run(self, now: float) -> float:
        """Run everything due at ``now`` (``ProxyCore.tick``); returns when to run next."""
        core = self.core
        s = core.settings
        if not core.layout.decided and now >= core.layout.deadline:
            core.upstreams.choose_layout(now, waited=True)
        if core.upstreams.doomed:
            core.upstreams.close_doomed(now)
        if core.mover.pending:
            core.mover.continue_moves(now)
        core.silence.check(now)
        self._stale(now)
        for pool in list(core.pools.values()):
            if not core.end_degradation(pool, now) and s.latency_slo_ms > 0:
                core.check_soft_health(pool, now)
        for rig in self.admission.overdue(now):
            core.totals["rigs_timed_out"] += 1
            core.close_rig(rig, f"not subscribed and authorized within {s.auth_timeout_s:g}s", now)
        deadline = core.handshake.next_deadline()
        if deadline is not None and deadline <= now:
            core.handshake.release(now, expired_only=True)
        core.jobs.expire(now)
        if len(core.active_pools()) > 1 and now >= self.next_split_at:
            self.next_split_at = now + s.split_slice_s
            self._steer_split(now)
        if self.hold_check_at is not None and now >= self.hold_check_at:
            self.hold_check_at = None  # reroute sets the next one
            core.reroute(now, "failback: hold-down over")
        core.upstreams.maintain(now)
        if now - self.last_keepalive >= KEEPALIVE_SCAN_S:
            self.last_keepalive = now
            conns = [c for p in core.pools.values() for c in p.connections.values()
                     if c.state is ConnState.READY]
            keep_alive(conns, core.placement.unplaced, s.keepalive_s, now)
        core.rig_totals.advance(core.rigs.values(), len(core.rigs), now)
        core.rigwatch.step(now)
        self.armed_at = self.next_run(now)
        return self.armed_at

    def _stale(self, now: float) -> None:
        max_age = self.core.settings.max_job_age_s
        arrivals = self.core.jobs.arrivals
        while arrivals and now - arrivals[0][0] > max_age:
            at, conn = arrivals.popleft()
            if conn.state is ConnState.READY and conn.last_job_at == at:
                self.core.upstreams.fail(conn, f"stale: no new job for {max_age:g}s", now)

    def _steer_split(self, now: float) -> None:
        """Weighted split: move as few rigs as needed so delivered work tracks the weights."""
        core = self.core
        group = core.group()
        rigs = [r for r in core.rigs.values() if r.conn is not None and r.pool in group]
        moves = core.router.steer(rigs, group, now, core.settings.split_slice_s)
        for rig, pool in moves:
            core.place(rig, pool, now)
        core.totals["split_moves"] += len(moves)

    def next_run(self, now: float) -> float:
        """The earliest time something is due (never before ``now``)."""
        core = self.core
        s = core.settings
        times = [self.last_keepalive + KEEPALIVE_SCAN_S]
        if core.mover.pending or core.upstreams.doomed:
            times.append(now)
        if not core.layout.decided:
            times.append(core.layout.deadline)
        if core.rigs:
            times.append(core.rigwatch.next_step_at)
        if core.jobs.arrivals:
            times.append(core.jobs.arrivals[0][0] + s.max_job_age_s)
        for deadline in (core.silence.next_deadline(), self.admission.next_deadline(),
                         core.handshake.next_deadline(),
                         core.jobs.next_expiry(), self.hold_check_at):
            if deadline is not None:
                times.append(deadline)
        if len(core.active_pools()) > 1:
            times.append(self.next_split_at)
        for pool in core.pools.values():
            if pool.health.state is PoolHealth.DEGRADED:
                times.append(pool.health.changed_at + s.health_window_s)
            if pool.enabled and core.placement.index(pool).live == 0:
                times.append(pool.next_dial_at)
        if s.latency_slo_ms > 0:
            times.append(now + SLO_CHECK_S)
        if len(core.rigs) > EXACT_UP_TO:
            times.append(now + LARGE_FARM_TICK_S)
        return max(min(times), now)
