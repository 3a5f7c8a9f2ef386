"""The read-only view of the core: what the API, /metrics, the history store, the rental
controller, the farm and the demo may know of it.

Outer layers never hold a core object: they get plain dicts and numbers from here, so the
core can change its internals without the API, the dashboard or a test noticing, and every
consumer reports the same figures for the same moment.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .hashprice import HashpriceMeter
from .rigstats import EXACT_UP_TO, exact
from .stats import LATENCY_BUCKETS

if TYPE_CHECKING:
    from .coordinator import ProxyCore
    from .pool import PoolState
    from .rig import RigSession


class UnknownPool(KeyError):
    """The name is not a configured pool (the API answers 404)."""


class UnknownSortKey(ValueError):
    """A rig listing was asked to sort by a key that does not exist (the API answers 400)."""


def mask_url(url: str) -> str:
    """A pool URL may embed credentials (user:pass@host): never show the password."""
    scheme, sep, rest = url.partition("://")
    creds, at, host = rest.rpartition("@")
    if not at or ":" not in creds:
        return url
    return f"{scheme}{sep}{creds.split(':', 1)[0]}:***@{host}"


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000, 3)


def _rig_pool_name(rig: RigSession) -> str | None:
    return rig.pool_name


def _remote_key(rig: RigSession) -> tuple[str, int]:
    host, _, port = rig.peer.rpartition(":")
    return (host, int(port)) if port.isdigit() else (rig.peer, 0)


# ?sort=<key> ascending, ?sort=-<key> descending; ties keep the connection order
RIG_SORT_KEYS: dict[str, Callable[[Any, float], Any]] = {
    "id": lambda r, now: r.rig_id,
    "worker": lambda r, now: r.worker.lower(),
    "remote": lambda r, now: _remote_key(r),
    "pool": lambda r, now: _rig_pool_name(r) or "",
    "difficulty": lambda r, now: r.difficulty if r.difficulty is not None else -1.0,
    "hashrate": lambda r, now: r.hashrate.rate(now),
    "accepted": lambda r, now: r.accepted,
    # age of the last share: ascending = freshest first, rigs that never sent one last
    "last_share": lambda r, now: now - r.last_share_at if r.last_share_at else math.inf,
}


def _rig_matches(rig: RigSession, needle: str) -> bool:
    if needle == str(rig.rig_id):
        return True
    return (any(needle in w.lower() for w in rig.workers) or needle in rig.peer.lower()
            or needle in rig.user_agent.lower())


def rig_view(rig: RigSession, now: float) -> dict[str, Any]:
    """One rig as the API shows it (plain data; ``extranonce1`` is its proxy prefix)."""
    return {
        "id": rig.rig_id,
        "worker": rig.worker,
        "workers": list(rig.workers),
        "remote": rig.peer,
        "user_agent": rig.user_agent,
        "state": rig.state.value,
        "pool": _rig_pool_name(rig),
        "difficulty": rig.difficulty,
        "extranonce1": rig.prefix.hex(),
        "version_mask": f"{rig.version_mask:08x}" if rig.requested_mask is not None else None,
        "hashrate": rig.hashrate.rate(now),
        # shares behind the figure (the meter averages 300 s): about 1/sqrt(n) relative error
        "hashrate_shares": rig.accepted,
        "stalled": rig.stalled,
        "shares": {"accepted": rig.accepted, "rejected": dict(rig.rejected)},
        "last_share_age_s": round(now - rig.last_share_at, 3) if rig.last_share_at else None,
        "connected_s": round(now - rig.connected_at, 3),
    }


def pool_standing(core: Any, pool: PoolState) -> dict[str, Any]:
    """A pool's identity, settings, health and place in the active group, for its view
    (any core: the SV1 one or a GPU listener's)."""
    active_names = core.active_pools()
    active = pool.name in active_names
    group_weight = sum(core.pools[n].config.weight for n in active_names if n in core.pools)
    delivered_total = sum(p.split_work for p in core.pools.values())
    return {
        "name": pool.name,
        "url": mask_url(pool.config.url),
        "user": pool.config.user,
        "state": pool.health.state.value,
        "reason": pool.health.reason,
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
    }


def share_figures(pool: PoolState, now: float) -> dict[str, Any]:
    """A pool's share ledger, latency, job age and silence bound, for its view."""
    c = pool.counters
    return {
        "forwarded": c.forwarded,
        "accepted": c.accepted,
        "accepted_difficulty": c.accepted_difficulty,
        "rejected": dict(c.rejected),
        "rejected_total": sum(c.rejected.values()),
        "timeouts": c.timeouts,
        "lost": dict(c.lost),
        "lost_total": sum(c.lost.values()),
        "in_flight": pool.shares_in_flight(),
        # answers to ids with nothing pending (duplicates, wrong or unknown ids, after a timeout)
        "late_answers": c.late_answers,
        "reject_ratio": round(pool.rejects.ratio, 4),
        "stale_ratio": round(c.rejected.get("stale", 0) / c.forwarded, 4) if c.forwarded else 0.0,
        **latency_figures(pool, now),
        "last_job_age_s": round(now - pool.last_job_at, 3) if pool.last_job_at else None,
        # silence: a request waiting longer than this makes the pool suspect, and why
        "suspect_after_s": round(pool.suspect_after, 3) if pool.suspect_after else None,
    }


def latency_figures(pool: PoolState, now: float) -> dict[str, Any]:
    """A pool's share latency over the health window and since start (ms), for its view."""
    window = pool.latency.window(now)
    total = pool.latency.total
    return {
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
    }


class CoreView:
    """Snapshots of one core, as plain data.  Cheap to build; holds no state of its own."""

    __slots__ = ("_core",)

    def __init__(self, core: ProxyCore) -> None:
        self._core = core

    # ------------------------------------------------------------------ identity and time

    @property
    def instance(self) -> str:
        """The name this proxy instance reports itself by (the config's ``instance``)."""
        return self._core.settings.instance

    def wall(self, now: float) -> float:
        """Wall-clock seconds for a core (monotonic) time."""
        return self._core.wall(now)

    # ------------------------------------------------------------------ pools

    def active_pools(self) -> list[str]:
        """Names of the pools that get the hashrate now."""
        return self._core.active_pools()

    def pool_names(self) -> list[str]:
        """Every configured pool's name, in config order."""
        return list(self._core.pools)

    def has_pool(self, name: str) -> bool:
        """True for a configured pool name (the API checks before answering 404)."""
        return name in self._core.pools

    def _pool(self, name: str) -> PoolState:
        pool = self._core.pools.get(name)
        if pool is None:
            raise UnknownPool(name)
        return pool

    def pool(self, name: str, now: float) -> dict[str, Any]:
        """One pool's figures; ``UnknownPool`` for a name that is not configured."""
        return self._pool_view(self._pool(name), now)

    def pools(self, now: float) -> list[dict[str, Any]]:
        """Every pool, in routing order (priority, then position in the config)."""
        ordered = sorted(self._core.pools.values(), key=lambda p: (p.priority, p.order))
        return [self._pool_view(p, now) for p in ordered]

    def _pool_view(self, pool: PoolState, now: float) -> dict[str, Any]:
        core = self._core
        if len(core.rigs) <= EXACT_UP_TO:
            hashrate = sum(r.hashrate.rate(now) for r in pool.rigs())
        else:  # a large farm: the tick's last pass over the rigs (see rigstats)
            hashrate = core.rig_totals.per_pool.get(pool.name, 0.0)
        ready = pool.ready_connections()
        first = ready[0] if ready else None
        return {
            **pool_standing(core, pool),
            "rigs": pool.rig_count(),
            "hashrate": hashrate,
            "connections": pool.connection_count(),
            "connections_ready": len(ready),
            "extranonce2_size": first.extranonce2_size if first else None,
            "difficulty": first.difficulty if first else None,
            "version_mask": (f"{first.version_mask:08x}" if first and first.version_mask is not None
                             else None),
            "narrow": pool.narrow,
            **share_figures(pool, now),
            "suspect_bound": pool.suspect_reason,
            # network difficulty, block value and hashprice from the pool's latest job
            "hashprice": pool.hashprice.view(now, hashrate),
        }

    def latency_histogram(self, name: str) -> tuple[tuple[float, ...], list[int], float, int]:
        """(bucket upper bounds, counts per bucket with +Inf last, sum, count) since start."""
        hist = self._pool(name).latency.total
        return LATENCY_BUCKETS, list(hist.counts), float(hist.sum), hist.count

    def in_flight_shares(self) -> int:
        """Shares forwarded to a live pool connection and not answered yet."""
        return sum(p.shares_in_flight() for p in self._core.pools.values())

    def ready_connections(self) -> int:
        """Pool connections able to carry rigs now, over all pools."""
        return sum(len(p.ready_connections()) for p in self._core.pools.values())

    def accepted_difficulty(self) -> float:
        """Sum of the difficulty every pool accepted since start: delivered work."""
        return sum(p.counters.accepted_difficulty for p in self._core.pools.values())

    # ------------------------------------------------------------------ farm

    def status(self, now: float) -> dict[str, Any]:
        """The farm at a glance: uptime, rigs, hashrate, active pools, counters and pool states."""
        core = self._core
        if len(core.rigs) <= EXACT_UP_TO:
            hashrate, working = exact(core.rigs.values(), now)
        else:
            hashrate, working = core.rig_totals.hashrate, core.rig_totals.working
        return {
            "instance": core.settings.instance,
            "uptime_s": round(now - core.started_at, 3),
            "rigs_connected": len(core.rigs),
            "rigs_working": working,
            "rigs_stalled": core.rigwatch.stalled,
            "stalled_hashrate": core.rigwatch.stalled_hashrate,
            "hashrate": hashrate,
            "rig_share_interval_s": core.settings.rig_share_interval_s,
            "layout": core.layout.view(),
            "active_pools": core.active_pools(),
            "counters": dict(core.totals),
            "pools": {p.name: p.health.state.value for p in core.pools.values()},
            "hashprice": self.hashprice(now, hashrate),
        }

    def hashprice(self, now: float, hashrate: float | None = None) -> dict[str, Any]:
        """The farm's hashprice: the active pool's (the first of the active group with a known
        figure), with ``pool`` naming it; ``expected_btc_per_day`` for ``hashrate`` if given."""
        group = self._core.group()
        pool = next((p for p in group if p.hashprice.price is not None), group[0] if group else None)
        if pool is None:
            return {**HashpriceMeter().view(now), "reason": "no active pool", "pool": None}
        return {**pool.hashprice.view(now, hashrate), "pool": pool.name}

    def totals(self) -> dict[str, int]:
        """The core's counters since start (submits, accepted, switches, ...), as a copy."""
        return dict(self._core.totals)

    # ------------------------------------------------------------------ rigs

    def rig_count(self) -> int:
        """Rigs connected now, in any state."""
        return len(self._core.rigs)

    def rig_figures(self, now: float) -> list[tuple[int, tuple[str, ...], str, float]]:
        """(id, worker names, remote address, measured hashrate) of every connected rig: what
        the power planner matches UPSes and curtailments against, without building views."""
        return [(r.rig_id, tuple(r.workers), r.peer, r.hashrate.rate(now)) for r in self._core.rigs.values()]

    def rig(self, rig_id: int, now: float) -> dict[str, Any] | None:
        """One rig's view by id, or None if no such rig is connected."""
        rig = self._core.rigs.get(rig_id)
        return None if rig is None else rig_view(rig, now)

    def rigs(self, now: float, offset: int = 0, limit: int = 1000, *, pool: str | None = None,
             needle: str = "", sort: str | None = None) -> tuple[int, list[dict[str, Any]]]:
        """(rigs matching, one page of them): filter by pool and a search string (worker,
        address, agent or id), sort by ``RIG_SORT_KEYS`` (``-key`` descending)."""
        core = self._core
        key: Callable[[Any, float], Any] | None = None
        descending = False
        if sort:
            descending = sort.startswith("-")
            key = RIG_SORT_KEYS.get(sort.removeprefix("-"))
            if key is None:
                raise UnknownSortKey(f"sort: unknown key {sort[:40]!r} (allowed: "
                                     f"{', '.join(RIG_SORT_KEYS)}, prefix '-' for descending)")
        if pool is not None and pool not in core.pools:
            raise UnknownPool(pool)
        if pool is None and not needle and key is None:
            page = list(core.rigs.values())[offset:offset + limit]
            return len(core.rigs), [rig_view(r, now) for r in page]
        # filter and sort the sessions (cheap), build views only for the page
        matched = [r for r in core.rigs.values()
                   if (pool is None or _rig_pool_name(r) == pool) and (not needle or _rig_matches(r, needle))]
        if key is not None:
            sort_key = key
            matched.sort(key=lambda r: sort_key(r, now), reverse=descending)
        return len(matched), [rig_view(r, now) for r in matched[offset:offset + limit]]
