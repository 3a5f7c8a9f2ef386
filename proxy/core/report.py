"""Read-only views of the engine for the API, /metrics and the demo's status line.

One place turns engine state into plain dicts, so every consumer reports the same numbers.
"""

from __future__ import annotations

from typing import Any

from .engine import ProxyCore
from .rigstats import EXACT_UP_TO, exact
from .upstream import PoolState


def _mask_url(url: str) -> str:
    """A pool URL may embed credentials (user:pass@host): never show the password."""
    scheme, sep, rest = url.partition("://")
    creds, at, host = rest.rpartition("@")
    if not at or ":" not in creds:
        return url
    return f"{scheme}{sep}{creds.split(':', 1)[0]}:***@{host}"


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000, 3)


def pool_view(core: ProxyCore, pool: PoolState, now: float) -> dict[str, Any]:
    c = pool.counters
    window = pool.latency.window(now)
    total = pool.latency.total
    active = pool.name in core.active_pools()
    if len(core.rigs) <= EXACT_UP_TO:
        hashrate = sum(r.hashrate.rate(now) for conn in pool.connections for r in conn.rigs.values())
    else:  # a large farm: the tick's last pass over the rigs (see rigstats)
        hashrate = core.rig_totals.per_pool.get(pool.name, 0.0)
    conns = pool.connections
    ready = [x for x in conns if x.state == "ready"]
    group_weight = sum(core.pools[n].config.weight for n in core.active_pools()) or 0.0
    delivered_total = sum(p.split_work for p in core.pools.values())
    return {
        "name": pool.name,
        "url": _mask_url(pool.config.url),
        "user": pool.config.user,
        "state": pool.health,
        "reason": pool.health_reason,
        "last_error": pool.last_error,
        "priority": pool.config.priority,
        "weight": pool.config.weight,
        "enabled": pool.config.enabled,
        "draining": pool.draining,
        "standby": pool.config.standby,
        "active": active,
        "goal_share": round(pool.config.weight / group_weight, 4) if active and group_weight else 0.0,
        # share of the work (accepted difficulty) delivered since the active group formed
        "delivered_share": round(pool.split_work / delivered_total, 4) if delivered_total else 0.0,
        "rigs": pool.rig_count(),
        "hashrate": hashrate,
        "connections": len(conns),
        "connections_ready": len(ready),
        "extranonce2_size": ready[0].extranonce2_size if ready else None,
        "difficulty": ready[0].difficulty if ready else None,
        "version_mask": (f"{ready[0].version_mask:08x}" if ready and ready[0].version_mask is not None
                         else None),
        "narrow": pool.narrow,
        "forwarded": c.forwarded,
        "accepted": c.accepted,
        "accepted_difficulty": c.accepted_difficulty,
        "rejected": dict(c.rejected),
        "rejected_total": sum(c.rejected.values()),
        "timeouts": c.timeouts,
        "lost": dict(c.lost),
        "lost_total": sum(c.lost.values()),
        "in_flight": sum(1 for x in conns for p in x.pending.values() if p.kind == "share"),
        # answers to ids with nothing pending (duplicates, wrong or unknown ids, after a timeout)
        "late_answers": c.late_answers,
        "reject_ratio": round(pool.rejects.ratio, 4),
        "stale_ratio": round(c.rejected.get("stale", 0) / c.forwarded, 4) if c.forwarded else 0.0,
        "latency_ms": {
            "p50": _ms(window.quantile(0.5)),
            "p90": _ms(window.quantile(0.9)),
            "p99": _ms(window.quantile(0.99)),
            "window_count": window.count,
        },
        "latency_ms_since_start": {
            "p50": _ms(total.quantile(0.5)),
            "p90": _ms(total.quantile(0.9)),
            "p99": _ms(total.quantile(0.99)),
            "max": _ms(total.max) if total.count else None,
            "count": total.count,
        },
        "last_job_age_s": round(now - pool.last_job_at, 3) if pool.last_job_at else None,
    }


def pools_view(core: ProxyCore, now: float) -> list[dict[str, Any]]:
    return [pool_view(core, p, now) for p in sorted(core.pools.values(),
                                                    key=lambda p: (p.priority, p.order))]


def status_view(core: ProxyCore, now: float) -> dict[str, Any]:
    if len(core.rigs) <= EXACT_UP_TO:
        hashrate, working = exact(core.rigs.values(), now)
    else:
        hashrate, working = core.rig_totals.hashrate, core.rig_totals.working
    return {
        "instance": core.settings.instance,
        "uptime_s": round(now - core.started_at, 3),
        "rigs_connected": len(core.rigs),
        "rigs_working": working,
        "hashrate": hashrate,
        "active_pools": core.active_pools(),
        "counters": dict(core.totals),
        "pools": {p.name: p.health for p in core.pools.values()},
    }


def rig_view(rig: Any, now: float) -> dict[str, Any]:
    return {
        "id": rig.rig_id,
        "worker": rig.worker,
        "workers": list(rig.workers),
        "remote": rig.peer,
        "user_agent": rig.user_agent,
        "pool": rig.pool.name if rig.pool is not None and rig.conn is not None else None,
        "difficulty": rig.difficulty,
        "extranonce1": rig.prefix.hex(),
        "version_mask": f"{rig.version_mask:08x}" if rig.requested_mask is not None else None,
        "hashrate": rig.hashrate.rate(now),
        "shares": {"accepted": rig.accepted, "rejected": dict(rig.rejected)},
        "last_share_age_s": round(now - rig.last_share_at, 3) if rig.last_share_at else None,
        "connected_s": round(now - rig.connected_at, 3),
    }


def rigs_view(core: ProxyCore, now: float, offset: int = 0, limit: int = 1000) -> list[dict[str, Any]]:
    rigs = list(core.rigs.values())[offset:offset + limit]
    return [rig_view(r, now) for r in rigs]
