"""Which pool serves which rig.

The router only decides; the engine moves rigs.  It picks the active group (the usable
pools of the best priority, honouring the failback hold-down) and splits the rigs of that
group across its pools by weight, moving as few rigs as possible.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from .upstream import ConnState

if TYPE_CHECKING:
    from .pool import PoolState
    from .rig import RigSession


class Router:
    """Routing decisions over pools and rigs it is shown; it never moves anything itself."""

    def __init__(self, failback_hold_s: float) -> None:
        self.failback_hold_s = failback_hold_s

    def settled(self, pool: PoolState, now: float) -> bool:
        """A pool that failed must stay healthy for the hold-down before it takes rigs back."""
        return bool(pool.rig_count()) or pool.health.settled(now, self.failback_hold_s)

    def active_group(self, pools: Iterable[PoolState], now: float) -> list[PoolState]:
        """The usable pools of the best priority, preferring settled ones; empty if none is usable."""
        usable = [p for p in pools if p.usable]
        if not usable:
            return []
        settled = [p for p in usable if self.settled(p, now)] or usable
        best = min(p.priority for p in settled)
        group = [p for p in settled if p.priority == best]
        group.sort(key=lambda p: p.order)
        return group

    def hold_expires_at(self, pools: Iterable[PoolState], now: float) -> float | None:
        """When the next pool in hold-down becomes settled (so the engine re-evaluates once)."""
        times = [t for p in pools
                 if p.usable and p.health.ever_failed and p.health.healthy_since is not None
                 and (t := p.health.healthy_since + p.health.hold_for(self.failback_hold_s)) > now]
        return min(times) if times else None

    @staticmethod
    def quotas(group: list[PoolState], total: int) -> dict[str, int]:
        """Rig counts per pool proportional to weight (largest remainder)."""
        weights = [max(p.config.weight, 0.0) for p in group]
        wsum = sum(weights)
        if wsum <= 0:
            weights = [1.0] * len(group)
            wsum = float(len(group))
        exact = [total * w / wsum for w in weights]
        counts = [int(x) for x in exact]
        rest = total - sum(counts)
        order = sorted(range(len(group)), key=lambda i: exact[i] - counts[i], reverse=True)
        for i in order[:rest]:
            counts[i] += 1
        return {p.name: c for p, c in zip(group, counts)}

    def plan(self, rigs: list[RigSession], group: list[PoolState]) -> dict[int, PoolState]:
        """rig_id -> pool for every rig that must move (rigs already well placed stay)."""
        if not group:
            return {}
        by_name = self.quotas(group, len(rigs))
        # keyed by the pool objects themselves: this loop runs over every rig in a failover
        # (10,000), and each ``pool.name`` is a property call
        quotas = {p: by_name[p.name] for p in group}
        filled = dict.fromkeys(group, 0)
        closed = ConnState.CLOSED
        movers: list[RigSession] = []
        for rig in rigs:
            pool = rig.pool
            conn = rig.conn
            if (conn is not None and pool in filled and conn.state is not closed
                    and filled[pool] < quotas[pool]):
                filled[pool] += 1
            else:
                movers.append(rig)
        moves: dict[int, PoolState] = {}
        targets = list(group)
        idx = 0
        for rig in movers:
            while idx < len(targets) and filled[targets[idx]] >= quotas[targets[idx]]:
                idx += 1
            if idx >= len(targets):
                break
            pool = targets[idx]
            filled[pool] += 1
            moves[rig.rig_id] = pool
        return moves

    def steer(self, rigs: list[RigSession], group: list[PoolState], now: float,
              slice_s: float) -> list[tuple[RigSession, PoolState]]:
        """Plan the next time slice of a weighted split.

        Whole rigs rarely divide hashrate exactly (2 rigs cannot make 70/30), so the split
        is steered over time: each slice, every pool should receive what brings its
        delivered work (since the group formed) to its weighted goal by the slice's end.
        Rigs are moved greedily from the most over-served to the most under-served pool,
        and only while a move reduces the error, so a split that is on track moves nobody
        and one that whole rigs cannot meet alternates a rig between pools (time-slicing).
        """
        if len(group) < 2 or not rigs:
            return []
        weights = {p.name: max(p.config.weight, 0.0) for p in group}
        wsum = sum(weights.values()) or float(len(group))
        goal = {n: (w / wsum if sum(weights.values()) else 1 / len(group)) for n, w in weights.items()}
        measured = [r.hashrate.rate(now) for r in rigs]
        known = [m for m in measured if m > 0]
        fallback = sorted(known)[len(known) // 2] if known else 1.0
        rate = {r.rig_id: (m if m > 0 else fallback) for r, m in zip(rigs, measured)}
        total_rate = sum(rate.values())
        done = {p.name: p.split_work * (2**32) for p in group}  # in hashes, as rates are
        horizon = sum(done.values()) + total_rate * slice_s
        want = {n: max(0.0, goal[n] * horizon - done[n]) / slice_s for n in goal}
        assigned = dict.fromkeys(goal, 0.0)
        members: dict[str, list[RigSession]] = {n: [] for n in goal}
        for r in rigs:
            assert r.pool is not None
            assigned[r.pool.name] += rate[r.rig_id]
            members[r.pool.name].append(r)
        by_name = {p.name: p for p in group}
        moves: list[tuple[RigSession, PoolState]] = []
        for _ in range(min(len(rigs), 1000)):
            over = max(goal, key=lambda n: assigned[n] - want[n])
            under = min(goal, key=lambda n: assigned[n] - want[n])
            e_over = assigned[over] - want[over]
            e_under = assigned[under] - want[under]
            if e_over <= 0 or e_under >= 0 or not members[over]:
                break
            # the rig whose move best evens the two errors
            best = min(members[over], key=lambda r: abs((e_over - rate[r.rig_id])
                                                        - (e_under + rate[r.rig_id])))
            h = rate[best.rig_id]
            before = abs(e_over) + abs(e_under)
            after = abs(e_over - h) + abs(e_under + h)
            if after >= before:
                break
            members[over].remove(best)
            members[under].append(best)
            assigned[over] -= h
            assigned[under] += h
            moves.append((best, by_name[under]))
        return moves

    def pick(self, group: list[PoolState]) -> PoolState | None:
        """The pool a newly arrived rig joins: the one furthest below its weighted share."""
        if not group:
            return None
        total = sum(p.rig_count() for p in group) + 1
        quotas = self.quotas(group, total)
        return max(group, key=lambda p: (quotas[p.name] - p.rig_count(), -p.order))
