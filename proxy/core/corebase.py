"""What every core shares, whatever its rigs speak: wall time for events, the event bus,
the one way a pool's health changes, and the active group.  ``ProxyCore`` (SV1) and
``EthCore`` (EthereumStratum/1.0.0) both build on it, so the health machine, the router
and ``SilenceWatch`` see the same surface in either."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from .health import PoolHealth, soft_failure

if TYPE_CHECKING:
    from ..config import ProxySection
    from .events import CoreEvent, EventLog
    from .pool import PoolState

log = logging.getLogger("proxy.core")


class CoreBase:
    """Shared services of a core (its subclass sets the attributes named below)."""

    settings: ProxySection
    timers: Any  # has ``due(at)``: run the core no later than ``at``
    wall_offset: float
    events: EventLog
    pools: dict[str, PoolState]
    rigs: dict[int, Any]
    _active_names: tuple[str, ...]

    def wall(self, now: float) -> float:
        """Wall-clock time for a monotonic ``now``: events carry wall time, the core runs on monotonic."""
        return now + self.wall_offset

    def publish(self, event: CoreEvent, now: float) -> None:
        """Record an event in the decision log, stamped with wall time."""
        self.events.publish(event, self.wall(now))

    def set_health(self, pool: PoolState, state: PoolHealth, reason: str, now: float) -> None:
        """The one way a pool's health changes: publishes the event when the state or reason changed."""
        event = pool.health.transition(state, reason, now)
        if event is not None:
            self.publish(event, now)

    def active_pools(self) -> list[str]:
        """Names of the pools that get the hashrate now (a copy, safe to keep)."""
        return list(self._active_names)

    def group(self) -> list[PoolState]:
        """The active group as pool objects, skipping any pool removed from the config since."""
        return [self.pools[n] for n in self._active_names if n in self.pools]

    def reroute(self, now: float, reason: str, force: bool = False) -> None:
        raise NotImplementedError

    def rig_closed(self, rig: Any, now: float) -> None:
        raise NotImplementedError

    def close_rig(self, rig: Any, reason: str, now: float) -> None:
        """Close the rig's transport and release what it held, even if closing the transport fails."""
        log.info("closing rig %s (%s): %s", rig.rig_id, rig.peer, reason)
        try:
            rig.close()
        finally:
            self.rig_closed(rig, now)

    def close_all_rigs(self, reason: str, now: float) -> None:
        """Close every rig (shutdown, after the drain period); each one is released as by ``close_rig``."""
        for rig in list(self.rigs.values()):
            self.close_rig(rig, reason, now)

    def end_degradation(self, pool: PoolState, now: float) -> bool:
        """A degraded pool whose window is over is healthy again, on probation (True then)."""
        health = pool.health
        if health.state is PoolHealth.DEGRADED and now - health.changed_at >= self.settings.health_window_s:
            pool.rejects.clear()
            pool.timeouts.clear()
            self.set_health(pool, PoolHealth.HEALTHY, "degradation window over: on probation", now)
            self.reroute(now, f"{pool.name} recovered")
            return True
        return False

    def check_soft_health(self, pool: PoolState, now: float) -> None:
        """Degrade a healthy pool that rejects, times out or answers slowly."""
        if pool.health.state is PoolHealth.HEALTHY:
            reason = soft_failure(pool, self.settings, now)
            if reason is not None:
                self.set_health(pool, PoolHealth.DEGRADED, reason, now)
                self.timers.due(now + self.settings.health_window_s)
                self.reroute(now, f"{pool.name}: {reason}", force=True)
