"""Pool health as one state machine, and the soft checks that feed it.

Every change of a pool's health goes through ``PoolHealthMachine.transition``, which returns
exactly one ``PoolHealthChanged`` event with the reason: the history then holds every DOWN,
every recovery and every operator action, and the router reads one consistent state.  The
checks here only judge (they return a reason or None); the coordinator acts on the verdict.
"""

from __future__ import annotations

import statistics
from collections import deque
from enum import StrEnum
from typing import TYPE_CHECKING

from .events import PoolHealthChanged

if TYPE_CHECKING:
    from ..config import ProxySection
    from .pool import PoolState


class PoolHealth(StrEnum):
    """A pool's health: only HEALTHY pools get hashrate; each comment says when a pool is in that state."""

    HEALTHY = "healthy"  # connected, subscribed, authorized, holding a job, within limits
    SUSPECT = "suspect"  # quieter than its own latency or job pace allows: rigs moved, link kept
    DEGRADED = "degraded"  # up but rejecting, timing out or slow: no hashrate for a window
    DOWN = "down"  # no usable connection (refused, reset, silent, stale, not yet up)
    DISABLED = "disabled"  # by the operator or the config


class PoolHealthMachine:
    """The health of one pool, with the facts the router and the hold-down need."""

    __slots__ = ("pool_name", "state", "reason", "healthy_since", "ever_failed", "changed_at",
                 "hold_s", "suspected_by", "suspicions")

    def __init__(self, pool_name: str) -> None:
        self.pool_name = pool_name
        self.state = PoolHealth.DOWN
        self.reason = "not connected yet"
        self.healthy_since: float | None = None
        self.ever_failed = False  # a pool that failed must sit out the failback hold-down
        self.changed_at = 0.0
        self.hold_s: float | None = None  # a shorter hold-down after a suspicion cleared
        self.suspected_by = ""  # "answers" or "jobs": what clears the suspicion
        self.suspicions: deque[float] = deque()  # when it was suspected, within the window

    def transition(self, to: PoolHealth, reason: str, now: float,
                   hold_s: float | None = None) -> PoolHealthChanged | None:
        """Move to ``to``; the event to publish, or None when nothing changed.  ``hold_s``
        replaces the failback hold-down for a return to HEALTHY (a cleared suspicion)."""
        if to == self.state and reason == self.reason:
            return None
        previous = self.state
        self.state = to
        self.reason = reason
        self.changed_at = now
        if to == PoolHealth.HEALTHY:
            if previous != PoolHealth.HEALTHY:
                self.healthy_since = now
                self.hold_s = hold_s
        else:
            self.healthy_since = None
            self.ever_failed = True
            if to != PoolHealth.SUSPECT:
                self.suspected_by = ""
        return PoolHealthChanged(pool=self.pool_name, previous=previous.value, state=to.value,
                                 reason=reason)

    def hold_for(self, failback_hold_s: float) -> float:
        """The hold-down that applies to this recovery."""
        return failback_hold_s if self.hold_s is None else self.hold_s

    def settled(self, now: float, failback_hold_s: float) -> bool:
        """Healthy for the hold-down (or never failed): may take rigs back."""
        if not self.ever_failed:
            return True
        return (self.healthy_since is not None
                and now - self.healthy_since >= self.hold_for(failback_hold_s))

    def suspected(self, now: float, window_s: float) -> int:
        """Count a suspicion; returns how many fell within the window (this one included)."""
        self.suspicions.append(now)
        while self.suspicions and now - self.suspicions[0] > window_s:
            self.suspicions.popleft()
        return len(self.suspicions)


def soft_failure(pool: PoolState, settings: ProxySection, now: float) -> str | None:
    """Why a healthy pool should be degraded now (reject or timeout ratio, latency SLO)."""
    s = settings
    if pool.rejects.samples >= s.min_answers_for_health and pool.rejects.ratio > s.max_reject_ratio:
        return f"rejecting {pool.rejects.ratio:.0%} of shares (limit {s.max_reject_ratio:.0%})"
    if pool.timeouts.samples >= s.min_answers_for_health and pool.timeouts.ratio > s.max_timeout_ratio:
        return f"{pool.timeouts.ratio:.0%} of shares timed out (limit {s.max_timeout_ratio:.0%})"
    if s.latency_slo_ms > 0 and pool.rig_count():
        window = pool.latency.window(now)
        if window.count >= s.min_answers_for_health:
            p99 = window.quantile(0.99) or 0.0
            if p99 * 1000 > s.latency_slo_ms:
                return f"p99 share latency {p99 * 1000:.0f} ms over the {s.latency_slo_ms:g} ms SLO"
    return None


def silent_bound(pool: PoolState, settings: ProxySection, now: float) -> tuple[float, float, str]:
    """(suspect after, silent after, how the first was found) for a request to ``pool``.

    Fixed ``silent_timeout_s``: one window, no suspicion.  "auto": the pool's own recent p99
    answer latency times ``silent_p99_multiple``, kept between the floor and the ceiling; a
    pool with too few answers in the window to know its latency gets the ceiling."""
    s = settings
    if s.silent_timeout_s != "auto":
        fixed = float(s.silent_timeout_s)
        return fixed, fixed, f"fixed silent_timeout_s {fixed:g} s"
    ceiling = s.silent_ceiling_s
    window = pool.latency.window(now)
    if window.count < s.min_answers_for_health:
        return ceiling, ceiling, f"ceiling {ceiling:g} s ({window.count} answers in the window)"
    p99 = window.quantile(0.99) or 0.0
    bound = min(max(s.silent_p99_multiple * p99, s.silent_floor_s), ceiling)
    return bound, ceiling, (f"{s.silent_p99_multiple:g} x p99 {p99 * 1000:.1f} ms, floor "
                            f"{s.silent_floor_s:g} s, ceiling {ceiling:g} s")


JOB_PACE_MULTIPLE = 3.0  # no job for this many median job intervals: suspect
JOB_PACE_SAMPLES = 4  # intervals needed before the pace is trusted


def job_bound(pool: PoolState, settings: ProxySection) -> float | None:
    """How long the pool may go without a new job before it is suspect: a multiple of its
    own median job interval, below ``max_job_age_s`` (None: its pace is not known yet)."""
    if len(pool.job_intervals) < JOB_PACE_SAMPLES:
        return None
    bound = JOB_PACE_MULTIPLE * statistics.median(pool.job_intervals)
    return bound if bound < settings.max_job_age_s else None
