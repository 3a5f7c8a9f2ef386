"""Weighted split over time and cold standby for a GPU listener (``EthCore``).

**Time-sliced weights.** Whole rigs rarely divide hashrate by weight (2 rigs cannot make
70/30), so every ``split_slice_s`` the SV1 core's ``Router.steer`` moves the fewest rigs
that bring each pool's delivered work back on track.  A GPU rig can be moved the same way
within EthereumStratum/1.0.0: ``mining.set_extranonce`` with the other pool's extranonce
plus the rig's own prefix, then a clean job (a getwork rig just gets the other pool's
work).  Two limits keep a move cheap:

- only rigs that move in place are steered: a rig that never sent
  ``mining.extranonce.subscribe`` would be moved by ``client.reconnect``, and a reconnect
  every slice is not a split but a flapping rig (such rigs stay where the count split put
  them);
- only between pools mining the same epoch (the same seed hash): a rig moved to another
  epoch rebuilds its DAG, seconds to a minute without hashing, every slice.

**Cold standby.** A pool with ``standby = "cold"`` is dialled only while it is needed: no
usable pool of a better priority, or it still holds rigs; otherwise its idle connections
are closed, as for SV1 pools.  A failover onto a cold pool waits for its dial and
handshake (the rigs keep mining their last job meanwhile).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .eth_core import EthCore
    from .eth_upstream import EthPoolConnection
    from .pool import PoolState


def same_epoch(group: list[PoolState]) -> bool:
    """True when every pool's current jobs share one seed hash (moving rigs costs no DAG)."""
    seeds = {c.current_job.notify.seed_hash  # type: ignore[attr-defined]
             for pool in group for c in pool.connections.values()
             if c.ready and c.current_job is not None}  # type: ignore[attr-defined]
    return len(seeds) <= 1


def steer(core: EthCore, now: float) -> int:
    """One slice of the weighted split; returns how many rigs moved."""
    group = core.group()
    if len(group) < 2 or not same_epoch(group):
        return 0
    rigs = [r for r in core.rigs.values()
            if r.conn is not None and r.pool in group and core.moves_in_place(r)]
    moves = core.router.steer(rigs, group, now, core.settings.split_slice_s)  # type: ignore[arg-type]
    for rig, pool in moves:
        core.place(rig, pool, now)  # type: ignore[arg-type]
    core.totals["split_moves"] += len(moves)
    return len(moves)


def wanted(core: EthCore, pool: PoolState) -> bool:
    """Should ``pool`` keep connections? Hot pools always; cold ones only while needed."""
    if pool.config.standby == "hot":
        return True
    better = [p for p in core.pools.values() if p.usable and p.priority < pool.priority]
    return not better or pool.rig_count() > 0


def idle(conn: EthPoolConnection) -> bool:
    """A connection that carries no rig and waits on no verdict (safe to close)."""
    return conn.alive and not conn.rigs and not conn.shares_in_flight
