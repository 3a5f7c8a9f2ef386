"""What operators change at run time: priorities, weights, enabled, drain, a config reload.

None of it disconnects a rig: every change ends in a reroute, which moves rigs the way a
failover does (difficulty, mask, a clean job; the extranonce stays).  Each change is one
typed event with what changed, from what, to what.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..config import Config, PoolConfig
from .events import ConfigReloaded, PoolChanged, PoolDrained, PoolUndrained
from .health import PoolHealth
from .pool import PoolState

if TYPE_CHECKING:
    from .coordinator import ProxyCore


def _pool_identity(cfg: PoolConfig) -> tuple:
    return (cfg.url, cfg.user, cfg.password, cfg.ca_file, cfg.tls_verify)


class Operator:
    """Applies operator changes to one core."""

    __slots__ = ("core",)

    def __init__(self, core: ProxyCore) -> None:
        self.core = core

    def set_pool(self, name: str, now: float, *, priority: int | None = None,
                 weight: float | None = None, enabled: bool | None = None) -> None:
        """Change a pool's priority, weight or enabled flag; publishes ``PoolChanged`` and
        reroutes (forced on a weight change so the split is redone)."""
        core = self.core
        pool = core.pools[name]
        cfg = pool.config
        changes: dict[str, tuple] = {}
        if priority is not None and priority != cfg.priority:
            changes["priority"] = (cfg.priority, priority)
            cfg.priority = priority
        if weight is not None and weight != cfg.weight:
            changes["weight"] = (cfg.weight, weight)
            cfg.weight = weight
        if enabled is not None and enabled != cfg.enabled:
            changes["enabled"] = (cfg.enabled, enabled)
            cfg.enabled = enabled
            if enabled:
                pool.draining = False
                if pool.has_ready:
                    core.set_health(pool, PoolHealth.HEALTHY, "enabled by operator", now)
                else:
                    core.set_health(pool, PoolHealth.DOWN, "enabled; connecting", now)
            else:
                core.set_health(pool, PoolHealth.DISABLED, "disabled by operator", now)
        if not changes:
            return
        core.publish(PoolChanged(pool=name, changes={k: {"from": a, "to": b}
                                                     for k, (a, b) in changes.items()}), now)
        core.upstreams.maintain(now)
        core.reroute(now, f"operator changed {name}: "
                          + ", ".join(f"{k} {a}->{b}" for k, (a, b) in changes.items()),
                     force="weight" in changes)

    def drain(self, name: str, now: float) -> None:
        """Move every rig off the pool without disabling it (it stays enabled, its health unchanged)."""
        core = self.core
        pool = core.pools[name]
        pool.draining = True
        core.publish(PoolDrained(pool=name, rigs=pool.rig_count()), now)
        core.reroute(now, f"operator drained {name}", force=True)

    def undrain(self, name: str, now: float) -> None:
        """Let a drained pool take rigs again; the forced reroute moves rigs back if it is in
        the active group."""
        core = self.core
        core.pools[name].draining = False
        core.publish(PoolUndrained(pool=name), now)
        core.reroute(now, f"operator undrained {name}", force=True)

    def apply_config(self, config: Config, now: float) -> dict[str, list[str]]:
        """Live reload: add, update and remove pools; rigs move, none disconnect."""
        core = self.core
        new_by_name = {p.name: p for p in config.pools}
        added = [n for n in new_by_name if n not in core.pools]
        removed = [n for n in core.pools if n not in new_by_name]
        updated: list[str] = []
        for i, pool_cfg in enumerate(config.pools):
            pool = core.pools.get(pool_cfg.name)
            if pool is None:
                core.pools[pool_cfg.name] = PoolState(pool_cfg, i, core.settings.health_window_s)
                continue
            old_cfg = pool.config
            pool.order = i
            if _pool_identity(old_cfg) != _pool_identity(pool_cfg):
                pool.config = pool_cfg
                for conn in list(pool.connections.values()):
                    core.upstreams.close(conn, "pool address or credentials changed", now)
                core.set_health(pool, PoolHealth.DOWN, "reconnecting with the new settings", now)
                updated.append(pool_cfg.name)
            elif old_cfg != pool_cfg:
                pool.config = pool_cfg
                if not pool_cfg.enabled and pool.health.state is not PoolHealth.DISABLED:
                    core.set_health(pool, PoolHealth.DISABLED, "disabled in config", now)
                elif pool_cfg.enabled and pool.health.state is PoolHealth.DISABLED:
                    core.set_health(pool, PoolHealth.DOWN, "enabled in config; connecting", now)
                updated.append(pool_cfg.name)
        for name in removed:
            core.pools[name].draining = True
        core.config.pools = config.pools
        core.reroute(now, "config reloaded", force=True)
        for name in removed:
            pool = core.pools.pop(name)
            for conn in list(pool.connections.values()):
                core.upstreams.close(conn, "pool removed from config", now)
        core.upstreams.maintain(now)
        core.publish(ConfigReloaded(added=added, removed=removed, updated=updated), now)
        return {"added": added, "removed": removed, "updated": updated}
