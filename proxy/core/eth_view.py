"""What the outer layers (API, metrics, tests) read of a GPU listener's core: plain data,
copied out, never a core object (as ``CoreView`` for the SV1 core)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .hashprice import HashpriceMeter
from .stats import LATENCY_BUCKETS
from .view import pool_standing, share_figures

if TYPE_CHECKING:
    from .eth_core import EthCore
    from .pool import PoolState


class EthView:
    """A read-only view of one ``EthCore``."""

    __slots__ = ("_core",)

    def __init__(self, core: EthCore) -> None:
        self._core = core

    @property
    def listener(self) -> str:
        """The listener's name ("main" for [proxy] listen)."""
        return self._core.listener

    def active_pools(self) -> list[str]:
        """The pools that get this listener's hashrate now."""
        return self._core.active_pools()

    def totals(self) -> dict[str, int]:
        """Counters since start (submits, accepted, rejected, set_extranonce, client_reconnect...)."""
        return dict(self._core.totals)

    def rig_count(self) -> int:
        """Rigs connected to this listener."""
        return len(self._core.rigs)

    def in_flight_shares(self) -> int:
        """Shares forwarded and waiting on a pool's verdict."""
        return sum(p.shares_in_flight() for p in self._core.pools.values())

    def accepted_difficulty(self) -> float:
        """Sum of the difficulty this listener's pools accepted since start: delivered work."""
        return sum(p.counters.accepted_difficulty for p in self._core.pools.values())

    def pool_names(self) -> list[str]:
        """This listener's pools, in config order."""
        return list(self._core.pools)

    def has_pool(self, name: str) -> bool:
        """True for a pool of this listener."""
        return name in self._core.pools

    def latency_histogram(self, name: str) -> tuple[tuple[float, ...], list[int], float, int]:
        """(bucket upper bounds, counts per bucket with +Inf last, sum, count) since start."""
        hist = self._core.pools[name].latency.total
        return LATENCY_BUCKETS, list(hist.counts), float(hist.sum), hist.count

    def pool(self, name: str, now: float) -> dict[str, Any]:
        """One pool's figures (KeyError for a pool of another listener)."""
        return self._pool_view(self._core.pools[name], now)

    def pools(self, now: float) -> list[dict[str, Any]]:
        """Every pool, in routing order."""
        ordered = sorted(self._core.pools.values(), key=lambda p: (p.priority, p.order))
        return [self._pool_view(p, now) for p in ordered]

    def _pool_view(self, pool: PoolState, now: float) -> dict[str, Any]:
        ready = pool.ready_connections()
        first = ready[0] if ready else None
        return {
            **pool_standing(self._core, pool),
            "listener": self._core.listener,
            "protocol": self._core.PROTOCOL,
            "narrow": "",
            "rigs": pool.rig_count(),
            "hashrate": sum(r.hashrate.rate(now) for r in pool.rigs()),  # H/s (eth_rig meters hashes)
            "connections": pool.connection_count(),
            "connections_ready": len(ready),
            "extranonce": first.extranonce.hex() if first else None,  # type: ignore[attr-defined]
            "difficulty": first.difficulty if first else None,
            **share_figures(pool, now),
            # Ethash jobs carry no block value: no hashprice here (the fields stay, empty)
            "hashprice": {**HashpriceMeter().view(now, 0.0), "reason": "Ethash jobs carry no block value"},
        }

    def summary(self, now: float) -> dict[str, Any]:
        """The listener at a glance: its rigs, active pools, counters and pools."""
        return {"name": self._core.listener, "protocol": self._core.PROTOCOL, "rigs": self.rig_count(),
                "active_pools": self.active_pools(), "in_flight_shares": self.in_flight_shares(),
                "counters": self.totals(), "pools": self.pools(now)}

    def rigs(self) -> list[dict[str, Any]]:
        """Every connected GPU rig."""
        return [{"id": r.rig_id, "worker": r.worker, "peer": r.peer, "agent": r.user_agent,
                 "state": r.state.value, "pool": r.pool_name,
                 "extranonce": r.extranonce.hex() if r.extranonce is not None else None,
                 "extranonce_subscribed": r.extranonce_subscribed, "accepted": r.accepted,
                 "rejected": dict(r.rejected), "in_flight": r.in_flight}
                for r in self._core.rigs.values()]
