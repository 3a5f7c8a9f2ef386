"""Placement: which pool connection carries which rig, indexed so that moving N rigs is O(N).

With one upstream connection per rig (prefix size 0, or a pool too narrow for the fold) a
pool may hold 10,000 connections; finding a free one by scanning them for every rig made
one failover quadratic (1.6 s of stalled event loop at 3,200 rigs).  Each pool keeps an
index instead: its idle exclusive connections (ready first), its shared ones (few: one per
256**L rigs), and how many live connections it holds.  The rigs that are active but on no
connection (their pool died, or no pool is usable) are a set, so "is anyone waiting?" is
O(1) on every connection that comes up.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .rig_base import RECENT_CONNS, RigState

if TYPE_CHECKING:
    from .pool import PoolState
    from .rig import RigSession
    from .upstream import PoolConnection


class ConnectionIndex:
    """One pool's connections by what they can take."""

    __slots__ = ("idle_ready", "idle_waiting", "shared", "live")

    def __init__(self) -> None:
        self.idle_ready: dict[int, PoolConnection] = {}  # exclusive, ready, no rig
        self.idle_waiting: dict[int, PoolConnection] = {}  # exclusive, still dialing, no rig
        self.shared: dict[int, PoolConnection] = {}  # fold connections (prefix >= 1 byte)
        self.live = 0  # alive and not retiring

    def forget(self, conn: PoolConnection) -> None:
        """Take ``conn`` out of every bucket (it is closing or about to be refiled)."""
        self.idle_ready.pop(conn.conn_id, None)
        self.idle_waiting.pop(conn.conn_id, None)
        self.shared.pop(conn.conn_id, None)

    def file(self, conn: PoolConnection) -> None:
        """Put ``conn`` where it belongs now (after any change of its state or rigs)."""
        self.forget(conn)
        if not conn.alive or conn.retiring:
            return
        if not conn.exclusive:
            self.shared[conn.conn_id] = conn
        elif not conn.rigs:
            (self.idle_ready if conn.ready else self.idle_waiting)[conn.conn_id] = conn


class Placement:
    """Attaches and detaches rigs, and finds the connection a rig should go to."""

    __slots__ = ("unplaced",)

    def __init__(self) -> None:
        self.unplaced: set[RigSession] = set()  # active rigs on no connection

    @staticmethod
    def index(pool: PoolState) -> ConnectionIndex:
        """The pool's index (kept on the pool itself: no lookup per connection)."""
        return pool.slots

    # ------------------------------------------------------------------ connections

    def added(self, conn: PoolConnection) -> None:
        """A connection was dialed: the pool owns it and the index files it."""
        conn.pool.connections[conn.conn_id] = conn
        index = conn.pool.slots
        index.live += 1
        index.file(conn)

    def changed(self, conn: PoolConnection) -> None:
        """The connection became ready, exclusive or retiring."""
        conn.pool.slots.file(conn)

    def retiring(self, conn: PoolConnection) -> None:
        """The connection is being replaced: it takes no new rigs and no longer counts as live."""
        conn.retiring = True
        index = conn.pool.slots
        index.live -= 1
        index.forget(conn)

    def removed(self, conn: PoolConnection) -> list[RigSession]:
        """The connection closed; returns the rigs it carried (now on no connection)."""
        pool = conn.pool
        pool.connections.pop(conn.conn_id, None)
        index = pool.slots
        if not conn.retiring:
            index.live -= 1
        index.forget(conn)
        orphans = list(conn.rigs.values())
        conn.rigs.clear()
        pool.rig_total -= len(orphans)
        for rig in orphans:
            rig.conn = None
            self._remember(rig, conn)
            if rig.state is RigState.ACTIVE:
                self.unplaced.add(rig)
        return orphans

    def spare(self, conn: PoolConnection) -> bool:
        """True when the pool keeps another live connection, so this idle one can go."""
        live = conn.pool.slots.live
        return live > 1 or (live == 1 and conn.retiring)

    def connection_for(self, pool: PoolState, rig: RigSession) -> PoolConnection | None:
        """A connection of ``pool`` that can take ``rig`` (ready ones first); None: dial."""
        index = pool.slots
        waiting: PoolConnection | None = None
        for conn in index.shared.values():
            if rig.prefix in conn.rigs:
                continue
            if conn.ready:
                return conn
            if waiting is None:
                waiting = conn
        if waiting is not None:
            return waiting
        for idle in (index.idle_ready, index.idle_waiting):
            for conn in idle.values():
                return conn
        return None

    # ------------------------------------------------------------------ rigs

    def attach(self, rig: RigSession, conn: PoolConnection) -> None:
        """Put the rig on ``conn`` (call ``detach`` first if it is on another one)."""
        conn.rigs[rig.prefix] = rig
        rig.conn = conn
        rig.pool = conn.pool
        conn.pool.rig_total += 1
        self.unplaced.discard(rig)
        if conn.exclusive:
            conn.pool.slots.file(conn)

    def detach(self, rig: RigSession) -> PoolConnection | None:
        """Take the rig off its connection (it may still submit old jobs there)."""
        conn = rig.conn
        if conn is None:
            return None
        if conn.rigs.get(rig.prefix) is rig:
            del conn.rigs[rig.prefix]
            conn.pool.rig_total -= 1
        rig.conn = None
        if rig.state is RigState.ACTIVE:
            self.unplaced.add(rig)
        else:
            self.unplaced.discard(rig)
        if conn.alive:
            self._remember(rig, conn)
            if conn.exclusive:
                conn.pool.slots.file(conn)
        return conn

    def activated(self, rig: RigSession) -> None:
        """The rig finished its handshake: it waits for a pool until placed."""
        if rig.conn is None and rig.state is RigState.ACTIVE:
            self.unplaced.add(rig)

    def gone(self, rig: RigSession) -> PoolConnection | None:
        """The rig closed or is leaving: forget it entirely."""
        conn = self.detach(rig)
        self.unplaced.discard(rig)
        return conn

    @staticmethod
    def _remember(rig: RigSession, conn: PoolConnection) -> None:
        recent = rig.recent_conns
        if conn in recent:
            recent.remove(conn)
        recent.insert(0, conn)
        del recent[RECENT_CONNS:]
