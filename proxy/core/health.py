"""Pool health as one state machine, and the soft checks that feed it.

Every change of a pool's health goes through ``PoolHealthMachine.transition``, which returns
exactly one ``PoolHealthChanged`` event with the reason: the history then holds every DOWN,
every recovery and every operator action, and the router reads one consistent state.  The
checks here only judge (they return a reason or None); the coordinator acts on the verdict.
"""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING

from .events import PoolHealthChanged

if TYPE_CHECKING:
    from ..config import ProxySection
    from .pool import PoolState


class PoolHealth(StrEnum):
    """A pool's health: only HEALTHY pools get hashrate; each comment says when a pool is in that state."""

    HEALTHY = "healthy"  # connected, subscribed, authorized, holding a job, within limits
    DEGRADED = "degraded"  # up but rejecting, timing out or slow: no hashrate for a window
    DOWN = "down"  # no usable connection (refused, reset, silent, stale, not yet up)
    DISABLED = "disabled"  # by the operator or the config


class PoolHealthMachine:
    """The health of one pool, with the facts the router and the hold-down need."""

    __slots__ = ("pool_name", "state", "reason", "healthy_since", "ever_failed", "changed_at")

    def __init__(self, pool_name: str) -> None:
        self.pool_name = pool_name
        self.state = PoolHealth.DOWN
        self.reason = "not connected yet"
        self.healthy_since: float | None = None
        self.ever_failed = False  # a pool that failed must sit out the failback hold-down
        self.changed_at = 0.0

    def transition(self, to: PoolHealth, reason: str, now: float) -> PoolHealthChanged | None:
        """Move to ``to``; the event to publish, or None when nothing changed."""
        if to == self.state and reason == self.reason:
            return None
        previous = self.state
        self.state = to
        self.reason = reason
        self.changed_at = now
        if to == PoolHealth.HEALTHY:
            if previous != PoolHealth.HEALTHY:
                self.healthy_since = now
        else:
            self.healthy_since = None
            self.ever_failed = True
        return PoolHealthChanged(pool=self.pool_name, previous=previous.value, state=to.value,
                                 reason=reason)

    def settled(self, now: float, hold_s: float) -> bool:
        """Healthy for the hold-down (or never failed): may take rigs back."""
        if not self.ever_failed:
            return True
        return self.healthy_since is not None and now - self.healthy_since >= hold_s


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
